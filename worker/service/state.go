package service

import (
	"errors"
	"fmt"
	"sync"
)

// State is a worker's lifecycle state as its heartbeats (wire.Heartbeat's
// state) and the plugin's health check report it.
type State uint8

// States, in the order a worker normally goes through them.
const (
	// Starting: no model loaded (also after a failed Load).
	Starting State = iota
	// Loading: a Load is in progress.
	Loading
	// Ready: a model is loaded and steps run.
	Ready
	// Draining: no new step or Load is accepted; the running one finishes.
	// Final, except that a worker may still fail while draining.
	Draining
	// Failed: a step outran its watchdog (a hung kernel cannot be
	// interrupted); the process is exiting. Final.
	Failed
)

var stateNames = [...]string{Starting: "starting", Loading: "loading", Ready: "ready", Draining: "draining", Failed: "failed"}

// String is the state's name on the wire.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// status is the worker's one state: the model's phase (Starting, Loading,
// Ready) and the two final conditions above it (draining, failed), each
// with its error. The reported State is derived from them, failed first:
// a worker that drains while a Load runs still knows the Load runs (a
// drain does not wait for it), and a Load that ends during a drain does
// not make the worker Ready again.
//
// It is read by the heartbeat ticker, the plugin's health check and the
// NATS callbacks, and written by the model goroutine, the step watchdog and
// control messages: every field is guarded by mu.
type status struct {
	mu       sync.Mutex
	phase    State  // Starting, Loading or Ready
	phaseErr string // why the last Load failed ("" when it did not)
	draining bool
	failed   bool
	failErr  string
}

// Report is the state and error to publish.
func (s *status) Report() (State, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.failed:
		return Failed, s.failErr
	case s.draining:
		return Draining, ""
	}
	return s.phase, s.phaseErr
}

// SetPhase records the model's phase and, for Starting, why the Load
// that left it there failed.
func (s *status) SetPhase(p State, err string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase, s.phaseErr = p, err
}

// Loading reports whether a Load is in progress.
func (s *status) Loading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase == Loading
}

// Drain marks the worker draining; it reports whether it was not yet.
func (s *status) Drain() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.draining
	s.draining = true
	return first
}

// Fail marks the worker failed with msg; it reports whether it was not
// yet (the first failure's message is kept).
func (s *status) Fail(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return false
	}
	s.failed, s.failErr = true, msg
	return true
}

// Failed reports whether the worker failed.
func (s *status) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// errDraining refuses work while draining.
var errDraining = errors.New("draining")

// Accepting is nil when new work (a step, a Load) may run, or why not.
func (s *status) Accepting() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.failed:
		return fmt.Errorf("worker failed: %s", s.failErr)
	case s.draining:
		return errDraining
	}
	return nil
}
