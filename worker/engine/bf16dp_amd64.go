package engine

import "golang.org/x/sys/cpu"

// useBF16DP selects the VDPBF16PS kernel of linearBF16DP (AVX-512 BF16, on
// top of the AVX-512 F and BW the other 512-bit kernels need); without it
// linearBF16DP computes the same thing with dotBF16DPRef.
var useBF16DP = useAVX512 && cpu.X86.HasAVX512BF16

//go:noescape
func dotBF16DPRows(w *uint16, wstride, rows, n int, x *uint16, xstride, ntok int, bias *float32, out *float32, ostride int)

//go:noescape
func cvtBF16AVX512(x *float32, dst *uint16, n int)
