#include "textflag.h"

// func dotBF16AVX2(w *uint16, x *float32, n int) float32
// n is a positive multiple of 16.
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
loop:
	VPMOVZXWD (SI), Y2
	VPSLLD $16, Y2, Y2
	VFMADD231PS (DI), Y2, Y0
	VPMOVZXWD 16(SI), Y3
	VPSLLD $16, Y3, Y3
	VFMADD231PS 32(DI), Y3, Y1
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JNZ loop
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// fp4x2 holds twice the E2M1 values as int8 (0, 1, 2, 3, 4, 6, 8, 12 and
// negatives), exact in int8, for VPSHUFB.
DATA fp4x2<>+0(SB)/8, $0x0c08060403020100
DATA fp4x2<>+8(SB)/8, $0xf4f8fafcfdfeff00
DATA fp4x2<>+16(SB)/8, $0x0c08060403020100
DATA fp4x2<>+24(SB)/8, $0xf4f8fafcfdfeff00
GLOBL fp4x2<>(SB), RODATA|NOPTR, $32

DATA nib<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nib<>(SB), RODATA|NOPTR, $32

// func dotMXFP4AVX2(blocks *byte, scales *byte, x *float32, nb int) float32
// blocks: nb blocks of 16 bytes (low nibble = even element); scales: nb
// E8M0 bytes, each in 2..254 (the caller checks), turned into the float
// 2^(s-128) — the block scale halved, since the table holds 2× the values —
// by placing s-1 in the exponent field; x: nb*32 floats.
TEXT ·dotMXFP4AVX2(SB), NOSPLIT, $0-36
	MOVQ blocks+0(FP), SI
	MOVQ scales+8(FP), BX
	MOVQ x+16(FP), DI
	MOVQ nb+24(FP), CX
	VMOVDQU fp4x2<>(SB), Y8
	VMOVDQU nib<>(SB), Y9
	VXORPS Y0, Y0, Y0       // total
blk:
	VMOVDQU (SI), X2        // 16 bytes
	VPSRLW $4, X2, X3
	VPAND X9, X2, X2        // low nibbles (even elements)
	VPAND X9, X3, X3        // high nibbles (odd elements)
	VPSHUFB X2, X8, X2      // int8 values ×2
	VPSHUFB X3, X8, X3
	VPUNPCKLBW X3, X2, X4   // elements 0..15 interleaved even/odd
	VPUNPCKHBW X3, X2, X5   // elements 16..31
	VPMOVSXBD X4, Y10       // elements 0..7
	VPSRLDQ $8, X4, X4
	VPMOVSXBD X4, Y11       // 8..15
	VPMOVSXBD X5, Y12       // 16..23
	VPSRLDQ $8, X5, X5
	VPMOVSXBD X5, Y13       // 24..31
	VCVTDQ2PS Y10, Y10
	VCVTDQ2PS Y11, Y11
	VCVTDQ2PS Y12, Y12
	VCVTDQ2PS Y13, Y13
	VMULPS (DI), Y10, Y10
	VFMADD231PS 32(DI), Y11, Y10
	VMULPS 64(DI), Y12, Y12
	VFMADD231PS 96(DI), Y13, Y12
	VADDPS Y12, Y10, Y10    // block partial sums
	MOVBLZX (BX), AX
	SUBL $1, AX
	SHLL $23, AX
	VMOVD AX, X14
	VBROADCASTSS X14, Y14
	VFMADD231PS Y14, Y10, Y0
	ADDQ $16, SI
	ADDQ $1, BX
	ADDQ $128, DI
	DECQ CX
	JNZ blk
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func dotBF16x4AVX2(w *uint16, x0, x1, x2, x3 *float32, n int, out *[4]float32)
// Four dot products of one bf16 row, each accumulated exactly as
// dotBF16AVX2 does (two accumulators over alternate 8-element blocks, the
// same reduction), so results do not depend on how tokens are grouped.
TEXT ·dotBF16x4AVX2(SB), NOSPLIT, $0-56
	MOVQ w+0(FP), SI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ x2+24(FP), R10
	MOVQ x3+32(FP), R11
	MOVQ n+40(FP), CX
	MOVQ out+48(FP), DX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ AX, AX
loop4:
	VPMOVZXWD (SI), Y8
	VPSLLD $16, Y8, Y8
	VPMOVZXWD 16(SI), Y9
	VPSLLD $16, Y9, Y9
	VFMADD231PS (R8)(AX*1), Y8, Y0
	VFMADD231PS 32(R8)(AX*1), Y9, Y1
	VFMADD231PS (R9)(AX*1), Y8, Y2
	VFMADD231PS 32(R9)(AX*1), Y9, Y3
	VFMADD231PS (R10)(AX*1), Y8, Y4
	VFMADD231PS 32(R10)(AX*1), Y9, Y5
	VFMADD231PS (R11)(AX*1), Y8, Y6
	VFMADD231PS 32(R11)(AX*1), Y9, Y7
	ADDQ $32, SI
	ADDQ $64, AX
	SUBQ $16, CX
	JNZ loop4
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	MOVSS X0, 0(DX)
	VADDPS Y3, Y2, Y2
	VEXTRACTF128 $1, Y2, X1
	VADDPS X1, X2, X2
	VHADDPS X2, X2, X2
	VHADDPS X2, X2, X2
	MOVSS X2, 4(DX)
	VADDPS Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X1
	VADDPS X1, X4, X4
	VHADDPS X4, X4, X4
	VHADDPS X4, X4, X4
	MOVSS X4, 8(DX)
	VADDPS Y7, Y6, Y6
	VEXTRACTF128 $1, Y6, X1
	VADDPS X1, X6, X6
	VHADDPS X6, X6, X6
	VHADDPS X6, X6, X6
	MOVSS X6, 12(DX)
	VZEROUPPER
	RET
