package service

import (
	"errors"
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	var s status
	want := func(what string, st State, err string) {
		t.Helper()
		if g, e := s.Report(); g != st || e != err {
			t.Fatalf("%s: %s %q, want %s %q", what, g, e, st, err)
		}
	}
	want("new", Starting, "")
	if s.Accepting() != nil || s.Loading() {
		t.Fatal("a new worker refuses work or is loading")
	}
	s.SetPhase(Loading, "")
	want("loading", Loading, "")
	s.SetPhase(Starting, "load: no such file")
	want("failed load", Starting, "load: no such file")
	s.SetPhase(Loading, "")
	if !s.Drain() || s.Drain() {
		t.Fatal("Drain does not report the first call only")
	}
	// Draining hides the phase but keeps it: a drain does not wait for a
	// Load in progress, and a Load that ends does not undo the drain.
	want("draining while loading", Draining, "")
	if !s.Loading() || !errors.Is(s.Accepting(), errDraining) {
		t.Fatalf("loading %v, accepting %v", s.Loading(), s.Accepting())
	}
	s.SetPhase(Ready, "")
	want("load done while draining", Draining, "")
	if !s.Fail("step 3 ran 2m") || s.Fail("again") || !s.Failed() {
		t.Fatal("Fail does not report the first call only")
	}
	want("failed", Failed, "step 3 ran 2m")
	if err := s.Accepting(); err == nil || !strings.Contains(err.Error(), "step 3 ran 2m") {
		t.Fatalf("accepting after failure: %v", err)
	}
	for st, name := range map[State]string{Starting: "starting", Loading: "loading", Ready: "ready", Draining: "draining", Failed: "failed", 9: "state(9)"} {
		if st.String() != name {
			t.Errorf("%d: %q, want %q", st, st.String(), name)
		}
	}
}
