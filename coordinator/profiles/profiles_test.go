package profiles

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultProfiles(t *testing.T) {
	s, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Names(), ","); got != "balanced,latency_first,quality_first" {
		t.Fatalf("profiles %s", got)
	}
	lf, qf := s["latency_first"], s["quality_first"]
	if lf.Generation.ReasoningEffort != "low" || qf.Generation.ReasoningEffort != "high" {
		t.Fatal("reasoning effort defaults")
	}
	// The original test plan: 10000 max_tokens is refused under
	// latency_first, 300 is allowed under quality_first.
	if lf.Generation.MaxTokensCap >= 10000 || qf.Generation.MaxTokensCap < 300 {
		t.Fatal("caps do not match the test plan")
	}
	// A request without max_tokens gets the rest of the context up to the
	// cap: no built-in profile sets a smaller default, and each cap leaves
	// room for its effort's reasoning (docs/coordinator.md).
	for _, name := range s.Names() {
		g := s[name].Generation
		if g.MaxTokens != 0 {
			t.Errorf("%s: max_tokens %d: the built-in profiles leave it unset", name, g.MaxTokens)
		}
		if min := map[string]int{"low": 8192, "medium": 32768, "high": 131072}[g.ReasoningEffort]; g.MaxTokensCap < min {
			t.Errorf("%s: max_tokens_cap %d is too small for %s effort (want at least %d)", name, g.MaxTokensCap, g.ReasoningEffort, min)
		}
	}
	if lf.Scheduling.MaxBatch >= qf.Scheduling.MaxBatch || lf.Scheduling.QueueTimeout != 30*time.Second {
		t.Fatalf("scheduling %+v %+v", lf.Scheduling, qf.Scheduling)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown profile: %v", err)
	}
}

func TestBadFiles(t *testing.T) {
	want := map[string]string{
		"unknown-key.bad.yaml":      "field colour not found",
		"default-over-cap.bad.yaml": "max_tokens 30 must be within",
		"bad-effort.bad.yaml":       "reasoning_effort",
		"zero-queue.bad.yaml":       "queue_limit",
		"empty.bad.yaml":            "no profiles",
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(files) != len(want) {
		t.Fatalf("fixtures %v", files)
	}
	for _, f := range files {
		_, err := Load(f)
		if err == nil || !strings.Contains(err.Error(), want[filepath.Base(f)]) {
			t.Errorf("%s: %v, want %q", f, err, want[filepath.Base(f)])
		}
	}
}

// TestMaxTokensOptional: a profile's max_tokens may be left out (0) or set
// within the cap, never negative.
func TestMaxTokensOptional(t *testing.T) {
	doc := func(gen string) []byte {
		return []byte("profiles:\n  p:\n    generation: {reasoning_effort: low, max_tokens_cap: 20, temperature: 1, top_p: 1" + gen + "}\n" +
			"    scheduling: {max_batch: 1, prefill_chunk: 1, queue_limit: 1, queue_timeout: 1s}\n")
	}
	for gen, ok := range map[string]bool{"": true, ", max_tokens: 0": true, ", max_tokens: 20": true, ", max_tokens: -1": false, ", max_tokens: 21": false} {
		s, err := Parse(doc(gen))
		if (err == nil) != ok {
			t.Errorf("%q: %v", gen, err)
		}
		if err == nil && gen == "" && s["p"].Generation.MaxTokens != 0 {
			t.Errorf("absent max_tokens read as %d", s["p"].Generation.MaxTokens)
		}
	}
}
