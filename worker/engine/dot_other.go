//go:build !amd64

package engine

const (
	useAVX2   = false
	useAVX512 = false
)

func dotBF16AVX2(w *uint16, x *float32, n int) float32 { panic("unreachable") }

func dotMXFP4AVX2(blocks *byte, scales *byte, x *float32, nb int) float32 { panic("unreachable") }

func dotMXFP4RowsAVX2(blocks *byte, scales *byte, nb, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}

func dotBF16RowsAVX2(w *uint16, wstride, rows, n int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}

func dotBF16Rows64AVX2(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}

func dotBF16Rows64AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}

func dotBF16Rows64x4AVX512(w *uint16, wstride, rows int, x *float32, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}
