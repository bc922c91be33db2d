// Command gpu-check is the one-command check of the CUDA backend on a
// device machine (bin/gpu-check, run by scripts/gpu-check): it compares
// every op of engine.Backend, the sampler, the tiny golden models end to
// end and one full-size 20b layer against the CPU reference on fresh
// random inputs, then benchmarks decode and prefill of dummy full-size
// 20b and 120b models against the copy-bandwidth roofline measured in the
// same run. Results go to gpu-check.json and gpu-check.txt.
//
// It is a binary of its own, built beside the product binaries but not
// into them (`make gpu-check`, or go build -o bin/gpu-check
// ./worker/gpucheck, with -ldflags "-X main.version=COMMIT"), so that
// the worker binary does not link its 4,000 lines of device checks.
//
// Usage:
//
//	gpu-check [--quick] [--only checks|bench] [--skip op,sampler,e2e,layer20b] [--seed N] [flags]
//
// gpu-check -h lists the flags; the exit status is 0 when every check
// passed, 1 when one failed or timed out, 2 when the check could not
// start, 3 when its watchdog (or SIGTERM, SIGINT) ended it.
//
// Device time is scarce (one short call), so the run is bounded: each
// phase has its own timeout inside a deadline for the whole run, the
// report is rewritten after every check so a killed run still leaves one,
// and a phase that overruns ends the run (a kernel that hangs leaves the
// device in an unknown state; later phases would only wait on it).
//
// The harness takes any Device: the tests run it with the CPU reference
// as the device under test, where every check must pass, and with a
// perturbed CPU backend, where the checks must fail.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gptoss/server/worker/engine"
)

// Options configures a run.
type Options struct {
	// Out is the directory for gpu-check.json and gpu-check.txt.
	Out string
	// Only selects "checks" or "bench"; "" runs both.
	Only string
	// Quick runs fewer sizes, fewer goldens, no 120b: a smoke test.
	Quick bool
	// Seed seeds every random input (default: the clock, so each run draws
	// fresh inputs; the report records it, and --seed repeats a run).
	Seed uint64
	// Golden is the directory of the golden checkpoints.
	Golden string
	// Kernels is the kernels library ("" searches: worker/cuda's Open).
	Kernels string
	// Device is the CUDA device index.
	Device int
	// Deadline bounds the whole run (default 7m: with the watchdog's 30 s
	// past it, under the 8 minutes a device call is planned for).
	Deadline time.Duration
	// No120b skips the 120b benchmark.
	No120b bool
	// DecodeSteps is the greedy decode steps of the end-to-end checks.
	DecodeSteps int
	// Skip names check groups not to run: op, sampler, e2e, layer20b.
	Skip []string
	// Args are the command line, for the report.
	Args []string
	// Open makes the device under test; nil opens the CUDA backend.
	Open func(o *Options) (Device, error)
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// defaultDeadline bounds a run: with the watchdog's 30 s after it, under
// the 8 minutes a device call is planned for.
const defaultDeadline = 7 * time.Minute

// phase limits: each phase's own timeout, cut to what is left of the
// deadline (minus reserve for writing the report).
var (
	limitOps     = 120 * time.Second
	limitSampler = 45 * time.Second
	limitE2E     = 90 * time.Second
	limitLayer   = 120 * time.Second
	limitCopy    = 30 * time.Second
	limitBench   = map[string]time.Duration{"20b": 120 * time.Second, "120b": 180 * time.Second}
	// minBench is the least time a model's benchmark is started with.
	minBench = map[string]time.Duration{"20b": 40 * time.Second, "120b": 70 * time.Second}
	reserve  = 5 * time.Second
)

// ErrSetup wraps failures to start at all (no library, no device, bad
// options): the check did not run.
var ErrSetup = errors.New("gpucheck: setup")

// runner holds a run's state.
type runner struct {
	o        Options
	rep      *Report
	dev      Device
	deadline time.Time
	log      io.Writer
	// stuck is set when a phase overran: the device may still be busy
	// with it, so nothing else is started.
	stuck bool
}

// Run runs the checks and benchmarks that o selects and returns the
// report (also written to o.Out). The error is non-nil only when the run
// could not start (wrapping ErrSetup); failed checks are in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Deadline <= 0 {
		o.Deadline = defaultDeadline
	}
	if o.DecodeSteps <= 0 {
		o.DecodeSteps = 32
		if o.Quick {
			o.DecodeSteps = 8
		}
	}
	if o.Golden == "" {
		o.Golden = "worker/engine/testdata/golden"
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Open == nil {
		o.Open = openCUDA
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	r := &runner{o: o, log: log, deadline: time.Now().Add(o.Deadline)}
	r.rep = &Report{Started: time.Now(), Commit: commit(), Seed: o.Seed, Args: o.Args,
		Tolerance: map[string]Tolerance{"exact": tolExact, "fp32": tolFP32, "bf16": tolBF16, "bf16x2": tolBF16x2,
			"bf16_exact_inputs": tolAcc}}
	hostInfo(&r.rep.Machine)
	fmt.Fprintf(log, "gpu-check: seed %d, commit %s, deadline %s\n", o.Seed, r.rep.Commit, o.Deadline)
	switch o.Only {
	case "", "checks", "bench":
	default:
		return r.fail(fmt.Errorf("%w: --only %q: want checks or bench", ErrSetup, o.Only))
	}

	dev, err := o.Open(&o)
	if err != nil {
		return r.fail(fmt.Errorf("%w: %w", ErrSetup, err))
	}
	r.dev = dev
	defer func() {
		// Closing waits for the device; after a phase overran it may never
		// be idle again, and the process is about to exit anyway.
		if !r.stuck {
			dev.Close()
		}
	}()
	r.rep.Device = dev.Name()
	info := dev.Info()
	m := &r.rep.Machine
	if info.Name != "" && info.Name != "cpu" {
		m.GPU = info.Name
	}
	if info.Major > 0 {
		m.Capability = fmt.Sprintf("%d%d", info.Major, info.Minor)
	}
	m.SMs, m.MemTotal = info.SMs, info.MemTotal
	if free, total, err := dev.MemInfo(); err == nil {
		m.MemFree = free
		if m.MemTotal == 0 {
			m.MemTotal = total
		}
	}
	fmt.Fprintf(log, "gpu-check: device %s %s\n", dev.Name(), m.GPU)
	r.save()

	if o.Only != "bench" {
		r.checks(ctx)
	}
	if o.Only != "checks" {
		r.bench(ctx)
	}
	r.rep.finish()
	r.save()
	return r.rep, nil
}

// fail records a run-level error and writes the report.
func (r *runner) fail(err error) (*Report, error) {
	r.rep.Error = err.Error()
	r.rep.finish()
	r.save()
	return r.rep, err
}

// save writes the report; a failure to write is logged (the run goes on:
// the table still reaches stdout).
func (r *runner) save() {
	if r.o.Out == "" {
		return
	}
	if err := r.rep.write(r.o.Out); err != nil {
		fmt.Fprintln(r.log, "gpu-check:", err)
	}
}

// report adds a check to the report, logs it and saves.
func (r *runner) report(c Check) {
	r.rep.add(c)
	line := fmt.Sprintf("%-8s %-55s %-7s %6.1fs", c.Group, c.Name, strings.ToUpper(c.Status), c.Seconds)
	if c.Diff != nil {
		line += fmt.Sprintf("  relL2 %.2e  maxabs %.2e", c.Diff.RelL2, c.Diff.MaxAbs)
	}
	if c.Detail != "" {
		line += "  " + c.Detail
	}
	fmt.Fprintln(r.log, line)
	r.save()
}

// skipped reports (and records) a group the options leave out.
func (r *runner) skipped(group string) bool {
	if !slices.Contains(r.o.Skip, group) {
		return false
	}
	r.report(Check{Group: group, Name: group + " checks", Status: Skip, Detail: "--skip"})
	return true
}

// phase runs f with its own timeout (limit, cut to the deadline). It
// returns false when the phase could not finish: out of time before it
// started (reported as skipped) or overrun (reported as a timeout; the run
// then stops starting device work).
func (r *runner) phase(ctx context.Context, group, name string, limit time.Duration, f func(ctx context.Context)) bool {
	if r.stuck {
		r.report(Check{Group: group, Name: name, Status: Skip, Detail: "an earlier phase overran: device state unknown"})
		return false
	}
	left := time.Until(r.deadline) - reserve
	if left < limit {
		limit = left
	}
	if limit <= 0 {
		r.report(Check{Group: group, Name: name, Status: Skip, Detail: "out of time (--deadline)"})
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				r.report(Check{Group: group, Name: name, Status: Error, Detail: fmt.Sprintf("panic: %v", p)})
			}
		}()
		f(pctx)
	}()
	select {
	case <-done:
		return true
	case <-pctx.Done():
	}
	// The phase checks its context between cases; give it a moment to
	// notice and return cleanly before declaring it stuck.
	select {
	case <-done:
		return true
	case <-time.After(3 * time.Second):
	}
	r.stuck = true
	r.rep.mu.Lock()
	r.rep.Error = fmt.Sprintf("phase %q ran past its %s limit: device state unknown, later phases skipped", name, limit.Round(time.Second))
	r.rep.mu.Unlock()
	r.report(Check{Group: group, Name: name, Status: Timeout, Seconds: limit.Seconds(), Detail: "phase overran its limit"})
	return false
}

// rng returns the generator of one phase, derived from the run's seed so
// that --seed repeats a run exactly.
func (r *runner) rng(phase uint64) *rand.Rand {
	return rand.New(rand.NewPCG(r.o.Seed, phase))
}

// checks runs the correctness phases.
func (r *runner) checks(ctx context.Context) {
	// Op checks and the sampler share one small model on each side.
	cfg := opConfig()
	w, err := fastDummy(cfg, r.o.Seed, cfg.Layers)
	if err == nil {
		w, err = cpuReady(w)
	}
	if err != nil {
		r.report(Check{Group: "op", Name: "small dummy model", Status: Error, Detail: err.Error()})
		return
	}
	ref, err := (cpuDevice{}).Backend(w, opKV)
	if err != nil {
		r.report(Check{Group: "op", Name: "cpu backend", Status: Error, Detail: err.Error()})
		return
	}
	skipOps, skipSampler := r.skipped("op"), r.skipped("sampler")
	if skipOps && skipSampler {
		// nothing needs the small model on the device
	} else if dut, err := r.opBackend(w); err != nil {
		r.report(Check{Group: "op", Name: r.dev.Name() + " backend (small model)", Status: Error, Detail: err.Error()})
	} else {
		if !skipOps {
			r.phase(ctx, "op", "op checks", limitOps, func(ctx context.Context) {
				runOps(ctx, ref, dut, r.rng(1), r.o.Quick, r.report)
			})
		}
		if !skipSampler {
			r.phase(ctx, "sampler", "sampler checks", limitSampler, func(ctx context.Context) {
				runSampler(ctx, r.dev, dut, r.rng(2), r.o.Quick, r.report)
			})
		}
		if !r.stuck {
			if err := closeBackend(dut); err != nil {
				r.report(Check{Group: "op", Name: "close backend", Status: Error, Detail: err.Error()})
			}
		}
	}
	if !r.skipped("e2e") {
		r.phase(ctx, "e2e", "golden models", limitE2E, func(ctx context.Context) {
			runGolden(ctx, r.dev, r.o.Golden, r.o.DecodeSteps, r.o.Quick, r.rng(3), r.report)
		})
	}
	if r.skipped("layer20b") {
		return
	}
	r.phase(ctx, "layer20b", "one full-size 20b layer", limitLayer, func(ctx context.Context) {
		start := now()
		steps := 4
		if r.o.Quick {
			steps = 2
		}
		c := runFullLayer(r.dev, layer20b(), r.o.Seed, steps, true)
		c.Group, c.Name, c.Seconds = "layer20b", fmt.Sprintf("20b layer: prefill 40+5, %d decode steps", steps), since(start)
		r.report(c)
	})
}

// opBackender is a device that makes the op checks' backend its own way
// (the CUDA device joins a one-rank NCCL communicator); ncclErr says why
// it could not, in which case the backend runs without one.
type opBackender interface {
	opBackend(w *engine.Weights, spec Spec) (b engine.Backend, ncclErr, err error)
}

// opBackend makes the op checks' device backend, reporting whether the
// collectives go through NCCL.
func (r *runner) opBackend(w *engine.Weights) (engine.Backend, error) {
	ob, ok := r.dev.(opBackender)
	if !ok {
		return r.dev.Backend(w, opKV)
	}
	start := now()
	b, ncclErr, err := ob.opBackend(w, opKV)
	if err != nil {
		return nil, err
	}
	c := Check{Group: "op", Name: "one-rank NCCL communicator", Status: Pass, Seconds: since(start)}
	if ncclErr != nil {
		c.Status, c.Detail = Fail, ncclErr.Error()+" (the collectives below run without NCCL)"
	}
	r.report(c)
	return b, nil
}

// bench runs the benchmarks.
func (r *runner) bench(ctx context.Context) {
	p := defaultPlan(r.o.Quick, r.o.Seed)
	b := &Bench{}
	r.rep.mu.Lock()
	r.rep.Bench = b
	r.rep.mu.Unlock()
	r.phase(ctx, "bench", "copy bandwidth", limitCopy, func(context.Context) {
		err := copyBench(r.dev, p, b)
		fmt.Fprintf(r.log, "bench: copy %.0f GB/s %v %s\n", b.CopyGBps, roundAll(b.CopyRuns), b.CopyError)
		if err != nil && !errors.Is(err, ErrUnsupported) {
			r.report(Check{Group: "bench", Name: "copy bandwidth", Status: Error, Detail: b.CopyError})
		}
		r.save()
	})
	for _, name := range p.models {
		if name == "120b" && r.o.No120b {
			b.Models = append(b.Models, &ModelBench{Model: name, Status: Skip, Detail: "--no-120b"})
			continue
		}
		if left := time.Until(r.deadline) - reserve; left < minBench[name] {
			b.Models = append(b.Models, &ModelBench{Model: name, Status: Skip,
				Detail: fmt.Sprintf("%s left of the deadline, %s needed", left.Round(time.Second), minBench[name])})
			r.save()
			continue
		}
		ok := r.phase(ctx, "bench", "bench "+name, limitBench[name], func(ctx context.Context) {
			mb := benchModel(ctx, r.dev, name, p, b.CopyGBps, r.log)
			r.rep.mu.Lock()
			b.Models = append(b.Models, mb)
			r.rep.mu.Unlock()
			// A benchmark that broke (a load or a step failed) is a failure
			// of the run, not a number: it goes into the checks too.
			if mb.Status == Error || mb.Status == Timeout {
				r.report(Check{Group: "bench", Name: "bench " + name, Status: mb.Status, Detail: mb.Detail})
			}
			r.save()
		})
		if !ok {
			break
		}
	}
}

func main() {
	os.Exit(Main(os.Args[1:]))
}

// Main is the gpu-check command (bin/gpu-check ARGS): it parses args,
// runs, prints the table and returns the exit status: 0 when every check
// passed, 1 when a check failed or timed out, 2 when it could not start
// (bad flags, no kernels library, no device).
func Main(args []string) int {
	return mainWith(args, os.Stdout, os.Stderr, nil)
}

// mainWith is Main with its outputs and device opener given (tests).
func mainWith(args []string, stdout, stderr io.Writer, open func(o *Options) (Device, error)) int {
	fs := flag.NewFlagSet("gpu-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	defOut := os.Getenv("OUT")
	if defOut == "" {
		defOut = "/tmp/gpu-check"
	}
	fs.StringVar(&o.Out, "out", defOut, "directory for gpu-check.json and gpu-check.txt (default $OUT, else /tmp/gpu-check)")
	fs.StringVar(&o.Only, "only", "", "run only the correctness \"checks\" or only the \"bench\"")
	fs.BoolVar(&o.Quick, "quick", false, "smoke test: fewer sizes and goldens, no 120b")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed of the inputs (default: from the clock; the report records it)")
	fs.StringVar(&o.Golden, "golden", "worker/engine/testdata/golden", "directory of the golden checkpoints")
	fs.StringVar(&o.Kernels, "kernels", "", "kernels library (default: $GPTOSS_KERNELS, else build/ or bin/ by the executable or the checkout)")
	fs.IntVar(&o.Device, "device", 0, "CUDA device index")
	fs.DurationVar(&o.Deadline, "deadline", defaultDeadline, "bound on the whole run (a watchdog ends it 30 s later)")
	fs.BoolVar(&o.No120b, "no-120b", false, "skip the 120b benchmark")
	fs.IntVar(&o.DecodeSteps, "decode-steps", 0, "greedy decode steps of the end-to-end checks (default 32, quick 8)")
	skip := fs.String("skip", "", "comma-separated check groups not to run: op, sampler, e2e, layer20b")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: gpu-check [flags]\n\nChecks the CUDA backend against the CPU reference and benchmarks it; writes gpu-check.json and gpu-check.txt.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gpu-check: unexpected arguments %q\n", fs.Args())
		return 2
	}
	o.Args, o.Open, o.Log = args, open, stderr
	for _, g := range strings.Split(*skip, ",") {
		if g = strings.TrimSpace(g); g != "" {
			o.Skip = append(o.Skip, g)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A run that ignores its deadline (a hung kernel, a call that never
	// returns) is ended by this watchdog, and so is one sent SIGTERM (by
	// timeout(1)); the report on disk is the one written after the last
	// finished check.
	done := make(chan struct{})
	defer close(done)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sig)
		grace := time.NewTimer(o.Deadline + 30*time.Second)
		defer grace.Stop()
		why := ""
		select {
		case <-done:
			return
		case s := <-sig:
			why = "terminated by " + s.String()
		case <-grace.C:
			why = "watchdog: the run outlived its deadline by 30 s"
		}
		fmt.Fprintln(stderr, "gpu-check:", why)
		fmt.Fprintf(stderr, "gpu-check: partial results are in %s\n", o.Out)
		os.Exit(3)
	}()
	rep, err := Run(ctx, o)
	if rep != nil {
		rep.table(stdout)
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "gpu-check:", err)
		return 2
	case rep.Failed() > 0 || !rep.Pass:
		return 1
	}
	return 0
}

func now() time.Time            { return time.Now() }
func since(t time.Time) float64 { return time.Since(t).Seconds() }
