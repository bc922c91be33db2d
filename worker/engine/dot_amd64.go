package engine

import "golang.org/x/sys/cpu"

// useAVX2 selects the vector kernels (AVX2 with FMA); the scalar Go ones
// remain the reference and the fallback.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotBF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotMXFP4AVX2(blocks *byte, scales *byte, x *float32, nb int) float32

//go:noescape
func dotBF16x4AVX2(w *uint16, x0, x1, x2, x3 *float32, n int, out *[4]float32)
