package service

import (
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/shared/wire"
)

// Options.Validate applies shared/pprof's loopback rule: a bad flag fails
// the start-up.
func TestPprofAddrValidated(t *testing.T) {
	o := Options{NATSURL: "nats://127.0.0.1:4222", Deployment: "default", WorldSize: 1, WorkerID: "w", Heartbeat: time.Second,
		CoordinatorTimeout: time.Second, StepTimeout: time.Second, Backend: BackendCPU, GPUMemoryUtilization: 0.9, LoadFormat: LoadAuto}
	if err := o.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	o.PprofAddr = "0.0.0.0:6061"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--pprof-addr") {
		t.Errorf("Validate with pprof on every interface: %v", err)
	}
	o.PprofAddr = "127.0.0.1:6061"
	if err := o.Validate(); err != nil {
		t.Errorf("Validate with pprof on loopback: %v", err)
	}
}

// The heartbeat carries the steps' time and the device's memory as the
// model goroutine and the sampler last stored them.
func TestHeartbeatStepTimeAndMemory(t *testing.T) {
	w := newTestService(t, LoadDummy, time.Second)
	if h := w.heartbeatMsg(); h.StepNanos != 0 || h.LastStepNanos != 0 || h.MemoryTotal != 0 {
		t.Fatalf("fresh worker: %+v", h)
	}
	w.stepNanos.Add(uint64(30 * time.Millisecond))
	w.lastStepNanos.Store(uint64(10 * time.Millisecond))
	_, total, used := device()
	w.memTotal.Store(total)
	w.memUsed.Store(used)
	h := w.heartbeatMsg()
	if h.StepNanos != uint64(30*time.Millisecond) || h.LastStepNanos != uint64(10*time.Millisecond) {
		t.Errorf("step time %d, last %d", h.StepNanos, h.LastStepNanos)
	}
	if h.MemoryTotal != total || h.MemoryUsed != used || total == 0 {
		t.Errorf("memory %d of %d, want %d of %d (nonzero)", h.MemoryUsed, h.MemoryTotal, used, total)
	}
}

// The gap from a forward step's reply to the next forward step's start is
// idle time; release-only steps neither count nor end a gap.
func TestIdleBetweenForwardSteps(t *testing.T) {
	w := newTestService(t, LoadDummy, time.Second)
	forward := &wire.Step{StepId: 1, Seqs: []*wire.SeqStep{{Id: 1, Tokens: []int32{1}}}}
	w.doStep(job{kind: jobStep, step: forward}) // no reply subject: nothing is sent
	if w.idleNanos.Load() != 0 || w.lastStepEnd.Load() == 0 {
		t.Fatalf("after the first step: idle %d, end %d", w.idleNanos.Load(), w.lastStepEnd.Load())
	}
	time.Sleep(30 * time.Millisecond)
	w.doStep(job{kind: jobStep, step: &wire.Step{StepId: 2, Release: []uint64{9}}}) // release only
	if w.idleNanos.Load() != 0 {
		t.Fatalf("a release-only step counted idle time: %d", w.idleNanos.Load())
	}
	w.doStep(job{kind: jobStep, step: &wire.Step{StepId: 3, Seqs: forward.Seqs}})
	idle := time.Duration(w.heartbeatMsg().IdleNanos)
	if idle < 30*time.Millisecond || idle > time.Second {
		t.Fatalf("idle %v, want the 30ms gap", idle)
	}
}
