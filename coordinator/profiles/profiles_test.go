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
