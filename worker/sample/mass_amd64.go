package sample

import "golang.org/x/sys/cpu"

// useAVX2 selects the vector forms of massPass (AVX2 gathers and double
// arithmetic, no FMA), scanMax and maskLogits; the scalar code remains the reference
// and the fallback, and both give bit-identical results.
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func massHistF32AVX2(x *float32, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64)

//go:noescape
func massHistF64AVX2(a *float64, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64)

//go:noescape
func scanMaxAVX2(x *float32, n int, vals *[16]float32, idx *[16]int32)
