package api

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestSeededChoicesDiffer: n choices with a seed each get their own seed,
// derived from the request's seed and the choice's index, so they differ
// from each other, yet the whole response is reproducible, and choice 0
// is what the same request with n=1 gives (its seed is the request's).
func TestSeededChoicesDiffer(t *testing.T) {
	e := newEnv(t)
	for _, ep := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":200,"temperature":1,"seed":7,"n":%d}`},
		{"/v1/completions", `{"model":"gpt-oss-20b","prompt":"Tell me a story","max_tokens":200,"temperature":1,"seed":7,"n":%d}`},
	} {
		texts := func(n int) []string {
			t.Helper()
			resp, b := e.post(t, ep.path, fmt.Sprintf(ep.body, n))
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", ep.path, resp.StatusCode, b)
			}
			var r struct {
				Choices []struct {
					Index   int    `json:"index"`
					Text    string `json:"text"`
					Message struct {
						Content string `json:"content"`
					} `json:"message"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != n {
				t.Fatalf("%s: %v %s", ep.path, err, b)
			}
			out := make([]string, n)
			for _, c := range r.Choices {
				out[c.Index] = c.Text + c.Message.Content
			}
			return out
		}
		first := texts(4)
		distinct := map[string]bool{}
		for _, s := range first {
			distinct[s] = true
		}
		if len(distinct) < 2 {
			t.Errorf("%s: n=4 seed=7 gave four identical choices: %q", ep.path, first[0])
		}
		again := texts(4)
		for i := range first {
			if first[i] != again[i] {
				t.Errorf("%s: choice %d differs between two runs with seed 7:\n%q\n%q", ep.path, i, first[i], again[i])
			}
		}
		if one := texts(1); one[0] != first[0] {
			t.Errorf("%s: choice 0 of n=4 differs from the n=1 answer with the same seed:\n%q\n%q", ep.path, first[0], one[0])
		}
	}
}

// TestChoiceSeed: the derivation itself.
func TestChoiceSeed(t *testing.T) {
	for _, seed := range []int64{0, 7, -1, 1 << 62, -1 << 63} {
		if got := choiceSeed(seed, 0); got != seed {
			t.Fatalf("choice 0 of seed %d: %d", seed, got)
		}
		seen := map[int64]bool{seed: true}
		for i := 1; i < 64; i++ {
			s := choiceSeed(seed, i)
			if seen[s] {
				t.Fatalf("seed %d: choice %d repeats a seed (%d)", seed, i, s)
			}
			seen[s] = true
			if s != choiceSeed(seed, i) {
				t.Fatal("not deterministic")
			}
		}
	}
	// Neighbouring request seeds do not share choice seeds (choice 1 of
	// seed 7 is not seed 8).
	if choiceSeed(7, 1) == 8 || choiceSeed(7, 1) == choiceSeed(8, 1) {
		t.Fatal("choice seeds of neighbouring request seeds collide")
	}
}
