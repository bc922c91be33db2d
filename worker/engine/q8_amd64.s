#include "textflag.h"

// The int8 MXFP4 kernels (q8.go): an expert row's blocks decoded by table
// to unsigned bytes and multiplied with int8 activations by VPDPBUSD
// (AVX-512 VNNI), 64 products per instruction and no conversion to float
// before a block's integer sum. See q8.go for the arithmetic.

// q8u holds 2·E2M1 + 12 for each nibble code (0..24), so the weights are
// unsigned bytes as VPDPBUSD wants; q8.go subtracts the 12·Σq it adds.
DATA q8u<>+0(SB)/8, $0x181412100f0e0d0c
DATA q8u<>+8(SB)/8, $0x00040608090a0b0c
GLOBL q8u<>(SB), RODATA|NOPTR, $16

// q8perm interleaves the dwords of two blocks' 32 bytes (0, 4, 1, 5, 2, 6,
// 3, 7), so that VPDPBUSD's int32 lanes alternate between the two blocks
// and one broadcast 64-bit pair of scales serves all sixteen.
DATA q8perm<>+0(SB)/8, $0x0000000400000000
DATA q8perm<>+8(SB)/8, $0x0000000500000001
DATA q8perm<>+16(SB)/8, $0x0000000600000002
DATA q8perm<>+24(SB)/8, $0x0000000700000003
GLOBL q8perm<>(SB), RODATA|NOPTR, $32

// Q8_CONSTS loads the constants: Z31 the table in every 128-bit lane, Z30
// the nibble mask, Y29 the dword permutation, Z28 1<<23 (one in the
// exponent field), X3 12.0, K1 the mask of the nb mod 16 blocks a row's
// last scale group holds.
#define Q8_CONSTS \
	VBROADCASTI32X4 q8u<>(SB), Z31 \
	MOVL $0x0f0f0f0f, AX \
	VPBROADCASTD AX, Z30 \
	VMOVDQU32 q8perm<>(SB), Y29 \
	MOVL $0x00800000, AX \
	VPBROADCASTD AX, Z28 \
	MOVL $0x41400000, AX \
	VMOVD AX, X3 \
	MOVQ nb+16(FP), CX \
	ANDQ $15, CX \
	MOVL $1, AX \
	SHLL CX, AX \
	DECL AX \
	KMOVW AX, K1

// Q8_DECODE decodes the two blocks at (AX) into Z0: 64 unsigned weights
// in the order q8Layout gives.
#define Q8_DECODE \
	VPERMD (AX), Y29, Y0 \
	VPSRLW $4, Y0, Y1 \
	VINSERTI64X4 $1, Y1, Z0, Z0 \
	VPANDD Z30, Z0, Z0 \
	VPSHUFB Z0, Z31, Z0

// Q8_TOKEN(xq, ds, t, s, acc) adds one token's two blocks: the integer
// sums of the 64 products (int32 lanes alternating between the blocks),
// converted, times the blocks' scale products ds (a float pair) into acc.
#define Q8_TOKEN(xq, ds, t, s, acc) \
	VPXORD t, t, t \
	VPDPBUSD xq, Z0, t \
	VCVTDQ2PS t, t \
	VBROADCASTSD ds, s \
	VFMADD231PS s, t, acc

// Q8_SUM(z, y, x) reduces the 16 lanes of z to x's low float (Y2 scratch).
#define Q8_SUM(z, y, x) \
	VEXTRACTF64X4 $1, z, Y2 \
	VADDPS Y2, y, y \
	VEXTRACTF128 $1, y, X2 \
	VADDPS X2, x, x \
	VHADDPS x, x, x \
	VHADDPS x, x, x

// Each kernel starts a row with a prologue loop per token (Go assembler
// labels cannot live in macros): the row's block scales 2^(s-128) (s-1
// placed in the exponent field, as dotMXFP4AVX2 does) times the token's
// block scales d into the scratch ds, and 12·Σ_b 2^(s_b-128)·c_b, the
// correction for the table's +12, onto the stack.

// func q8MXFP4Rows4(blocks, scales *byte, nb, rows int, xq *int8, xd, xc, ds, bias, out *float32, ostride int)
// out[t·ostride + r] = the int8 dot product of row r with token t, + bias[r]
// (+0 when bias is nil), for r < rows (> 0) and t < 4: rows of nb (even,
// > 0) blocks follow one another; token t's quantized values are at
// xq[t·nb·32:], its block scales at xd[t·nb:], its corrections at
// xc[t·nb:]; ds is scratch for 4·nb floats. Each (row, token) takes
// exactly q8MXFP4Rows1's operations, so results do not depend on batching.
TEXT ·q8MXFP4Rows4(SB), NOSPLIT, $16-88
	MOVQ blocks+0(FP), SI
	MOVQ scales+8(FP), BX
	MOVQ out+72(FP), DI
	MOVQ bias+64(FP), R8
	MOVQ nb+16(FP), R13
	SHLQ $5, R13            // a token's xq bytes
	MOVQ nb+16(FP), R14
	SHLQ $2, R14            // a token's xd, xc and ds bytes
	MOVQ ostride+80(FP), R15
	SHLQ $2, R15
	MOVQ rows+24(FP), R10
	Q8_CONSTS

row4:
	// Prologue: four tokens, whose xd, xc and ds follow one another.
	MOVQ xd+40(FP), R11
	MOVQ xc+48(FP), R12
	MOVQ ds+56(FP), R9
	XORQ DX, DX
pro4:
	MOVQ BX, AX
	MOVQ nb+16(FP), CX
	VPXORD Z1, Z1, Z1
pro4b:
	CMPQ CX, $16
	JLT pro4t
	VPMOVZXBD (AX), Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	VFMADD231PS (R12), Z21, Z1
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R12
	ADDQ $64, R9
	SUBQ $16, CX
	JMP pro4b
pro4t:
	TESTQ CX, CX
	JZ pro4s
	VPMOVZXBD.Z (AX), K1, Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
	VFMADD231PS (R12), Z21, K1, Z1
	LEAQ (R11)(CX*4), R11
	LEAQ (R12)(CX*4), R12
	LEAQ (R9)(CX*4), R9
pro4s:
	Q8_SUM(Z1, Y1, X1)
	VMULSS X3, X1, X1
	MOVSS X1, 0(SP)(DX*4)
	INCQ DX
	CMPQ DX, $4
	JLT pro4

	// The blocks, two at a time, for the four tokens.
	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+56(FP), R9
	LEAQ (DX)(R13*2), R11
	ADDQ R13, R11           // token 3's xq
	LEAQ (R9)(R14*2), R12
	ADDQ R14, R12           // token 3's ds
	MOVQ nb+16(FP), CX
	SHRQ $1, CX
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
pair4:
	Q8_DECODE
	Q8_TOKEN((DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
	Q8_TOKEN((DX)(R13*2), (R9)(R14*2), Z10, Z14, Z6)
	Q8_TOKEN((R11), (R12), Z11, Z15, Z7)
	ADDQ $32, AX
	ADDQ $64, DX
	ADDQ $64, R11
	ADDQ $8, R9
	ADDQ $8, R12
	DECQ CX
	JNZ pair4

	Q8_SUM(Z4, Y4, X4)
	Q8_SUM(Z5, Y5, X5)
	Q8_SUM(Z6, Y6, X6)
	Q8_SUM(Z7, Y7, X7)
	VSUBSS 0(SP), X4, X4
	VSUBSS 4(SP), X5, X5
	VSUBSS 8(SP), X6, X6
	VSUBSS 12(SP), X7, X7
	TESTQ R8, R8
	JZ store4
	VADDSS (R8), X4, X4
	VADDSS (R8), X5, X5
	VADDSS (R8), X6, X6
	VADDSS (R8), X7, X7
	ADDQ $4, R8
store4:
	MOVSS X4, (DI)
	MOVSS X5, (DI)(R15*1)
	MOVSS X6, (DI)(R15*2)
	LEAQ (DI)(R15*2), AX
	MOVSS X7, (AX)(R15*1)

	MOVQ R13, AX
	SHRQ $1, AX
	ADDQ AX, SI             // the next row's blocks
	ADDQ nb+16(FP), BX
	ADDQ $4, DI
	DECQ R10
	JNZ row4
	VZEROUPPER
	RET

// func q8MXFP4Rows2(blocks, scales *byte, nb, rows int, xq *int8, xd, xc, ds, bias, out *float32, ostride int)
// q8MXFP4Rows4 for two tokens (the experts a decode step gives two or
// three tokens: one decode of each block pair instead of two or three).
TEXT ·q8MXFP4Rows2(SB), NOSPLIT, $16-88
	MOVQ blocks+0(FP), SI
	MOVQ scales+8(FP), BX
	MOVQ out+72(FP), DI
	MOVQ bias+64(FP), R8
	MOVQ nb+16(FP), R13
	SHLQ $5, R13            // a token's xq bytes
	MOVQ nb+16(FP), R14
	SHLQ $2, R14            // a token's xd, xc and ds bytes
	MOVQ ostride+80(FP), R15
	SHLQ $2, R15
	MOVQ rows+24(FP), R10
	Q8_CONSTS

row2:
	// Prologue: two tokens, whose xd, xc and ds follow one another.
	MOVQ xd+40(FP), R11
	MOVQ xc+48(FP), R12
	MOVQ ds+56(FP), R9
	XORQ DX, DX
pro2:
	MOVQ BX, AX
	MOVQ nb+16(FP), CX
	VPXORD Z1, Z1, Z1
pro2b:
	CMPQ CX, $16
	JLT pro2t
	VPMOVZXBD (AX), Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	VFMADD231PS (R12), Z21, Z1
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R12
	ADDQ $64, R9
	SUBQ $16, CX
	JMP pro2b
pro2t:
	TESTQ CX, CX
	JZ pro2s
	VPMOVZXBD.Z (AX), K1, Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
	VFMADD231PS (R12), Z21, K1, Z1
	LEAQ (R11)(CX*4), R11
	LEAQ (R12)(CX*4), R12
	LEAQ (R9)(CX*4), R9
pro2s:
	Q8_SUM(Z1, Y1, X1)
	VMULSS X3, X1, X1
	MOVSS X1, 0(SP)(DX*4)
	INCQ DX
	CMPQ DX, $2
	JLT pro2

	// The blocks, two at a time, for the two tokens.
	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+56(FP), R9
	MOVQ nb+16(FP), CX
	SHRQ $1, CX
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
pair2:
	Q8_DECODE
	Q8_TOKEN((DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
	ADDQ $32, AX
	ADDQ $64, DX
	ADDQ $8, R9
	DECQ CX
	JNZ pair2

	Q8_SUM(Z4, Y4, X4)
	Q8_SUM(Z5, Y5, X5)
	VSUBSS 0(SP), X4, X4
	VSUBSS 4(SP), X5, X5
	TESTQ R8, R8
	JZ store2
	VADDSS (R8), X4, X4
	VADDSS (R8), X5, X5
	ADDQ $4, R8
store2:
	MOVSS X4, (DI)
	MOVSS X5, (DI)(R15*1)

	MOVQ R13, AX
	SHRQ $1, AX
	ADDQ AX, SI             // the next row's blocks
	ADDQ nb+16(FP), BX
	ADDQ $4, DI
	DECQ R10
	JNZ row2
	VZEROUPPER
	RET

// func q8MXFP4Rows1(blocks, scales *byte, nb, rows int, xq *int8, xd, xc, ds, bias, out *float32)
// q8MXFP4Rows4 for one token (out[r] for r < rows; ds: nb floats).
TEXT ·q8MXFP4Rows1(SB), NOSPLIT, $16-80
	MOVQ blocks+0(FP), SI
	MOVQ scales+8(FP), BX
	MOVQ out+72(FP), DI
	MOVQ bias+64(FP), R8
	MOVQ nb+16(FP), R13
	SHLQ $5, R13
	MOVQ rows+24(FP), R10
	Q8_CONSTS

row1:
	MOVQ xd+40(FP), R11
	MOVQ xc+48(FP), R12
	MOVQ ds+56(FP), R9
	MOVQ BX, AX
	MOVQ nb+16(FP), CX
	VPXORD Z1, Z1, Z1
pro1b:
	CMPQ CX, $16
	JLT pro1t
	VPMOVZXBD (AX), Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	VFMADD231PS (R12), Z21, Z1
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R12
	ADDQ $64, R9
	SUBQ $16, CX
	JMP pro1b
pro1t:
	TESTQ CX, CX
	JZ pro1s
	VPMOVZXBD.Z (AX), K1, Z21
	VPSLLD $23, Z21, Z21
	VPSUBD Z28, Z21, Z21
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
	VFMADD231PS (R12), Z21, K1, Z1
pro1s:
	Q8_SUM(Z1, Y1, X1)
	VMULSS X3, X1, X1
	MOVSS X1, 0(SP)

	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+56(FP), R9
	MOVQ nb+16(FP), CX
	SHRQ $1, CX
	VPXORD Z4, Z4, Z4
pair1:
	Q8_DECODE
	Q8_TOKEN((DX), (R9), Z8, Z12, Z4)
	ADDQ $32, AX
	ADDQ $64, DX
	ADDQ $8, R9
	DECQ CX
	JNZ pair1

	Q8_SUM(Z4, Y4, X4)
	VSUBSS 0(SP), X4, X4
	TESTQ R8, R8
	JZ store1
	VADDSS (R8), X4, X4
	ADDQ $4, R8
store1:
	MOVSS X4, (DI)

	MOVQ R13, AX
	SHRQ $1, AX
	ADDQ AX, SI
	ADDQ nb+16(FP), BX
	ADDQ $4, DI
	DECQ R10
	JNZ row1
	VZEROUPPER
	RET
