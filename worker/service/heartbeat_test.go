package service

import (
	"strings"
	"testing"
	"time"
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
