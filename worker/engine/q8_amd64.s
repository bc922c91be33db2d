#include "textflag.h"

// The int8 MXFP4 kernels (q8.go): an expert row's blocks decoded by table
// to unsigned bytes and multiplied with int8 activations by VPDPBUSD
// (AVX-512 VNNI), 128 products in two instructions, with no conversion to
// float before a block's integer sum. Blocks go four at a time (64 bytes):
// VPERMD interleaves their dwords so that int32 lane i of every product
// belongs to block i mod 4; the low nibbles (even elements) and the high
// ones (odd elements) are looked up by VPERMB in place, so both products
// land in the same lanes, and one broadcast of the four blocks' scale
// products serves all sixteen. See q8.go for the arithmetic and q8Layout
// for the activations' order that this implies.

// q8u holds 2·E2M1 + 12 for each nibble code (0..24), four times over:
// VPERMB reads six bits of each index byte, so a low nibble needs no mask
// and a high one (shifted down a word at a time) none either.
DATA q8u<>+0(SB)/8, $0x181412100f0e0d0c
DATA q8u<>+8(SB)/8, $0x00040608090a0b0c
DATA q8u<>+16(SB)/8, $0x181412100f0e0d0c
DATA q8u<>+24(SB)/8, $0x00040608090a0b0c
DATA q8u<>+32(SB)/8, $0x181412100f0e0d0c
DATA q8u<>+40(SB)/8, $0x00040608090a0b0c
DATA q8u<>+48(SB)/8, $0x181412100f0e0d0c
DATA q8u<>+56(SB)/8, $0x00040608090a0b0c
GLOBL q8u<>(SB), RODATA|NOPTR, $64

// q8perm: dword k of a group takes dword k/4 of block k mod 4.
DATA q8perm<>+0(SB)/8, $0x0000000400000000
DATA q8perm<>+8(SB)/8, $0x0000000c00000008
DATA q8perm<>+16(SB)/8, $0x0000000500000001
DATA q8perm<>+24(SB)/8, $0x0000000d00000009
DATA q8perm<>+32(SB)/8, $0x0000000600000002
DATA q8perm<>+40(SB)/8, $0x0000000e0000000a
DATA q8perm<>+48(SB)/8, $0x0000000700000003
DATA q8perm<>+56(SB)/8, $0x0000000f0000000b
GLOBL q8perm<>(SB), RODATA|NOPTR, $64

// Q8_CONSTS loads the constants: Z31 the table, Z30 the dword
// permutation, Z28 1<<23 (one in the exponent field), K1 the
// mask of the nb mod 16 scales of a row's last scale group, K2 the mask
// of the bytes of its last, partial block group (nb mod 4 blocks).
#define Q8_CONSTS \
	VMOVDQU64 q8u<>(SB), Z31 \
	VMOVDQU64 q8perm<>(SB), Z30 \
	MOVL $0x00800000, AX \
	VPBROADCASTD AX, Z28 \
	MOVQ nb+16(FP), CX \
	ANDQ $15, CX \
	MOVL $1, AX \
	SHLL CX, AX \
	DECL AX \
	KMOVW AX, K1 \
	MOVQ nb+16(FP), CX \
	ANDQ $3, CX \
	SHLQ $4, CX \
	MOVQ $1, AX \
	SHLQ CX, AX \
	DECQ AX \
	KMOVQ AX, K2

// Q8_ENTRY loads the arguments every kernel takes the same way (SI the
// row's blocks, BX its scales, DI its outputs, R8 its bias or nil, R13 and
// R14 a token's bytes of xq and of xd/ds, R15 ostride in bytes, R10 the
// rows left) and the constants.
#define Q8_ENTRY \
	MOVQ blocks+0(FP), SI \
	MOVQ scales+8(FP), BX \
	MOVQ out+64(FP), DI \
	MOVQ bias+56(FP), R8 \
	MOVQ nb+16(FP), R13 \
	ADDQ $3, R13 \
	SHRQ $2, R13 \
	MOVQ R13, R14 \
	SHLQ $6, R13 \
	LEAQ (R13)(R13*2), R13 \
	SHLQ $4, R14 \
	MOVQ ostride+72(FP), R15 \
	SHLQ $2, R15 \
	MOVQ rows+24(FP), R10 \
	Q8_CONSTS

// Q8_WS16 builds the row's next sixteen weight scales 2^(s-128) in Z21
// from their bytes at (AX); Q8_WS_TAIL the last nb mod 16 (K1), zero past.
#define Q8_WS16 \
	VPMOVZXBD (AX), Z21 \
	VPSLLD $23, Z21, Z21 \
	VPSUBD Z28, Z21, Z21

#define Q8_WS_TAIL \
	VPMOVZXBD.Z (AX), K1, Z21 \
	VPSLLD $23, Z21, Z21 \
	VPSUBD Z28, Z21, Z21

// Q8_NEXT_ROW moves SI, BX and DI to the next row.
#define Q8_NEXT_ROW \
	MOVQ nb+16(FP), AX \
	SHLQ $4, AX \
	ADDQ AX, SI \
	ADDQ nb+16(FP), BX \
	ADDQ $4, DI

// Q8_DECODE decodes the four blocks permuted into Z0: the unsigned
// weights of their even elements into Z0, of their odd ones into Z1.
#define Q8_DECODE \
	VPSRLW $4, Z0, Z1 \
	VPERMB Z31, Z0, Z0 \
	VPERMB Z31, Z1, Z1

// Q8_TOKEN(xlo, xhi, xz, ds, t, s, acc) adds one token's four blocks:
// the integer sums of the 128 products (lane i: block i mod 4) on top of
// xz, which holds -12·Σq of each block in its lane (the table's offset
// taken back out exactly, in integers), converted, times the blocks' four
// scale products ds into acc.
#define Q8_TOKEN(xlo, xhi, xz, ds, t, s, acc) \
	VMOVDQU32 xz, t \
	VPDPBUSD xlo, Z0, t \
	VPDPBUSD xhi, Z1, t \
	VCVTDQ2PS t, t \
	VBROADCASTF32X4 ds, s \
	VFMADD231PS s, t, acc

// Q8_SUM(z, y, x) reduces the 16 lanes of z to x's low float (Y2 scratch).
#define Q8_SUM(z, y, x) \
	VEXTRACTF64X4 $1, z, Y2 \
	VADDPS Y2, y, y \
	VEXTRACTF128 $1, y, X2 \
	VADDPS X2, x, x \
	VHADDPS x, x, x \
	VHADDPS x, x, x

// Each kernel starts a row with a prologue (Go assembler labels cannot
// live in macros): the row's block scales 2^(s-128) (s-1 placed in the
// exponent field, as dotMXFP4AVX2 does), sixteen at a time, times each
// token's block scales d into the scratch ds.

// func q8MXFP4Rows4(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)
// out[t·ostride + r] = the int8 dot product of row r with token t, + bias[r]
// (+0 when bias is nil), for r < rows (> 0) and t < 4: rows of nb (> 0)
// blocks follow one another; with g = ⌈nb/4⌉ block groups, token t's
// quantized groups (q8Acts) are at xq[t·g·192:] and its block scales at
// xd[t·g·4:] (zero past nb); ds is zeroed scratch for 4·g·4 floats. Each
// (row, token) takes exactly q8MXFP4Rows1's operations, so results do not
// depend on batching.
TEXT ·q8MXFP4Rows4(SB), NOSPLIT, $0-80
	Q8_ENTRY
row4:
	MOVQ BX, AX
	MOVQ xd+40(FP), R11
	MOVQ ds+48(FP), R9
	MOVQ nb+16(FP), CX
	LEAQ (R11)(R14*2), R12
	ADDQ R14, R12
	LEAQ (R9)(R14*2), DX
	ADDQ R14, DX
prob4:
	CMPQ CX, $16
	JLT prot4
	Q8_WS16
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	VMULPS (R11)(R14*1), Z21, Z22
	VMOVUPS Z22, (R9)(R14*1)
	VMULPS (R11)(R14*2), Z21, Z22
	VMOVUPS Z22, (R9)(R14*2)
	VMULPS (R12), Z21, Z22
	VMOVUPS Z22, (DX)
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R9
	ADDQ $64, R12
	ADDQ $64, DX
	SUBQ $16, CX
	JMP prob4
prot4:
	TESTQ CX, CX
	JZ main4
	Q8_WS_TAIL
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
	VMULPS.Z (R11)(R14*1), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)(R14*1)
	VMULPS.Z (R11)(R14*2), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)(R14*2)
	VMULPS.Z (R12), Z21, K1, Z22
	VMOVUPS Z22, K1, (DX)
main4:
	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+48(FP), R9
	LEAQ (DX)(R13*2), R11
	ADDQ R13, R11           // token 3's xq
	LEAQ (R9)(R14*2), R12
	ADDQ R14, R12           // token 3's ds
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	MOVQ nb+16(FP), CX
	SHRQ $2, CX
	JZ tail4
grp4:
	VPERMD (AX), Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), 64(DX)(R13*1), 128(DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
	Q8_TOKEN((DX)(R13*2), 64(DX)(R13*2), 128(DX)(R13*2), (R9)(R14*2), Z10, Z14, Z6)
	Q8_TOKEN((R11), 64(R11), 128(R11), (R12), Z11, Z15, Z7)
	ADDQ $64, AX
	ADDQ $192, DX
	ADDQ $16, R9
	ADDQ $192, R11
	ADDQ $16, R12
	DECQ CX
	JNZ grp4
tail4:
	MOVQ nb+16(FP), CX
	ANDQ $3, CX
	JZ sum4
	VMOVDQU8.Z (AX), K2, Z0
	VPERMD Z0, Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), 64(DX)(R13*1), 128(DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
	Q8_TOKEN((DX)(R13*2), 64(DX)(R13*2), 128(DX)(R13*2), (R9)(R14*2), Z10, Z14, Z6)
	Q8_TOKEN((R11), 64(R11), 128(R11), (R12), Z11, Z15, Z7)
sum4:
	Q8_SUM(Z4, Y4, X4)
	Q8_SUM(Z5, Y5, X5)
	Q8_SUM(Z6, Y6, X6)
	Q8_SUM(Z7, Y7, X7)
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
	Q8_NEXT_ROW
	DECQ R10
	JNZ row4
	VZEROUPPER
	RET

// func q8MXFP4Rows2(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)
// q8MXFP4Rows4 for two tokens (the experts a decode step gives two or
// three tokens: one decode of each block group instead of two or three).
TEXT ·q8MXFP4Rows2(SB), NOSPLIT, $0-80
	Q8_ENTRY
row2:
	MOVQ BX, AX
	MOVQ xd+40(FP), R11
	MOVQ ds+48(FP), R9
	MOVQ nb+16(FP), CX
prob2:
	CMPQ CX, $16
	JLT prot2
	Q8_WS16
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	VMULPS (R11)(R14*1), Z21, Z22
	VMOVUPS Z22, (R9)(R14*1)
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R9
	SUBQ $16, CX
	JMP prob2
prot2:
	TESTQ CX, CX
	JZ main2
	Q8_WS_TAIL
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
	VMULPS.Z (R11)(R14*1), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)(R14*1)
main2:
	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+48(FP), R9
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	MOVQ nb+16(FP), CX
	SHRQ $2, CX
	JZ tail2
grp2:
	VPERMD (AX), Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), 64(DX)(R13*1), 128(DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
	ADDQ $64, AX
	ADDQ $192, DX
	ADDQ $16, R9
	DECQ CX
	JNZ grp2
tail2:
	MOVQ nb+16(FP), CX
	ANDQ $3, CX
	JZ sum2
	VMOVDQU8.Z (AX), K2, Z0
	VPERMD Z0, Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
	Q8_TOKEN((DX)(R13*1), 64(DX)(R13*1), 128(DX)(R13*1), (R9)(R14*1), Z9, Z13, Z5)
sum2:
	Q8_SUM(Z4, Y4, X4)
	Q8_SUM(Z5, Y5, X5)
	TESTQ R8, R8
	JZ store2
	VADDSS (R8), X4, X4
	VADDSS (R8), X5, X5
	ADDQ $4, R8
store2:
	MOVSS X4, (DI)
	MOVSS X5, (DI)(R15*1)
	Q8_NEXT_ROW
	DECQ R10
	JNZ row2
	VZEROUPPER
	RET

// func q8MXFP4Rows1(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)
// q8MXFP4Rows4 for one token (ostride unused).
TEXT ·q8MXFP4Rows1(SB), NOSPLIT, $0-80
	Q8_ENTRY
row1:
	MOVQ BX, AX
	MOVQ xd+40(FP), R11
	MOVQ ds+48(FP), R9
	MOVQ nb+16(FP), CX
prob1:
	CMPQ CX, $16
	JLT prot1
	Q8_WS16
	VMULPS (R11), Z21, Z22
	VMOVUPS Z22, (R9)
	ADDQ $16, AX
	ADDQ $64, R11
	ADDQ $64, R9
	SUBQ $16, CX
	JMP prob1
prot1:
	TESTQ CX, CX
	JZ main1
	Q8_WS_TAIL
	VMULPS.Z (R11), Z21, K1, Z22
	VMOVUPS Z22, K1, (R9)
main1:
	MOVQ SI, AX
	MOVQ xq+32(FP), DX
	MOVQ ds+48(FP), R9
	VPXORD Z4, Z4, Z4
	MOVQ nb+16(FP), CX
	SHRQ $2, CX
	JZ tail1
grp1:
	VPERMD (AX), Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
	ADDQ $64, AX
	ADDQ $192, DX
	ADDQ $16, R9
	DECQ CX
	JNZ grp1
tail1:
	MOVQ nb+16(FP), CX
	ANDQ $3, CX
	JZ sum1
	VMOVDQU8.Z (AX), K2, Z0
	VPERMD Z0, Z30, Z0
	Q8_DECODE
	Q8_TOKEN((DX), 64(DX), 128(DX), (R9), Z8, Z12, Z4)
sum1:
	Q8_SUM(Z4, Y4, X4)
	TESTQ R8, R8
	JZ store1
	VADDSS (R8), X4, X4
	ADDQ $4, R8
store1:
	MOVSS X4, (DI)
	Q8_NEXT_ROW
	DECQ R10
	JNZ row1
	VZEROUPPER
	RET
