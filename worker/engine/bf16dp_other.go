//go:build !amd64

package engine

const useBF16DP = false

func dotBF16DPRows(w *uint16, wstride, rows, n int, x *uint16, xstride, ntok int, bias *float32, out *float32, ostride int) {
	panic("unreachable")
}

func cvtBF16AVX512(x *float32, dst *uint16, n int) { panic("unreachable") }
