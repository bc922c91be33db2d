package engine

// attnVector selects attention's vector loops (a variable so that the
// tests can compare them with the scalar ones, bit for bit).
var attnVector = useAVX2

//go:noescape
func dot4Keys(q, k0, k1, k2, k3 *float32, n int, out *[4]float32)

//go:noescape
func axpyAVX(w float32, x, y *float32, n int)
