#include "textflag.h"

// func maskAVX2(dst, src *float32, allow *uint32, words int)
// For each word of allow: the word in all eight lanes, ANDed with lane j's
// bit of each group of eight tokens and compared with it, gives all ones in
// the lanes of allowed tokens; a blend then takes src there and −Inf
// elsewhere. words is positive.
DATA maskBits<>+0(SB)/8, $0x0000000200000001
DATA maskBits<>+8(SB)/8, $0x0000000800000004
DATA maskBits<>+16(SB)/8, $0x0000002000000010
DATA maskBits<>+24(SB)/8, $0x0000008000000040
DATA maskBits<>+32(SB)/8, $0x0000020000000100
DATA maskBits<>+40(SB)/8, $0x0000080000000400
DATA maskBits<>+48(SB)/8, $0x0000200000001000
DATA maskBits<>+56(SB)/8, $0x0000800000004000
DATA maskBits<>+64(SB)/8, $0x0002000000010000
DATA maskBits<>+72(SB)/8, $0x0008000000040000
DATA maskBits<>+80(SB)/8, $0x0020000000100000
DATA maskBits<>+88(SB)/8, $0x0080000000400000
DATA maskBits<>+96(SB)/8, $0x0200000001000000
DATA maskBits<>+104(SB)/8, $0x0800000004000000
DATA maskBits<>+112(SB)/8, $0x2000000010000000
DATA maskBits<>+120(SB)/8, $0x8000000040000000
GLOBL maskBits<>(SB), RODATA|NOPTR, $128

TEXT ·maskAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ allow+16(FP), DX
	MOVQ words+24(FP), CX
	MOVL $0xff800000, AX    // −Inf
	VMOVD AX, X15
	VBROADCASTSS X15, Y15
	VMOVDQU maskBits<>+0(SB), Y11
	VMOVDQU maskBits<>+32(SB), Y12
	VMOVDQU maskBits<>+64(SB), Y13
	VMOVDQU maskBits<>+96(SB), Y14
word:
	VPBROADCASTD (DX), Y0
	VPAND Y11, Y0, Y1
	VPAND Y12, Y0, Y2
	VPAND Y13, Y0, Y3
	VPAND Y14, Y0, Y4
	VPCMPEQD Y11, Y1, Y1
	VPCMPEQD Y12, Y2, Y2
	VPCMPEQD Y13, Y3, Y3
	VPCMPEQD Y14, Y4, Y4
	VBLENDVPS Y1, (SI), Y15, Y5
	VBLENDVPS Y2, 32(SI), Y15, Y6
	VBLENDVPS Y3, 64(SI), Y15, Y7
	VBLENDVPS Y4, 96(SI), Y15, Y8
	VMOVUPS Y5, (DI)
	VMOVUPS Y6, 32(DI)
	VMOVUPS Y7, 64(DI)
	VMOVUPS Y8, 96(DI)
	ADDQ $4, DX
	ADDQ $128, SI
	ADDQ $128, DI
	DECQ CX
	JNZ word
	VZEROUPPER
	RET
