#include "textflag.h"

// The Go assembler does not know the AVX512_BF16 instructions, so each
// macro below is one of them, register to register, in the bytes GNU as
// gives (EVEX.512.F3.0F38.W0 52 /r is VDPBF16PS, 72 /r VCVTNEPS2BF16):
// register operands only, so no base register or compressed displacement
// needs encoding by hand. In Go operand order, VDPBF16PS x, w, acc adds
// to each float32 lane of acc the products of its pair of bf16 in w and x.
// dotBF16DPRows's accumulator for row r (weights in Z8+r) and token t (x
// in Z10+t) is Z(2t+r).

// VDPBF16PS Z10, Z8, Z0 (vdpbf16ps %zmm10,%zmm8,%zmm0): row 0, token 0
#define DP_Z0_Z8_Z10 BYTE $0x62; BYTE $0xd2; BYTE $0x3e; BYTE $0x48; BYTE $0x52; BYTE $0xc2
// VDPBF16PS Z10, Z9, Z1 (vdpbf16ps %zmm10,%zmm9,%zmm1): row 1, token 0
#define DP_Z1_Z9_Z10 BYTE $0x62; BYTE $0xd2; BYTE $0x36; BYTE $0x48; BYTE $0x52; BYTE $0xca
// VDPBF16PS Z11, Z8, Z2 (vdpbf16ps %zmm11,%zmm8,%zmm2): row 0, token 1
#define DP_Z2_Z8_Z11 BYTE $0x62; BYTE $0xd2; BYTE $0x3e; BYTE $0x48; BYTE $0x52; BYTE $0xd3
// VDPBF16PS Z11, Z9, Z3 (vdpbf16ps %zmm11,%zmm9,%zmm3): row 1, token 1
#define DP_Z3_Z9_Z11 BYTE $0x62; BYTE $0xd2; BYTE $0x36; BYTE $0x48; BYTE $0x52; BYTE $0xdb
// VDPBF16PS Z12, Z8, Z4 (vdpbf16ps %zmm12,%zmm8,%zmm4): row 0, token 2
#define DP_Z4_Z8_Z12 BYTE $0x62; BYTE $0xd2; BYTE $0x3e; BYTE $0x48; BYTE $0x52; BYTE $0xe4
// VDPBF16PS Z12, Z9, Z5 (vdpbf16ps %zmm12,%zmm9,%zmm5): row 1, token 2
#define DP_Z5_Z9_Z12 BYTE $0x62; BYTE $0xd2; BYTE $0x36; BYTE $0x48; BYTE $0x52; BYTE $0xec
// VDPBF16PS Z13, Z8, Z6 (vdpbf16ps %zmm13,%zmm8,%zmm6): row 0, token 3
#define DP_Z6_Z8_Z13 BYTE $0x62; BYTE $0xd2; BYTE $0x3e; BYTE $0x48; BYTE $0x52; BYTE $0xf5
// VDPBF16PS Z13, Z9, Z7 (vdpbf16ps %zmm13,%zmm9,%zmm7): row 1, token 3
#define DP_Z7_Z9_Z13 BYTE $0x62; BYTE $0xd2; BYTE $0x36; BYTE $0x48; BYTE $0x52; BYTE $0xfd
// VCVTNEPS2BF16 Z0, Y1 (vcvtneps2bf16 %zmm0,%ymm1): 16 float32 to bf16
#define CVT_Y1_Z0 BYTE $0x62; BYTE $0xf2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc8

// REDUCE(z, y, x) sums the 16 lanes of z into the low lane of x, as
// dotBF16DPRef does: lane j + lane j+8, then j + j+4, then two horizontal
// additions, (0+1) + (2+3). Y8 is scratch.
#define REDUCE(z, y, x) \
	VEXTRACTF64X4 $1, z, Y8; \
	VADDPS Y8, y, y; \
	VEXTRACTF128 $1, y, X8; \
	VADDPS X8, x, x; \
	VHADDPS x, x, x; \
	VHADDPS x, x, x

// STORE(z, y, x, b, dst) stores z's sum (REDUCE) plus the bias in b at dst.
#define STORE(z, y, x, b, dst) \
	REDUCE(z, y, x); \
	VADDSS b, x, x; \
	VMOVSS x, dst

// func dotBF16DPRows(w *uint16, wstride, rows, n int, x *uint16, xstride, ntok int, bias *float32, out *float32, ostride int)
// out[t·ostride + r] = Σi w[r·wstride + i]·x[t·xstride + i] + bias[r] (+0
// when bias is nil) for r < rows (> 0), t < ntok (> 0), w and x bf16, n a
// positive multiple of 32, strides in elements. Each (row, token) has one
// accumulator whose lane j takes, 32 elements at a time, the pair (2j,
// 2j+1) by VDPBF16PS, then REDUCE and the bias: the same instructions
// whether the token is one of four or alone, or its row one of a pair or
// alone, so the result does not depend on which tokens share a step (and
// is dotBF16DPRef's). Rows go two at a time, p and p+h for h = ⌈rows/2⌉
// (with an odd number the last p has no partner and is paired with
// itself: computed twice, stored twice), so that the weights come in as
// two long sequential streams, which the hardware prefetchers follow
// (pairs of adjacent rows, a new pair of short streams every two rows,
// read from memory at half the speed). For each pair, tokens go four at a
// time, each load of the two rows' weights serving eight accumulators:
// eight independent VDPBF16PS chains, enough to hide the instruction's
// latency; then the other tokens one at a time, two chains, which keep up
// with memory for the decode step's single token. The loops index every
// row and token from its end with AX running from −2n to 0.
TEXT ·dotBF16DPRows(SB), NOSPLIT, $32-80
	MOVQ w+0(FP), SI
	MOVQ n+24(FP), CX
	SHLQ $1, CX             // bytes of a row
	MOVQ wstride+8(FP), AX
	SHLQ $1, AX
	MOVQ AX, wstride+8(FP)  // now in bytes
	MOVQ xstride+40(FP), AX
	SHLQ $1, AX
	MOVQ AX, xstride+40(FP) // now in bytes
	MOVQ ostride+72(FP), AX
	SHLQ $2, AX
	MOVQ AX, ostride+72(FP) // now in bytes
	MOVQ bias+56(FP), DX
	MOVQ out+64(FP), DI
	MOVQ rows+16(FP), R15
	INCQ R15
	SHRQ $1, R15            // h, then the pairs left
	MOVQ R15, AX
	SHLQ $2, AX
	MOVQ AX, 0(SP)          // row p+h's offset in out and bias
	MOVQ wstride+8(FP), AX
	IMULQ R15, AX
	MOVQ AX, 16(SP)         // and in w

pair:
	MOVQ 0(SP), AX
	MOVQ 16(SP), BX
	CMPQ R15, $1
	JNE two
	MOVQ rows+16(FP), R8
	TESTQ $1, R8
	JZ two
	XORQ AX, AX             // the middle row of an odd number, alone
	XORQ BX, BX
two:
	MOVQ AX, 24(SP)         // row 1's offset in out and bias
	VXORPS X14, X14, X14    // bias of row 0
	VXORPS X15, X15, X15    // bias of row 1
	TESTQ DX, DX
	JZ nobias
	VMOVSS (DX), X14
	VMOVSS (DX)(AX*1), X15
nobias:
	LEAQ (SI)(CX*1), R9     // end of row 0
	LEAQ (R9)(BX*1), R10    // end of row 1
	MOVQ x+32(FP), BX       // x of the next token
	MOVQ DI, R8             // out of the next token, row 0
	MOVQ ntok+48(FP), AX
	MOVQ AX, 8(SP)          // tokens left

four:
	CMPQ 8(SP), $4
	JLT one
	MOVQ xstride+40(FP), AX
	LEAQ (BX)(CX*1), R11    // ends of the four tokens' x
	LEAQ (R11)(AX*1), R12
	LEAQ (R12)(AX*1), R13
	LEAQ (R13)(AX*1), R14
	LEAQ (BX)(AX*4), BX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	MOVQ CX, AX
	NEGQ AX
loop4:
	VMOVDQU32 (R9)(AX*1), Z8
	VMOVDQU32 (R10)(AX*1), Z9
	VMOVDQU32 (R11)(AX*1), Z10
	VMOVDQU32 (R12)(AX*1), Z11
	VMOVDQU32 (R13)(AX*1), Z12
	VMOVDQU32 (R14)(AX*1), Z13
	DP_Z0_Z8_Z10
	DP_Z1_Z9_Z10
	DP_Z2_Z8_Z11
	DP_Z3_Z9_Z11
	DP_Z4_Z8_Z12
	DP_Z5_Z9_Z12
	DP_Z6_Z8_Z13
	DP_Z7_Z9_Z13
	ADDQ $64, AX
	JNZ loop4
	MOVQ 24(SP), AX
	MOVQ ostride+72(FP), R11
	STORE(Z0, Y0, X0, X14, (R8))
	STORE(Z1, Y1, X1, X15, (R8)(AX*1))
	ADDQ R11, R8
	STORE(Z2, Y2, X2, X14, (R8))
	STORE(Z3, Y3, X3, X15, (R8)(AX*1))
	ADDQ R11, R8
	STORE(Z4, Y4, X4, X14, (R8))
	STORE(Z5, Y5, X5, X15, (R8)(AX*1))
	ADDQ R11, R8
	STORE(Z6, Y6, X6, X14, (R8))
	STORE(Z7, Y7, X7, X15, (R8)(AX*1))
	ADDQ R11, R8
	SUBQ $4, 8(SP)
	JMP four

one:
	CMPQ 8(SP), $0
	JEQ pairdone
	LEAQ (BX)(CX*1), R11    // end of the token's x
	ADDQ xstride+40(FP), BX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	MOVQ CX, AX
	NEGQ AX
loop1:
	VMOVDQU32 (R9)(AX*1), Z8
	VMOVDQU32 (R10)(AX*1), Z9
	VMOVDQU32 (R11)(AX*1), Z10
	DP_Z0_Z8_Z10
	DP_Z1_Z9_Z10
	ADDQ $64, AX
	JNZ loop1
	MOVQ 24(SP), AX
	STORE(Z0, Y0, X0, X14, (R8))
	STORE(Z1, Y1, X1, X15, (R8)(AX*1))
	ADDQ ostride+72(FP), R8
	DECQ 8(SP)
	JMP one

pairdone:
	ADDQ wstride+8(FP), SI
	ADDQ $4, DI
	TESTQ DX, DX
	JZ 2(PC)
	ADDQ $4, DX
	DECQ R15
	JNZ pair
	VZEROUPPER
	RET

// func cvtBF16AVX512(x *float32, dst *uint16, n int)
// dst[i] = x[i] rounded to bf16 by VCVTNEPS2BF16 (toBF16RNE's rounding) for
// i < n, a positive multiple of 16.
TEXT ·cvtBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ dst+8(FP), DI
	MOVQ n+16(FP), CX
cvt:
	VMOVUPS (SI), Z0
	CVT_Y1_Z0
	VMOVDQU Y1, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	SUBQ $16, CX
	JNZ cvt
	VZEROUPPER
	RET
