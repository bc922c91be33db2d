//go:build !amd64

package engine

var attnVector = false

func dot4Keys(q, k0, k1, k2, k3 *float32, n int, out *[4]float32) { panic("unreachable") }

func axpyAVX(w float32, x, y *float32, n int) { panic("unreachable") }
