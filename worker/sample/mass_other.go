//go:build !amd64

package sample

const useAVX2 = false

func massHistF32AVX2(x *float32, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64) {
	panic("unreachable")
}

func massHistF64AVX2(a *float64, n int, k *massConsts, tbl *uint64, hist *[massBuckets]float64, buf *float64) {
	panic("unreachable")
}

func scanMaxAVX2(x *float32, n int, vals *[16]float32, idx *[16]int32) {
	panic("unreachable")
}
