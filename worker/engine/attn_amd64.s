#include "textflag.h"

// Attention's inner loops, vectorised without changing a bit of the
// results (the exact path must stay bit-identical): SSE multiplies and
// adds round as Go's float32 ones do (Go does not fuse them on amd64 at
// GOAMD64=v1), so lane k of one 4-lane accumulator is exactly dot's s_k.

// func dot4Keys(q, k0, k1, k2, k3 *float32, n int, out *[4]float32)
// out[i] = dot(q[:n], ki[:n]) exactly as dot computes it, for n a
// positive multiple of 4: four independent chains, so four keys take the
// time one took.
TEXT ·dot4Keys(SB), NOSPLIT, $0-56
	MOVQ q+0(FP), SI
	MOVQ k0+8(FP), R8
	MOVQ k1+16(FP), R9
	MOVQ k2+24(FP), R10
	MOVQ k3+32(FP), R11
	MOVQ n+40(FP), CX
	MOVQ out+48(FP), DI
	XORPS X0, X0
	XORPS X1, X1
	XORPS X2, X2
	XORPS X3, X3
	XORQ AX, AX
loop:
	MOVUPS (SI)(AX*4), X8
	MOVUPS (R8)(AX*4), X4
	MULPS X8, X4
	ADDPS X4, X0
	MOVUPS (R9)(AX*4), X5
	MULPS X8, X5
	ADDPS X5, X1
	MOVUPS (R10)(AX*4), X6
	MULPS X8, X6
	ADDPS X6, X2
	MOVUPS (R11)(AX*4), X7
	MULPS X8, X7
	ADDPS X7, X3
	ADDQ $4, AX
	CMPQ AX, CX
	JLT loop
	// (s0+s1)+(s2+s3) for each key: HADDPS pairs lanes 0+1 and 2+3,
	// then adds the two pairs.
	HADDPS X1, X0           // X0 = k0(s0+s1, s2+s3), k1(s0+s1, s2+s3)
	HADDPS X3, X2           // X2 = the same for k2, k3
	HADDPS X2, X0           // X0 = k0, k1, k2, k3
	MOVUPS X0, (DI)
	RET

// func axpyAVX(w float32, x, y *float32, n int)
// y[i] += w·x[i] for i < n, a positive multiple of 8: each element's
// product and sum rounded separately, as the Go loop does.
TEXT ·axpyAVX(SB), NOSPLIT, $0-32
	VBROADCASTSS w+0(FP), Y0
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX
	XORQ AX, AX
aloop:
	VMULPS (SI)(AX*4), Y0, Y1
	VADDPS (DI)(AX*4), Y1, Y1
	VMOVUPS Y1, (DI)(AX*4)
	ADDQ $8, AX
	CMPQ AX, CX
	JLT aloop
	VZEROUPPER
	RET
