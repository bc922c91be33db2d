package engine

import "golang.org/x/sys/cpu"

// useAVX2 selects the vector kernels (AVX2 with FMA); the scalar Go ones
// remain the reference and the fallback.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// useAVX512 selects, on top of useAVX2, the 512-bit form of the rows-of-64
// kernel; it computes exactly what the AVX2 one does.
var useAVX512 = useAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func dotBF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotMXFP4AVX2(blocks *byte, scales *byte, x *float32, nb int) float32

//go:noescape
func dotMXFP4RowsAVX2(blocks *byte, scales *byte, nb, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)

//go:noescape
func dotBF16RowsAVX2(w *uint16, wstride, rows, n int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)

//go:noescape
func dotBF16Rows64AVX2(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)

//go:noescape
func dotBF16Rows64AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)

//go:noescape
func dotBF16Rows64x4AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int)
