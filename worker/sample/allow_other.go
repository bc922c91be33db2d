//go:build !amd64

package sample

func maskAVX2(dst, src *float32, allow *uint32, words int) {
	panic("unreachable")
}
