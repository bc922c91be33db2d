//go:build !amd64

package engine

const useAVX2 = false

func dotBF16AVX2(w *uint16, x *float32, n int) float32 { panic("unreachable") }

func dotMXFP4AVX2(blocks *byte, scales *byte, x *float32, nb int) float32 { panic("unreachable") }

func dotBF16x4AVX2(w *uint16, x0, x1, x2, x3 *float32, n int, out *[4]float32) { panic("unreachable") }
