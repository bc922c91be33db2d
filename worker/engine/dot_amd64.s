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

// func dotBF16RowsAVX2(w *uint16, wstride, rows, n int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
// out[t·ostride + r] = dot(row r of w, x[t·xstride:]) + bias[r] (+0 when
// bias is nil) for r < rows (> 0), t < ntok; rows are n bf16 (a positive
// multiple of 16) wstride apart. Every (row, token) is accumulated and
// reduced exactly as dotBF16AVX2 does (two accumulators over alternate
// 8-element blocks, low plus high half, two horizontal additions), so the
// result does not depend on which tokens share a step: tokens go four at a
// time (one conversion of the weights, the four reductions done together
// in the lanes of one register) and the rest one at a time.
TEXT ·dotBF16RowsAVX2(SB), NOSPLIT, $16-80
	MOVQ w+0(FP), SI
	MOVQ x+32(FP), BX
	MOVQ xstride+40(FP), R12
	SHLQ $2, R12
	MOVQ bias+56(FP), DX
	MOVQ out+64(FP), DI
	MOVQ ostride+72(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), AX
	LEAQ (DI)(AX*4), AX
	MOVQ AX, rows+16(FP)    // now the end of out's first row
	MOVQ wstride+8(FP), AX
	SHLQ $1, AX
	MOVQ AX, wstride+8(FP)  // now in bytes

row:
	VXORPS Y15, Y15, Y15
	TESTQ DX, DX
	JZ nobias
	VBROADCASTSS (DX), Y15
	ADDQ $4, DX
nobias:
	MOVQ BX, 0(SP)          // x of the next token
	MOVQ DI, 8(SP)          // out of the next token
	MOVQ ntok+48(FP), R14
	CMPQ R14, $4
	JLT single

group:
	MOVQ 0(SP), R8
	LEAQ (R8)(R12*1), R9
	LEAQ (R8)(R12*2), R10
	LEAQ (R10)(R12*1), R11
	LEAQ (R10)(R12*2), AX
	MOVQ AX, 0(SP)
	MOVQ SI, R15
	MOVQ n+24(FP), CX
	XORQ AX, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
loop4:
	VPMOVZXWD (R15), Y8
	VPSLLD $16, Y8, Y8
	VPMOVZXWD 16(R15), Y9
	VPSLLD $16, Y9, Y9
	VFMADD231PS (R8)(AX*1), Y8, Y0
	VFMADD231PS 32(R8)(AX*1), Y9, Y1
	VFMADD231PS (R9)(AX*1), Y8, Y2
	VFMADD231PS 32(R9)(AX*1), Y9, Y3
	VFMADD231PS (R10)(AX*1), Y8, Y4
	VFMADD231PS 32(R10)(AX*1), Y9, Y5
	VFMADD231PS (R11)(AX*1), Y8, Y6
	VFMADD231PS 32(R11)(AX*1), Y9, Y7
	ADDQ $32, R15
	ADDQ $64, AX
	SUBQ $16, CX
	JNZ loop4
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y5, Y4, Y4
	VADDPS Y7, Y6, Y6
	VPERM2F128 $0x20, Y2, Y0, Y8  // low halves of tokens 0, 1
	VPERM2F128 $0x31, Y2, Y0, Y9  // high halves
	VADDPS Y9, Y8, Y8
	VPERM2F128 $0x20, Y6, Y4, Y10 // tokens 2, 3
	VPERM2F128 $0x31, Y6, Y4, Y11
	VADDPS Y11, Y10, Y10
	VHADDPS Y10, Y8, Y8
	VHADDPS Y8, Y8, Y8            // tokens 0, 2 in lanes 0, 1; 1, 3 in lanes 4, 5
	VADDPS Y15, Y8, Y8
	MOVQ 8(SP), R8
	LEAQ (R8)(R13*2), R10
	VMOVSS X8, (R8)
	VEXTRACTPS $1, X8, (R10)
	VEXTRACTF128 $1, Y8, X9
	VMOVSS X9, (R8)(R13*1)
	VEXTRACTPS $1, X9, (R10)(R13*1)
	LEAQ (R10)(R13*2), R8
	MOVQ R8, 8(SP)
	SUBQ $4, R14
	CMPQ R14, $4
	JGE group

single:
	TESTQ R14, R14
	JZ rowdone
one:
	MOVQ 0(SP), R8
	LEAQ (R8)(R12*1), AX
	MOVQ AX, 0(SP)
	MOVQ SI, R15
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
loop1:
	VPMOVZXWD (R15), Y2
	VPSLLD $16, Y2, Y2
	VFMADD231PS (R8), Y2, Y0
	VPMOVZXWD 16(R15), Y3
	VPSLLD $16, Y3, Y3
	VFMADD231PS 32(R8), Y3, Y1
	ADDQ $32, R15
	ADDQ $64, R8
	SUBQ $16, CX
	JNZ loop1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS X15, X0, X0
	MOVQ 8(SP), R8
	VMOVSS X0, (R8)
	ADDQ R13, R8
	MOVQ R8, 8(SP)
	DECQ R14
	JNZ one

rowdone:
	ADDQ wstride+8(FP), SI
	ADDQ $4, DI
	CMPQ DI, rows+16(FP)
	JNE row
	VZEROUPPER
	RET

// func dotBF16Rows64AVX2(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
// dotBF16RowsAVX2 for rows of exactly 64 (the tiny model's hidden size):
// each row is converted once into eight registers and serves every token
// from there, and the loops over its four 16-element blocks are unrolled.
// The accumulation and reduction of each (row, token) are dotBF16AVX2's.
TEXT ·dotBF16Rows64AVX2(SB), NOSPLIT, $32-72
	MOVQ w+0(FP), SI
	MOVQ x+24(FP), BX
	MOVQ xstride+32(FP), R12
	SHLQ $2, R12
	MOVQ bias+48(FP), DX
	MOVQ out+56(FP), DI
	MOVQ ostride+64(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), AX
	LEAQ (DI)(AX*4), AX
	MOVQ AX, rows+16(FP)    // now the end of out's first row
	MOVQ wstride+8(FP), AX
	SHLQ $1, AX
	MOVQ AX, wstride+8(FP)  // now in bytes

row64:
	VXORPS Y0, Y0, Y0
	TESTQ DX, DX
	JZ nobias64
	VBROADCASTSS (DX), Y0
	ADDQ $4, DX
nobias64:
	VMOVUPS Y0, 0(SP)      // the bias in every lane
	VPMOVZXWD 0(SI), Y8
	VPSLLD $16, Y8, Y8
	VPMOVZXWD 16(SI), Y9
	VPSLLD $16, Y9, Y9
	VPMOVZXWD 32(SI), Y10
	VPSLLD $16, Y10, Y10
	VPMOVZXWD 48(SI), Y11
	VPSLLD $16, Y11, Y11
	VPMOVZXWD 64(SI), Y12
	VPSLLD $16, Y12, Y12
	VPMOVZXWD 80(SI), Y13
	VPSLLD $16, Y13, Y13
	VPMOVZXWD 96(SI), Y14
	VPSLLD $16, Y14, Y14
	VPMOVZXWD 112(SI), Y15
	VPSLLD $16, Y15, Y15
	MOVQ BX, R15            // x of the next token
	MOVQ DI, CX             // out of the next token
	MOVQ ntok+40(FP), R14
	CMPQ R14, $4
	JLT single64

group64:
	MOVQ R15, R8
	LEAQ (R8)(R12*1), R9
	LEAQ (R8)(R12*2), R10
	LEAQ (R10)(R12*1), R11
	LEAQ (R10)(R12*2), R15
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VFMADD231PS 0(R8), Y8, Y0
	VFMADD231PS 32(R8), Y9, Y1
	VFMADD231PS 0(R9), Y8, Y2
	VFMADD231PS 32(R9), Y9, Y3
	VFMADD231PS 0(R10), Y8, Y4
	VFMADD231PS 32(R10), Y9, Y5
	VFMADD231PS 0(R11), Y8, Y6
	VFMADD231PS 32(R11), Y9, Y7
	VFMADD231PS 64(R8), Y10, Y0
	VFMADD231PS 96(R8), Y11, Y1
	VFMADD231PS 64(R9), Y10, Y2
	VFMADD231PS 96(R9), Y11, Y3
	VFMADD231PS 64(R10), Y10, Y4
	VFMADD231PS 96(R10), Y11, Y5
	VFMADD231PS 64(R11), Y10, Y6
	VFMADD231PS 96(R11), Y11, Y7
	VFMADD231PS 128(R8), Y12, Y0
	VFMADD231PS 160(R8), Y13, Y1
	VFMADD231PS 128(R9), Y12, Y2
	VFMADD231PS 160(R9), Y13, Y3
	VFMADD231PS 128(R10), Y12, Y4
	VFMADD231PS 160(R10), Y13, Y5
	VFMADD231PS 128(R11), Y12, Y6
	VFMADD231PS 160(R11), Y13, Y7
	VFMADD231PS 192(R8), Y14, Y0
	VFMADD231PS 224(R8), Y15, Y1
	VFMADD231PS 192(R9), Y14, Y2
	VFMADD231PS 224(R9), Y15, Y3
	VFMADD231PS 192(R10), Y14, Y4
	VFMADD231PS 224(R10), Y15, Y5
	VFMADD231PS 192(R11), Y14, Y6
	VFMADD231PS 224(R11), Y15, Y7
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y5, Y4, Y4
	VADDPS Y7, Y6, Y6
	VPERM2F128 $0x20, Y2, Y0, Y1  // low halves of tokens 0, 1
	VPERM2F128 $0x31, Y2, Y0, Y3  // high halves
	VADDPS Y3, Y1, Y1
	VPERM2F128 $0x20, Y6, Y4, Y5  // tokens 2, 3
	VPERM2F128 $0x31, Y6, Y4, Y7
	VADDPS Y7, Y5, Y5
	VHADDPS Y5, Y1, Y1
	VHADDPS Y1, Y1, Y1            // tokens 0, 2 in lanes 0, 1; 1, 3 in lanes 4, 5
	VADDPS 0(SP), Y1, Y1
	LEAQ (CX)(R13*2), R10
	VMOVSS X1, (CX)
	VEXTRACTPS $1, X1, (R10)
	VEXTRACTF128 $1, Y1, X3
	VMOVSS X3, (CX)(R13*1)
	VEXTRACTPS $1, X3, (R10)(R13*1)
	LEAQ (R10)(R13*2), CX
	SUBQ $4, R14
	CMPQ R14, $4
	JGE group64

single64:
	TESTQ R14, R14
	JZ rowdone64
one64:
	MOVQ R15, R8
	ADDQ R12, R15
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VFMADD231PS 0(R8), Y8, Y0
	VFMADD231PS 32(R8), Y9, Y1
	VFMADD231PS 64(R8), Y10, Y0
	VFMADD231PS 96(R8), Y11, Y1
	VFMADD231PS 128(R8), Y12, Y0
	VFMADD231PS 160(R8), Y13, Y1
	VFMADD231PS 192(R8), Y14, Y0
	VFMADD231PS 224(R8), Y15, Y1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS 0(SP), X0, X0
	VMOVSS X0, (CX)
	ADDQ R13, CX
	DECQ R14
	JNZ one64

rowdone64:
	ADDQ wstride+8(FP), SI
	ADDQ $4, DI
	CMPQ DI, rows+16(FP)
	JNE row64
	VZEROUPPER
	RET

// func dotBF16Rows64AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
// dotBF16Rows64AVX2 with 512-bit registers (AVX-512 F and BW): one
// 16-lane accumulator per token holds, in its low and high halves, the two
// 8-lane accumulators of dotBF16AVX2 (its lane j sums elements j + 16i,
// as Y0's lane j does for j < 8 and Y1's lane j − 8 above), so low half
// plus high half is Y0 + Y1 and every (row, token) gets exactly
// dotBF16AVX2's operations, in half the instructions. Four tokens at a time, then one. (The single token of
// a decode step, and what dotBF16Rows64x4AVX512 leaves.)
TEXT ·dotBF16Rows64AVX512(SB), NOSPLIT, $32-72
	MOVQ w+0(FP), SI
	MOVQ x+24(FP), BX
	MOVQ xstride+32(FP), R12
	SHLQ $2, R12
	MOVQ bias+48(FP), DX
	MOVQ out+56(FP), DI
	MOVQ ostride+64(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), AX
	LEAQ (DI)(AX*4), AX
	MOVQ AX, rows+16(FP)    // now the end of out's first row
	MOVQ wstride+8(FP), AX
	SHLQ $1, AX
	MOVQ AX, wstride+8(FP)  // now in bytes

row512:
	VXORPS Y0, Y0, Y0
	TESTQ DX, DX
	JZ nobias512
	VBROADCASTSS (DX), Y0
	ADDQ $4, DX
nobias512:
	VMOVUPS Y0, 0(SP)       // the bias in every lane
	VPMOVZXWD 0(SI), Z8
	VPSLLD $16, Z8, Z8
	VPMOVZXWD 32(SI), Z9
	VPSLLD $16, Z9, Z9
	VPMOVZXWD 64(SI), Z10
	VPSLLD $16, Z10, Z10
	VPMOVZXWD 96(SI), Z11
	VPSLLD $16, Z11, Z11
	MOVQ BX, R15            // x of the next token
	MOVQ DI, CX             // out of the next token
	MOVQ ntok+40(FP), R14
four512:
	CMPQ R14, $4
	JLT single512
	MOVQ R15, R8
	LEAQ (R8)(R12*1), R9
	LEAQ (R8)(R12*2), R10
	LEAQ (R10)(R12*1), R11
	LEAQ (R8)(R12*4), R15
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VFMADD231PS (R8), Z8, Z0
	VFMADD231PS (R9), Z8, Z1
	VFMADD231PS (R10), Z8, Z2
	VFMADD231PS (R11), Z8, Z3
	VFMADD231PS 64(R8), Z9, Z0
	VFMADD231PS 64(R9), Z9, Z1
	VFMADD231PS 64(R10), Z9, Z2
	VFMADD231PS 64(R11), Z9, Z3
	VFMADD231PS 128(R8), Z10, Z0
	VFMADD231PS 128(R9), Z10, Z1
	VFMADD231PS 128(R10), Z10, Z2
	VFMADD231PS 128(R11), Z10, Z3
	VFMADD231PS 192(R8), Z11, Z0
	VFMADD231PS 192(R9), Z11, Z1
	VFMADD231PS 192(R10), Z11, Z2
	VFMADD231PS 192(R11), Z11, Z3
	VEXTRACTF64X4 $1, Z0, Y12
	VADDPS Y12, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y12
	VADDPS Y12, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y12
	VADDPS Y12, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y12
	VADDPS Y12, Y3, Y3
	VPERM2F128 $0x20, Y1, Y0, Y12
	VPERM2F128 $0x31, Y1, Y0, Y13
	VADDPS Y13, Y12, Y12
	VPERM2F128 $0x20, Y3, Y2, Y13
	VPERM2F128 $0x31, Y3, Y2, Y14
	VADDPS Y14, Y13, Y13
	VHADDPS Y13, Y12, Y12
	VHADDPS Y12, Y12, Y12         // tokens 0, 2 in lanes 0, 1; 1, 3 in lanes 4, 5
	VADDPS 0(SP), Y12, Y12
	LEAQ (CX)(R13*2), R10
	VMOVSS X12, (CX)
	VEXTRACTPS $1, X12, (R10)
	VEXTRACTF128 $1, Y12, X13
	VMOVSS X13, (CX)(R13*1)
	VEXTRACTPS $1, X13, (R10)(R13*1)
	LEAQ (R10)(R13*2), CX
	SUBQ $4, R14
	JMP four512

single512:
	TESTQ R14, R14
	JZ rowdone512
one512:
	MOVQ R15, R8
	ADDQ R12, R15
	VPXORD Z0, Z0, Z0
	VFMADD231PS (R8), Z8, Z0
	VFMADD231PS 64(R8), Z9, Z0
	VFMADD231PS 128(R8), Z10, Z0
	VFMADD231PS 192(R8), Z11, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS 0(SP), X0, X0
	VMOVSS X0, (CX)
	ADDQ R13, CX
	DECQ R14
	JNZ one512

rowdone512:
	ADDQ wstride+8(FP), SI
	ADDQ $4, DI
	CMPQ DI, rows+16(FP)
	JNE row512
	VZEROUPPER
	RET

// func dotBF16Rows64x4AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
// dotBF16Rows64AVX512 for an even number of rows and a multiple of four
// tokens, the other way round: four tokens' x stay in sixteen registers
// while the rows stream past them two at a time, so the products need no
// loads. The eight sums of two rows and four tokens are reduced together
// by a tree of 128-bit-block and in-block shuffles that adds, for each of
// them, exactly the pairs dotBF16AVX2 adds (low half + high half, then
// low 128 bits + high 128 bits, then two horizontal additions), and the
// results land as pairs of adjacent floats, one store per token.
TEXT ·dotBF16Rows64x4AVX512(SB), NOSPLIT, $0-72
	MOVQ x+24(FP), BX
	MOVQ xstride+32(FP), R12
	SHLQ $2, R12
	MOVQ out+56(FP), CX
	MOVQ ostride+64(FP), R13
	SHLQ $2, R13
	MOVQ wstride+8(FP), AX
	SHLQ $1, AX
	MOVQ AX, wstride+8(FP)  // now in bytes
	MOVQ ntok+40(FP), R14

tokens4:
	MOVQ BX, R8
	LEAQ (R8)(R12*1), R9
	LEAQ (R8)(R12*2), R10
	LEAQ (R10)(R12*1), R11
	LEAQ (R8)(R12*4), BX    // the next four tokens
	VMOVUPS (R8), Z16
	VMOVUPS 64(R8), Z17
	VMOVUPS 128(R8), Z18
	VMOVUPS 192(R8), Z19
	VMOVUPS (R9), Z20
	VMOVUPS 64(R9), Z21
	VMOVUPS 128(R9), Z22
	VMOVUPS 192(R9), Z23
	VMOVUPS (R10), Z24
	VMOVUPS 64(R10), Z25
	VMOVUPS 128(R10), Z26
	VMOVUPS 192(R10), Z27
	VMOVUPS (R11), Z28
	VMOVUPS 64(R11), Z29
	VMOVUPS 128(R11), Z30
	VMOVUPS 192(R11), Z31
	MOVQ w+0(FP), SI
	MOVQ bias+48(FP), DX
	MOVQ CX, DI             // out[t][r] of this pair of rows, t the first token
	MOVQ rows+16(FP), R15

pair:
	MOVQ SI, R8
	ADDQ wstride+8(FP), R8  // the second row
	VPMOVZXWD 0(SI), Z8
	VPMOVZXWD 32(SI), Z9
	VPMOVZXWD 64(SI), Z10
	VPMOVZXWD 96(SI), Z11
	VPMOVZXWD 0(R8), Z12
	VPMOVZXWD 32(R8), Z13
	VPMOVZXWD 64(R8), Z14
	VPMOVZXWD 96(R8), Z15
	VPSLLD $16, Z8, Z8
	VPSLLD $16, Z9, Z9
	VPSLLD $16, Z10, Z10
	VPSLLD $16, Z11, Z11
	VPSLLD $16, Z12, Z12
	VPSLLD $16, Z13, Z13
	VPSLLD $16, Z14, Z14
	VPSLLD $16, Z15, Z15
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	// Z0-Z3: row 0, tokens 0-3; Z4-Z7: row 1. Lane j of each sums
	// elements j + 16i, dotBF16AVX2's Y0 lane j for j < 8, Y1 lane j-8
	// above; write L for those lanes and q0-q3 for 128-bit blocks.
	VFMADD231PS Z16, Z8, Z0
	VFMADD231PS Z20, Z8, Z1
	VFMADD231PS Z24, Z8, Z2
	VFMADD231PS Z28, Z8, Z3
	VFMADD231PS Z16, Z12, Z4
	VFMADD231PS Z20, Z12, Z5
	VFMADD231PS Z24, Z12, Z6
	VFMADD231PS Z28, Z12, Z7
	VFMADD231PS Z17, Z9, Z0
	VFMADD231PS Z21, Z9, Z1
	VFMADD231PS Z25, Z9, Z2
	VFMADD231PS Z29, Z9, Z3
	VFMADD231PS Z17, Z13, Z4
	VFMADD231PS Z21, Z13, Z5
	VFMADD231PS Z25, Z13, Z6
	VFMADD231PS Z29, Z13, Z7
	VFMADD231PS Z18, Z10, Z0
	VFMADD231PS Z22, Z10, Z1
	VFMADD231PS Z26, Z10, Z2
	VFMADD231PS Z30, Z10, Z3
	VFMADD231PS Z18, Z14, Z4
	VFMADD231PS Z22, Z14, Z5
	VFMADD231PS Z26, Z14, Z6
	VFMADD231PS Z30, Z14, Z7
	VFMADD231PS Z19, Z11, Z0
	VFMADD231PS Z23, Z11, Z1
	VFMADD231PS Z27, Z11, Z2
	VFMADD231PS Z31, Z11, Z3
	VFMADD231PS Z19, Z15, Z4
	VFMADD231PS Z23, Z15, Z5
	VFMADD231PS Z27, Z15, Z6
	VFMADD231PS Z31, Z15, Z7
	// s = Y0 + Y1: blocks q0+q2 and q1+q3, two sums per register.
	VSHUFF32X4 $0x44, Z1, Z0, Z8
	VSHUFF32X4 $0xEE, Z1, Z0, Z9
	VADDPS Z9, Z8, Z8       // row 0: token 0 s0-3, s4-7, token 1 s0-3, s4-7
	VSHUFF32X4 $0x44, Z3, Z2, Z9
	VSHUFF32X4 $0xEE, Z3, Z2, Z10
	VADDPS Z10, Z9, Z9      // row 0, tokens 2, 3
	VSHUFF32X4 $0x44, Z5, Z4, Z10
	VSHUFF32X4 $0xEE, Z5, Z4, Z11
	VADDPS Z11, Z10, Z10    // row 1, tokens 0, 1
	VSHUFF32X4 $0x44, Z7, Z6, Z11
	VSHUFF32X4 $0xEE, Z7, Z6, Z12
	VADDPS Z12, Z11, Z11    // row 1, tokens 2, 3
	// u = s low 128 bits + high 128 bits, four sums per register.
	VSHUFF32X4 $0x88, Z9, Z8, Z12
	VSHUFF32X4 $0xDD, Z9, Z8, Z13
	VADDPS Z13, Z12, Z12    // row 0: u0-3 of tokens 0-3, one per block
	VSHUFF32X4 $0x88, Z11, Z10, Z13
	VSHUFF32X4 $0xDD, Z11, Z10, Z14
	VADDPS Z14, Z13, Z13    // row 1
	// The two horizontal additions, rows 0 and 1 side by side in each
	// block (one block per token).
	VSHUFPS $0x88, Z13, Z12, Z14
	VSHUFPS $0xDD, Z13, Z12, Z15
	VADDPS Z15, Z14, Z14    // row 0 u0+u1, u2+u3, row 1 u0+u1, u2+u3
	VSHUFPS $0x88, Z14, Z14, Z12
	VSHUFPS $0xDD, Z14, Z14, Z13
	VADDPS Z13, Z12, Z12    // block t: row 0, row 1 (twice) of token t
	VPXORD Z13, Z13, Z13
	TESTQ DX, DX
	JZ 3(PC)
	VBROADCASTSD (DX), Z13  // the two rows' biases, repeated
	ADDQ $8, DX
	VADDPS Z13, Z12, Z12
	VMOVLPS X12, (DI)
	VEXTRACTF32X4 $1, Z12, X13
	VMOVLPS X13, (DI)(R13*1)
	LEAQ (DI)(R13*2), AX
	VEXTRACTF32X4 $2, Z12, X14
	VMOVLPS X14, (AX)
	VEXTRACTF32X4 $3, Z12, X15
	VMOVLPS X15, (AX)(R13*1)
	ADDQ $8, DI
	ADDQ wstride+8(FP), SI
	ADDQ wstride+8(FP), SI
	SUBQ $2, R15
	JNZ pair

	LEAQ (CX)(R13*4), CX    // out of the next four tokens
	SUBQ $4, R14
	JNZ tokens4
	VZEROUPPER
	RET

// MXFP4_BLOCK decodes the MXFP4 block at (SI) with its scale byte at (BX)
// for dotMXFP4RowsAVX2: the 32 values ×2 as float32 in Y10..Y13 (elements
// 0..7, 8..15, 16..23, 24..31), the halved scale broadcast in Y14, exactly
// as dotMXFP4AVX2 builds them (Y8: fp4x2, Y9: nib; X4..X7 and DX are
// scratch).
#define MXFP4_BLOCK \
	VMOVDQU (SI), X4; \
	VPSRLW $4, X4, X5; \
	VPAND X9, X4, X4; \
	VPAND X9, X5, X5; \
	VPSHUFB X4, X8, X4; \
	VPSHUFB X5, X8, X5; \
	VPUNPCKLBW X5, X4, X6; \
	VPUNPCKHBW X5, X4, X7; \
	VPMOVSXBD X6, Y10; \
	VPSRLDQ $8, X6, X6; \
	VPMOVSXBD X6, Y11; \
	VPMOVSXBD X7, Y12; \
	VPSRLDQ $8, X7, X7; \
	VPMOVSXBD X7, Y13; \
	VCVTDQ2PS Y10, Y10; \
	VCVTDQ2PS Y11, Y11; \
	VCVTDQ2PS Y12, Y12; \
	VCVTDQ2PS Y13, Y13; \
	MOVBLZX (BX), DX; \
	SUBL $1, DX; \
	SHLL $23, DX; \
	VMOVD DX, X14; \
	VBROADCASTSS X14, Y14

// MXFP4_TOKEN(x, p, q, acc) applies the decoded block to one token, whose
// block of 32 floats is at AX(x): dotMXFP4AVX2's two products, two FMAs
// and add into p (q scratch), then the scale FMA into acc.
#define MXFP4_TOKEN(x, p, q, acc) \
	VMULPS (x)(AX*1), Y10, p; \
	VFMADD231PS 32(x)(AX*1), Y11, p; \
	VMULPS 64(x)(AX*1), Y12, q; \
	VFMADD231PS 96(x)(AX*1), Y13, q; \
	VADDPS q, p, p; \
	VFMADD231PS Y14, p, acc

// func dotMXFP4RowsAVX2(blocks *byte, scales *byte, nb, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
// out[t·ostride + r] = dotMXFP4AVX2(row r, x[t·xstride:]) + bias[r] (+0
// when bias is nil) for r < rows (> 0), t < ntok (> 0): rows of nb (> 0)
// blocks follow one another (nb·16 block bytes and nb scale bytes apart).
// Each block is decoded once for four tokens, which is what batching
// saves: the decode (shuffle, widen, convert) costs more than the four
// products it feeds. Every (row, token) gets exactly dotMXFP4AVX2's
// operations: per block the same two products, two FMAs and add, the same
// scale FMA into its own accumulator, and the same reduction (low 128 bits
// plus high, two horizontal additions, done for four tokens at once in
// the lanes of one register as dotBF16RowsAVX2 does), so the result does
// not depend on which tokens share a step. Three tokens left over take the
// four-token path with the last one repeated (it computes the same value
// twice and stores it twice), two a two-token form of it (the common case
// of a decode step with a few sequences), one the one-token path.
TEXT ·dotMXFP4RowsAVX2(SB), NOSPLIT, $32-80
	MOVQ xstride+40(FP), R12
	SHLQ $2, R12
	MOVQ ostride+72(FP), R13
	SHLQ $2, R13
	MOVQ bias+56(FP), AX
	MOVQ AX, 24(SP)         // this row's bias (nil: none)
	MOVQ out+64(FP), DI
	MOVQ blocks+0(FP), AX
	MOVQ AX, 0(SP)          // this row's blocks
	MOVQ scales+8(FP), AX
	MOVQ AX, 8(SP)          // this row's scales
	MOVQ rows+24(FP), AX
	LEAQ (DI)(AX*4), AX
	MOVQ AX, rows+24(FP)    // now the end of out's first row
	VMOVDQU fp4x2<>(SB), Y8
	VMOVDQU nib<>(SB), Y9

mrow:
	VXORPS Y15, Y15, Y15
	MOVQ 24(SP), DX
	TESTQ DX, DX
	JZ mnobias
	VBROADCASTSS (DX), Y15
	ADDQ $4, 24(SP)
mnobias:
	MOVQ x+32(FP), R15      // x of the next token
	MOVQ DI, 16(SP)         // out of the next token
	MOVQ ntok+48(FP), R14

mtokens:
	CMPQ R14, $2
	JLT mone
	JEQ mtwo
	// Four tokens (the last repeated when two or three are left).
	MOVQ R15, R8
	LEAQ (R8)(R12*1), R9
	MOVQ R9, R10
	MOVQ R9, R11
	CMPQ R14, $3
	JLT mx
	LEAQ (R10)(R12*1), R10
	MOVQ R10, R11
	JEQ mx
	LEAQ (R11)(R12*1), R11
mx:
	LEAQ (R11)(R12*1), R15
	MOVQ 0(SP), SI
	MOVQ 8(SP), BX
	MOVQ nb+16(FP), CX
	XORQ AX, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
mblk4:
	MXFP4_BLOCK
	MXFP4_TOKEN(R8, Y4, Y5, Y0)
	MXFP4_TOKEN(R9, Y6, Y7, Y1)
	MXFP4_TOKEN(R10, Y4, Y5, Y2)
	MXFP4_TOKEN(R11, Y6, Y7, Y3)
	ADDQ $16, SI
	ADDQ $1, BX
	ADDQ $128, AX
	DECQ CX
	JNZ mblk4
mreduce4:
	VPERM2F128 $0x20, Y1, Y0, Y4  // low halves of tokens 0, 1
	VPERM2F128 $0x31, Y1, Y0, Y5  // high halves
	VADDPS Y5, Y4, Y4
	VPERM2F128 $0x20, Y3, Y2, Y6  // tokens 2, 3
	VPERM2F128 $0x31, Y3, Y2, Y7
	VADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VHADDPS Y4, Y4, Y4            // tokens 0, 2 in lanes 0, 1; 1, 3 in lanes 4, 5
	VADDPS Y15, Y4, Y4
	MOVQ 16(SP), R8
	LEAQ (R8)(R13*1), R9
	MOVQ R9, R10
	MOVQ R9, R11
	CMPQ R14, $3
	JLT mo
	LEAQ (R10)(R13*1), R10
	MOVQ R10, R11
	JEQ mo
	LEAQ (R11)(R13*1), R11
mo:
	VMOVSS X4, (R8)
	VEXTRACTPS $1, X4, (R10)
	VEXTRACTF128 $1, Y4, X5
	VMOVSS X5, (R9)
	VEXTRACTPS $1, X5, (R11)
	LEAQ (R11)(R13*1), R8
	MOVQ R8, 16(SP)
	SUBQ $4, R14
	JGT mtokens
	JMP mrowdone

mtwo:
	// Two tokens: the four-token loop's work for the first two, then its
	// reduction and stores with the second repeated.
	MOVQ R15, R8
	LEAQ (R8)(R12*1), R9
	MOVQ R9, R10
	MOVQ R9, R11
	MOVQ 0(SP), SI
	MOVQ 8(SP), BX
	MOVQ nb+16(FP), CX
	XORQ AX, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
mblk2:
	MXFP4_BLOCK
	MXFP4_TOKEN(R8, Y4, Y5, Y0)
	MXFP4_TOKEN(R9, Y6, Y7, Y1)
	ADDQ $16, SI
	ADDQ $1, BX
	ADDQ $128, AX
	DECQ CX
	JNZ mblk2
	VMOVAPS Y1, Y2
	VMOVAPS Y1, Y3
	JMP mreduce4

mone:
	MOVQ R15, R8
	MOVQ 0(SP), SI
	MOVQ 8(SP), BX
	MOVQ nb+16(FP), CX
	XORQ AX, AX
	VXORPS Y0, Y0, Y0
mblk1:
	MXFP4_BLOCK
	MXFP4_TOKEN(R8, Y4, Y5, Y0)
	ADDQ $16, SI
	ADDQ $1, BX
	ADDQ $128, AX
	DECQ CX
	JNZ mblk1
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS X15, X0, X0
	MOVQ 16(SP), R8
	VMOVSS X0, (R8)

mrowdone:
	MOVQ nb+16(FP), AX
	ADDQ AX, 8(SP)
	SHLQ $4, AX
	ADDQ AX, 0(SP)
	ADDQ $4, DI
	CMPQ DI, rows+24(FP)
	JNE mrow
	VZEROUPPER
	RET
