package engine

import "golang.org/x/sys/cpu"

// useQ8 selects the int8 MXFP4 kernels where the fast kernels are asked
// for: they need AVX-512 (F, BW) and its VNNI dot products.
var useQ8 = useAVX512 && cpu.X86.HasAVX512VNNI

//go:noescape
func q8MXFP4Rows4(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)

//go:noescape
func q8MXFP4Rows1(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)

//go:noescape
func q8MXFP4Rows2(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int)
