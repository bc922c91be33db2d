package engine

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/safetensors"
)

// golden is testdata/golden/<name>/expected.json, written by
// scripts/golden_model.py from Hugging Face transformers (float32, CPU,
// MXFP4 experts dequantized) for the checkpoint beside it.
type golden struct {
	Prompt        []int       `json:"prompt"`
	PrefillLogits [][]float32 `json:"prefill_logits"`
	DecodeTokens  []int       `json:"decode_tokens"`
	DecodeLogits  [][]float32 `json:"decode_logits"`
}

// goldenTolerance bounds |Δlogit| against transformers. Both sides compute
// in float32 from the same bf16/MXFP4 values; the difference is summation
// order and libm (exp, cos) rounding.
const goldenTolerance = 1e-4

type goldenModel struct {
	name string
	cfg  model.Config
	exp  golden
	m    *Model
	a    *Allocator
}

func loadGoldens(t *testing.T) []goldenModel {
	t.Helper()
	dirs, _ := filepath.Glob("testdata/golden/*/expected.json")
	if len(dirs) == 0 {
		t.Fatal("no golden data in testdata/golden (scripts/golden_model.py writes it)")
	}
	var out []goldenModel
	for _, f := range dirs {
		dir := filepath.Dir(f)
		cfg, err := model.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		set, err := safetensors.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { set.Close() })
		w, err := LoadWeights(cfg, set)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var g golden
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cache, err := NewKVCache(&cfg, 256, 0, 16)
		if err != nil {
			t.Fatal(err)
		}
		m, err := NewModel(w, cache)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, goldenModel{name: filepath.Base(dir), cfg: cfg, exp: g, m: m, a: NewAllocator(256)})
	}
	return out
}

func check(t *testing.T, what string, got, want []float32, worst *float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	d := maxDiff(got, want)
	*worst = math.Max(*worst, d)
	if d > goldenTolerance || math.IsNaN(d) {
		t.Fatalf("%s: max |Δlogit| = %g > %g", what, d, goldenTolerance)
	}
}

// TestGoldenTransformers: prefill logits at every prompt position, then
// greedy decoding over the paged cache, against transformers.
func TestGoldenTransformers(t *testing.T) {
	for _, g := range loadGoldens(t) {
		t.Run(g.name, func(t *testing.T) {
			worst := 0.0
			e := g.exp
			table, err := g.a.Grow(nil, len(e.Prompt)+len(e.DecodeTokens), 16)
			if err != nil {
				t.Fatal(err)
			}
			defer g.a.Free(table)
			out, err := g.m.Step([]Seq{{Tokens: e.Prompt, Blocks: table, AllLogits: true}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range e.PrefillLogits {
				check(t, "prefill position", out[0][i], e.PrefillLogits[i], &worst)
			}
			next := argmax(out[0][len(e.Prompt)-1])
			pos := len(e.Prompt)
			for i, want := range e.DecodeTokens {
				if next != want {
					t.Fatalf("greedy token %d: %d, transformers %d", i, next, want)
				}
				out, err = g.m.Step([]Seq{{Tokens: []int{next}, Pos: pos, Blocks: table}})
				if err != nil {
					t.Fatal(err)
				}
				pos++
				if i < len(e.DecodeLogits) {
					check(t, "decode step", out[0][0], e.DecodeLogits[i], &worst)
				}
				next = argmax(out[0][0])
			}
			t.Logf("%s: max |Δlogit| vs transformers %.3g over %d prefill rows and %d decode steps", g.name, worst, len(e.PrefillLogits), len(e.DecodeLogits))
		})
	}
}

// TestGoldenMixedBatch runs the prompt as chunked prefill in the same steps
// as a second sequence that decodes, and checks both against transformers.
func TestGoldenMixedBatch(t *testing.T) {
	for _, g := range loadGoldens(t) {
		t.Run(g.name, func(t *testing.T) {
			worst := 0.0
			e := g.exp
			n := len(e.Prompt)
			ta, _ := g.a.Grow(nil, n, 16)
			tb, _ := g.a.Grow(nil, n+len(e.DecodeTokens), 16)
			defer g.a.Free(ta)
			defer g.a.Free(tb)
			// b: whole prompt first, alone.
			out, err := g.m.Step([]Seq{{Tokens: e.Prompt, Blocks: tb}})
			if err != nil {
				t.Fatal(err)
			}
			nextB, posB := argmax(out[0][0]), n
			// a: prompt in chunks of 7 while b decodes.
			for lo, step := 0, 0; lo < n; lo, step = lo+7, step+1 {
				hi := min(lo+7, n)
				seqs := []Seq{{Tokens: e.Prompt[lo:hi], Pos: lo, Blocks: ta, AllLogits: true}}
				if step < len(e.DecodeTokens) {
					seqs = append(seqs, Seq{Tokens: []int{nextB}, Pos: posB, Blocks: tb})
				}
				out, err := g.m.Step(seqs)
				if err != nil {
					t.Fatal(err)
				}
				for i := range out[0] {
					check(t, "chunked prefill", out[0][i], e.PrefillLogits[lo+i], &worst)
				}
				if len(seqs) > 1 {
					if nextB != e.DecodeTokens[step] {
						t.Fatalf("b's greedy token %d: %d, want %d", step, nextB, e.DecodeTokens[step])
					}
					check(t, "decode in a mixed step", out[1][0], e.DecodeLogits[step], &worst)
					nextB, posB = argmax(out[1][0]), posB+1
				}
			}
			t.Logf("%s: max |Δlogit| %.3g", g.name, worst)
		})
	}
}
