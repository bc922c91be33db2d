#include "textflag.h"

// The vector form of massPass, in two passes over a block of tokens. The
// first computes four exponentials at a time, every step the same IEEE-754
// double operation, rounded on its own (no FMA), as expNeg's scalar code,
// so each e is bit-identical to expNeg(a); it drops the tokens with
// a < aLow (or NaN) or e < minP and packs the others' e into buf, in
// token order. The second adds them to their histogram buckets one at a
// time, in that order, as the scalar code does (gatherBucket and
// walkBucket rely on the order). The constants come from Go in a
// massConsts, each repeated in four lanes.

// k offsets: see massConsts.
#define K_XM 0
#define K_INVT 32
#define K_ALOW 64
#define K_MINP 96
#define K_INVN 128
#define K_SHIFT 160
#define K_HIN 192
#define K_LON 224
#define K_HALF 256
#define K_C6 288
#define K_C24 320
#define K_MASK 352
#define massTop 0x3FF0     // as in select.go
#define massBuckets 2048

// MASSEXP: Y0 = a and Y1 = (a ≥ aLow) in; out Y11 = e and Y1 = the kept
// lanes (a ≥ aLow and e ≥ minP). Y15 = shift, Y14 = 255 (as quadwords);
// clobbers Y2-Y12.
#define MASSEXP \
	VMULPD K_INVN(R8), Y0, Y2; \
	VADDPD Y15, Y2, Y2; \
	VSUBPD Y15, Y2, Y3; \
	VMULPD K_HIN(R8), Y3, Y4; \
	VSUBPD Y4, Y0, Y4; \
	VMULPD K_LON(R8), Y3, Y5; \
	VSUBPD Y5, Y4, Y4; \
	VPAND Y14, Y2, Y6; \
	VPSRLQ $8, Y2, Y7; \
	VPSLLQ $52, Y7, Y7; \
	VPCMPEQQ Y8, Y8, Y8; \
	VPXOR Y9, Y9, Y9; \
	VPGATHERQQ Y8, (BX)(Y6*8), Y9; \
	VPADDQ Y7, Y9, Y9; \
	VMULPD Y4, Y4, Y10; \
	VMULPD K_C6(R8), Y4, Y12; \
	VADDPD K_HALF(R8), Y12, Y12; \
	VMULPD K_C24(R8), Y10, Y5; \
	VADDPD Y5, Y12, Y12; \
	VMULPD Y12, Y10, Y12; \
	VADDPD Y12, Y4, Y12; \
	VMULPD Y12, Y9, Y12; \
	VADDPD Y12, Y9, Y11; \
	VCMPPD $0x1D, K_MINP(R8), Y11, Y12; \
	VANDPD Y12, Y1, Y1

// packperm[m] is the VPERMD index that moves the quadword lanes set in
// the 4-bit mask m to the front, in order.
DATA packperm<>+0(SB)/8, $0x0000000000000000
DATA packperm<>+8(SB)/8, $0x0000000000000000
DATA packperm<>+16(SB)/8, $0x0000000000000000
DATA packperm<>+24(SB)/8, $0x0000000000000000
DATA packperm<>+32(SB)/8, $0x0000000100000000
DATA packperm<>+40(SB)/8, $0x0000000000000000
DATA packperm<>+48(SB)/8, $0x0000000000000000
DATA packperm<>+56(SB)/8, $0x0000000000000000
DATA packperm<>+64(SB)/8, $0x0000000300000002
DATA packperm<>+72(SB)/8, $0x0000000000000000
DATA packperm<>+80(SB)/8, $0x0000000000000000
DATA packperm<>+88(SB)/8, $0x0000000000000000
DATA packperm<>+96(SB)/8, $0x0000000100000000
DATA packperm<>+104(SB)/8, $0x0000000300000002
DATA packperm<>+112(SB)/8, $0x0000000000000000
DATA packperm<>+120(SB)/8, $0x0000000000000000
DATA packperm<>+128(SB)/8, $0x0000000500000004
DATA packperm<>+136(SB)/8, $0x0000000000000000
DATA packperm<>+144(SB)/8, $0x0000000000000000
DATA packperm<>+152(SB)/8, $0x0000000000000000
DATA packperm<>+160(SB)/8, $0x0000000100000000
DATA packperm<>+168(SB)/8, $0x0000000500000004
DATA packperm<>+176(SB)/8, $0x0000000000000000
DATA packperm<>+184(SB)/8, $0x0000000000000000
DATA packperm<>+192(SB)/8, $0x0000000300000002
DATA packperm<>+200(SB)/8, $0x0000000500000004
DATA packperm<>+208(SB)/8, $0x0000000000000000
DATA packperm<>+216(SB)/8, $0x0000000000000000
DATA packperm<>+224(SB)/8, $0x0000000100000000
DATA packperm<>+232(SB)/8, $0x0000000300000002
DATA packperm<>+240(SB)/8, $0x0000000500000004
DATA packperm<>+248(SB)/8, $0x0000000000000000
DATA packperm<>+256(SB)/8, $0x0000000700000006
DATA packperm<>+264(SB)/8, $0x0000000000000000
DATA packperm<>+272(SB)/8, $0x0000000000000000
DATA packperm<>+280(SB)/8, $0x0000000000000000
DATA packperm<>+288(SB)/8, $0x0000000100000000
DATA packperm<>+296(SB)/8, $0x0000000700000006
DATA packperm<>+304(SB)/8, $0x0000000000000000
DATA packperm<>+312(SB)/8, $0x0000000000000000
DATA packperm<>+320(SB)/8, $0x0000000300000002
DATA packperm<>+328(SB)/8, $0x0000000700000006
DATA packperm<>+336(SB)/8, $0x0000000000000000
DATA packperm<>+344(SB)/8, $0x0000000000000000
DATA packperm<>+352(SB)/8, $0x0000000100000000
DATA packperm<>+360(SB)/8, $0x0000000300000002
DATA packperm<>+368(SB)/8, $0x0000000700000006
DATA packperm<>+376(SB)/8, $0x0000000000000000
DATA packperm<>+384(SB)/8, $0x0000000500000004
DATA packperm<>+392(SB)/8, $0x0000000700000006
DATA packperm<>+400(SB)/8, $0x0000000000000000
DATA packperm<>+408(SB)/8, $0x0000000000000000
DATA packperm<>+416(SB)/8, $0x0000000100000000
DATA packperm<>+424(SB)/8, $0x0000000500000004
DATA packperm<>+432(SB)/8, $0x0000000700000006
DATA packperm<>+440(SB)/8, $0x0000000000000000
DATA packperm<>+448(SB)/8, $0x0000000300000002
DATA packperm<>+456(SB)/8, $0x0000000500000004
DATA packperm<>+464(SB)/8, $0x0000000700000006
DATA packperm<>+472(SB)/8, $0x0000000000000000
DATA packperm<>+480(SB)/8, $0x0000000100000000
DATA packperm<>+488(SB)/8, $0x0000000300000002
DATA packperm<>+496(SB)/8, $0x0000000500000004
DATA packperm<>+504(SB)/8, $0x0000000700000006
GLOBL packperm<>(SB), RODATA|NOPTR, $512

// PACK: stores the e of the kept lanes (mask Y1; Y11 = e) at DX, packed and
// in order, and advances DX past them; four zeros or more may follow.
// Clobbers AX, R9, Y2.
#define PACK \
	VMOVMSKPD Y1, AX; \
	CMPL AX, $15; \
	JNE 4(PC); \
	VMOVUPD Y11, (DX); \
	ADDQ $32, DX; \
	JMP 7(PC); \
	POPCNTL AX, R9; \
	SHLQ $5, AX; \
	VMOVDQU (R12)(AX*1), Y2; \
	VPERMD Y11, Y2, Y2; \
	VMOVDQU Y2, (DX); \
	LEAQ (DX)(R9*8), DX

// HIST: adds the values from buf (R13) to DX (e > 0, in token order) to
// hist (DI), each at massBucket(e) = min(massTop − bits(e)>>48,
// massBuckets−1). Clobbers AX, R9-R11, R13, X0.
#define HIST \
	MOVQ $massTop, R10; \
	MOVQ $(massBuckets-1), R11; \
	CMPQ R13, DX; \
	JEQ done; \
hist1: \
	MOVQ (R13), AX; \
	VMOVQ AX, X0; \
	SHRQ $48, AX; \
	MOVQ R10, R9; \
	SUBQ AX, R9; \
	CMPQ R9, R11; \
	CMOVQHI R11, R9; \
	VADDSD (DI)(R9*8), X0, X0; \
	VMOVSD X0, (DI)(R9*8); \
	ADDQ $8, R13; \
	CMPQ R13, DX; \
	JNE hist1; \
done:

// SKIPNONE jumps to label when none of the four tokens passes a ≥ aLow
// (Y1): one well-predicted branch saves the exponentials of a run of
// dropped tokens (min-p, a top-k cut).
#define SKIPNONE(label) \
	VMOVMSKPD Y1, AX; \
	TESTL AX, AX; \
	JZ label

// func massHistF32AVX2(x *float32, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64)
// a = (float64(x[i]) − xm)·invT. n is a positive multiple of 4; buf holds
// n float64s: the kept e, packed, between the two passes.
TEXT ·massHistF32AVX2(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ k+16(FP), R8
	MOVQ tbl+24(FP), BX
	MOVQ buf+40(FP), DX
	LEAQ packperm<>(SB), R12
	VMOVUPD K_SHIFT(R8), Y15
	VMOVDQU K_MASK(R8), Y14
	VMOVUPD K_XM(R8), Y13
loopf:
	VCVTPS2PD (SI), Y0
	VSUBPD Y13, Y0, Y0
	VMULPD K_INVT(R8), Y0, Y0
	VCMPPD $0x1D, K_ALOW(R8), Y0, Y1
	SKIPNONE(nextf)
	MASSEXP
	PACK
nextf:
	ADDQ $16, SI
	SUBQ $4, CX
	JNZ loopf
	MOVQ buf+40(FP), R13
	MOVQ hist+32(FP), DI
	HIST
	VZEROUPPER
	RET

// func massHistF64AVX2(a *float64, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64)
// The exponents are given (buf may be a: the packed e never overtake the
// exponents still to read). n is a positive multiple of 4.
TEXT ·massHistF64AVX2(SB), NOSPLIT, $0-48
	MOVQ a+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ k+16(FP), R8
	MOVQ tbl+24(FP), BX
	MOVQ buf+40(FP), DX
	LEAQ packperm<>(SB), R12
	VMOVUPD K_SHIFT(R8), Y15
	VMOVDQU K_MASK(R8), Y14
loopd:
	VMOVUPD (SI), Y0
	VCMPPD $0x1D, K_ALOW(R8), Y0, Y1
	SKIPNONE(nextd)
	MASSEXP
	PACK
nextd:
	ADDQ $32, SI
	SUBQ $4, CX
	JNZ loopd
	MOVQ buf+40(FP), R13
	MOVQ hist+32(FP), DI
	HIST
	VZEROUPPER
	RET

// func scanMaxAVX2(x *float32, n int, vals *[16]float32, idx *[16]int32)
// Sixteen lanes (two registers), lane j over the x[i] with i ≡ j mod 16,
// each keeping its first strictly largest value (NaN never is) and its
// index, or −Inf and −1. n is a positive multiple of 16.
DATA iota16<>+0(SB)/8, $0x0000000100000000
DATA iota16<>+8(SB)/8, $0x0000000300000002
DATA iota16<>+16(SB)/8, $0x0000000500000004
DATA iota16<>+24(SB)/8, $0x0000000700000006
DATA iota16<>+32(SB)/8, $0x0000000900000008
DATA iota16<>+40(SB)/8, $0x0000000b0000000a
DATA iota16<>+48(SB)/8, $0x0000000d0000000c
DATA iota16<>+56(SB)/8, $0x0000000f0000000e
GLOBL iota16<>(SB), RODATA|NOPTR, $64

TEXT ·scanMaxAVX2(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVL $0xff800000, AX    // −Inf
	VMOVD AX, X0
	VBROADCASTSS X0, Y0
	VMOVAPS Y0, Y1
	VPCMPEQD Y2, Y2, Y2     // −1
	VMOVDQA Y2, Y3
	VMOVDQU iota16<>+0(SB), Y4
	VMOVDQU iota16<>+32(SB), Y5
	MOVL $16, AX
	VMOVD AX, X6
	VPBROADCASTD X6, Y6
scan:
	VMOVUPS (SI), Y7
	VMOVUPS 32(SI), Y8
	VCMPPS $0x1E, Y0, Y7, Y9  // x > max, ordered
	VCMPPS $0x1E, Y1, Y8, Y10
	VBLENDVPS Y9, Y7, Y0, Y0
	VBLENDVPS Y10, Y8, Y1, Y1
	VBLENDVPS Y9, Y4, Y2, Y2
	VBLENDVPS Y10, Y5, Y3, Y3
	VPADDD Y6, Y4, Y4
	VPADDD Y6, Y5, Y5
	ADDQ $64, SI
	SUBQ $16, CX
	JNZ scan
	MOVQ vals+16(FP), DI
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	MOVQ idx+24(FP), DI
	VMOVDQU Y2, (DI)
	VMOVDQU Y3, 32(DI)
	VZEROUPPER
	RET
