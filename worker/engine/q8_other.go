//go:build !amd64

package engine

const useQ8 = false

func q8MXFP4Rows4(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int) {
	panic("unreachable")
}

func q8MXFP4Rows1(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int) {
	panic("unreachable")
}

func q8MXFP4Rows2(blocks, scales *byte, nb, rows int, xq *int8, xd, ds, bias, out *float32, ostride int) {
	panic("unreachable")
}
