package engine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionVectorExact: attention's vector loops must give exactly
// the scalar loops' bits (the exact kernels' promise), both as kernels on
// random data and through the golden models' prefill and decode.
func TestAttentionVectorExact(t *testing.T) {
	if !attnVector {
		t.Skip("no vector attention on this CPU")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{8, 16, 64, 136} {
		q := make([]float32, n)
		k := make([][]float32, 4)
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		for i := range k {
			k[i] = make([]float32, n)
			for j := range k[i] {
				k[i][j] = float32(rng.NormFloat64()) * 1e3
			}
		}
		var d [4]float32
		dot4Keys(&q[0], &k[0][0], &k[1][0], &k[2][0], &k[3][0], n, &d)
		for i := range k {
			if want := dot(q, k[i]); math.Float32bits(d[i]) != math.Float32bits(want) {
				t.Fatalf("n %d key %d: %v, dot %v", n, i, d[i], want)
			}
		}
		y, want := make([]float32, n), make([]float32, n)
		for i := range y {
			y[i] = float32(rng.NormFloat64())
			want[i] = y[i]
		}
		w := float32(rng.Float64())
		axpyAVX(w, &k[0][0], &y[0], n)
		for i := range want {
			want[i] += w * k[0][i]
			if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n %d axpy element %d: %v, want %v", n, i, y[i], want[i])
			}
		}
	}
	run := func(g goldenModel) [][]float32 {
		e := g.exp
		table, err := g.a.Grow(nil, len(e.Prompt)+4, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer g.a.Free(table)
		out, err := g.m.Step([]Seq{{Tokens: e.Prompt, Blocks: table, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		rows := append([][]float32(nil), out[0]...)
		for i := range rows {
			rows[i] = append([]float32(nil), rows[i]...)
		}
		next := argmax(rows[len(rows)-1])
		for pos := len(e.Prompt); pos < len(e.Prompt)+4; pos++ {
			out, err = g.m.Step([]Seq{{Tokens: []int{next}, Pos: pos, Blocks: table}})
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, append([]float32(nil), out[0][0]...))
			next = argmax(out[0][0])
		}
		return rows
	}
	defer func() { attnVector = true }()
	for _, g := range loadGoldens(t) {
		attnVector = true
		vec := run(g)
		attnVector = false
		scalar := run(g)
		for i := range vec {
			for j := range vec[i] {
				if math.Float32bits(vec[i][j]) != math.Float32bits(scalar[i][j]) {
					t.Fatalf("%s: row %d logit %d: vector %v, scalar %v", g.name, i, j, vec[i][j], scalar[i][j])
				}
			}
		}
	}
}
