// Package service is the worker's NATS service: it registers with the
// coordinator of its deployment, heartbeats, loads its shard of the model
// when told to and runs the forward steps the coordinator broadcasts,
// replying with the sampled tokens (rank 0). It ends when the coordinator
// goes away, when its parent dies, on a "shutdown" control message, when
// the plugin host asks, and on a signal.
//
// One goroutine, the model goroutine, owns the model: NATS callbacks only
// decode messages and queue jobs for it, so a slow step never blocks the
// connection, and the step watchdog, heartbeats and control messages keep
// working while a step runs. The worker's lifecycle is one typed state
// (state.go).
//
// worker/main.go only turns flags into Options and calls Run; tests and
// other hosts can run a Service in process.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/pprof"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/collective"
	"github.com/gptoss/server/worker/cuda"
	"github.com/gptoss/server/worker/local"
	"github.com/gptoss/server/worker/safetensors"
)

// queueDepth bounds the jobs waiting for the model goroutine. The
// coordinator waits for each step's reply before sending the next, so one
// is the usual depth; a full queue is answered "busy".
const queueDepth = 64

type jobKind int

const (
	jobStep jobKind = iota
	jobLoad
)

// job is one unit of work for the model goroutine.
type job struct {
	kind  jobKind
	step  *wire.Step
	load  *wire.Load
	reply string
}

// exitReq asks Run to end.
type exitReq struct {
	code   int
	drain  bool // finish the running step first
	reason string
}

// Service is one worker: its NATS connection, its state and its model.
type Service struct {
	opts  Options
	log   *zap.Logger
	subj  wire.Subjects
	nc    *nats.Conn
	start time.Time

	jobs chan job
	quit chan exitReq

	st status // the lifecycle state (state.go)

	steps      atomic.Uint64
	closing    atomic.Bool  // the service is closing its connection: its errors are expected
	connWarned atomic.Bool  // a failed connection attempt was logged
	lastCoord  atomic.Int64 // time.Since(start)+1 of the last coordinator heartbeat; 0: none yet
	fatalOnce  sync.Once

	// runMu is held by the model goroutine while it runs a job; the state
	// is checked under it, so that once a drain has marked the state and
	// taken runMu, no step runs again.
	runMu sync.Mutex

	// sequences is how many sequences the executor holds state for, as of
	// the last step or load, for heartbeats (leak checks).
	sequences atomic.Int32

	// stepNanos is the time of the steps counted in steps, lastStepNanos
	// the last one's, for the heartbeats (the per-worker metrics).
	stepNanos, lastStepNanos atomic.Uint64
	// idleNanos sums the gaps from a forward step's reply to the next
	// forward step's start (lastStepEnd, unix nanoseconds; 0: none yet).
	idleNanos   atomic.Uint64
	lastStepEnd atomic.Int64

	// memTotal and memUsed are the device's memory as last sampled
	// (sampleMemory), for the heartbeats; 0 until the first sample.
	memTotal, memUsed atomic.Uint64

	// loadSet is the checkpoint of the Load in progress, once open, for
	// the heartbeats' progress (progress.go); nil otherwise.
	loadSet atomic.Pointer[safetensors.Set]

	// Owned by the model goroutine.
	set     *safetensors.Set
	coll    *collective.NATS // joins the ranks when the world size is above 1
	gpu     *cuda.Backend    // the model's GPU memory (--backend cuda)
	exec    *local.Executor
	modelID string
	codec   *wire.StepDecoder
}

// New returns a worker with the given options; Run starts it.
func New(o Options, log *zap.Logger) (*Service, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	subj, err := wire.NewSubjects(o.Deployment)
	if err != nil {
		return nil, err
	}
	return &Service{
		opts: o, log: log.With(zap.String("worker_id", o.WorkerID), zap.Int("rank", o.Rank)), subj: subj,
		start: time.Now(), jobs: make(chan job, queueDepth), quit: make(chan exitReq, 1),
		codec: wire.NewStepDecoder(),
	}, nil
}

// Run serves until the worker should end and returns the process's exit
// status: 0 after a shutdown, a signal, the coordinator's or the parent's
// disappearance; 1 on a fatal error (a step over the step timeout, no
// coordinator ever seen, NATS closed for good). The first signal on sigs
// drains (the running step finishes) and ends; a second one ends at once.
func (w *Service) Run(sigs <-chan os.Signal) int {
	c := &w.opts
	w.log.Info("starting worker", zap.String("version", c.Version), zap.String("nats_url", logging.RedactURL(c.NATSURL)),
		zap.String("deployment", c.Deployment), zap.Int("world_size", c.WorldSize),
		zap.Duration("heartbeat", c.Heartbeat), zap.Duration("coordinator_timeout", c.CoordinatorTimeout),
		zap.Duration("step_timeout", c.StepTimeout), zap.Bool("auth", c.NATSToken != ""), zap.Int("parent_pid", c.ParentPID))

	opts := []nats.Option{
		nats.Name("gptoss-worker-" + strconv.Itoa(c.Rank)),
		// Nothing the worker publishes is for itself; without echo its
		// own collective parts (the step's logits, tens of MB at large
		// batches) do not come back to it through the server.
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A worker may start before NATS: keep trying; the coordinator
		// timeout bounds the wait.
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			w.connWarned.Store(false)
			w.log.Info("connected to NATS", zap.String("server", logging.RedactURL(nc.ConnectedUrl())))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Every attempt fails this way while NATS is away: warn once.
			if !w.connWarned.Swap(true) {
				w.log.Warn("NATS connection attempt failed; retrying", zap.Error(err))
			} else {
				w.log.Debug("NATS connection attempt failed", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			w.connWarned.Store(false)
			w.log.Info("reconnected to NATS; registering again", zap.String("server", logging.RedactURL(nc.ConnectedUrl())))
			w.publishOn(nc, w.subj.Register(), w.registration())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if !w.closing.Load() {
				w.log.Warn("disconnected from NATS", zap.Error(err))
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			if !w.closing.Load() {
				w.requestExit(exitReq{code: 1, reason: "NATS connection closed"})
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			w.log.Error("NATS error", zap.String("subject", subject), zap.Error(err))
		}),
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.PprofAddr != "" {
		// Before NATS, so that a worker stuck connecting can be profiled.
		// A port already taken costs the profiling, not the worker: the
		// launcher hands the coordinator's environment to every rank, so
		// an inherited GPTOSS_WORKER_PPROF_ADDR binds for one rank only.
		if p, err := pprof.Start(c.PprofAddr, w.log); err != nil {
			w.log.Error("pprof not started; serving without it", zap.Error(err))
		} else {
			defer p.Close()
		}
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		w.log.Error("connecting to NATS", zap.Error(err))
		return 1
	}
	w.nc = nc

	subs := []struct {
		subject string
		h       nats.MsgHandler
	}{
		{w.subj.Load(c.Rank), w.onLoad},
		{w.subj.Step(), w.onStep},
		{w.subj.Control(), w.onControl},
		{w.subj.CoordinatorHeartbeat(), w.onCoordinatorHeartbeat},
	}
	for _, s := range subs {
		if _, err := nc.Subscribe(s.subject, s.h); err != nil {
			w.log.Error("subscribing", zap.String("subject", s.subject), zap.Error(err))
			w.closing.Store(true)
			nc.Close()
			return 1
		}
	}
	// After the subscriptions, on the same connection: the server has them
	// before the coordinator can see the registration and send a Load.
	// Before the first connection it is buffered and sent once connected.
	w.publish(w.subj.Register(), w.registration())
	w.heartbeat()

	go w.loop()
	go w.sampleMemory()
	go w.heartbeats()
	go w.watchCoordinator()
	if c.ParentPID > 0 {
		go w.watchParent()
	}

	for {
		select {
		case sig := <-sigs:
			w.log.Info("signal: draining and exiting", zap.String("signal", sig.String()))
			return w.finish(exitReq{code: 0, drain: true, reason: "signal " + sig.String()}, sigs)
		case r := <-w.quit:
			return w.finish(r, sigs)
		}
	}
}

// requestExit asks Run to end; the first request wins until Run takes
// it.
func (w *Service) requestExit(r exitReq) {
	select {
	case w.quit <- r:
	default:
	}
}

// finish drains if asked, says goodbye and returns the exit status.
func (w *Service) finish(r exitReq, sigs <-chan os.Signal) int {
	if r.drain {
		w.log.Info("draining before exit", zap.String("reason", r.reason))
		w.drain()
		if code, ok := w.waitIdle(sigs); ok {
			r.code = code
		}
	}
	if w.st.Failed() {
		r.code = 1
	}
	log := w.log.With(zap.String("reason", r.reason), zap.Int("exit_status", r.code))
	if r.code == 0 {
		log.Info("worker exiting")
	} else {
		log.Error("worker exiting")
	}
	w.closing.Store(true)
	w.heartbeat()
	if w.nc.IsConnected() {
		_ = w.nc.FlushTimeout(time.Second)
	}
	w.nc.Close()
	return r.code
}

// waitIdle waits for the running job to end. A Load in progress is not
// waited for (nothing is served yet); a fatal error or a second signal
// cuts the wait short, the former returning its status.
func (w *Service) waitIdle(sigs <-chan os.Signal) (int, bool) {
	idle := make(chan struct{})
	go func() {
		w.runMu.Lock()
		w.runMu.Unlock() //nolint:staticcheck // an empty critical section: wait for the running job
		close(idle)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-idle:
			return 0, false
		case r := <-w.quit:
			if r.code != 0 {
				return r.code, true
			}
		case sig := <-sigs:
			w.log.Warn("second signal: exiting without waiting for the running step", zap.String("signal", sig.String()))
			return 0, false
		case <-tick.C:
			if w.st.Failed() {
				return 1, true
			}
			if w.st.Loading() {
				w.log.Info("not waiting for the model load in progress")
				return 0, false
			}
		}
	}
}

// drain stops accepting steps and loads; the running one finishes.
func (w *Service) drain() {
	if w.st.Drain() {
		w.log.Info("draining: no more steps accepted")
	}
}

// publish sends m on subject; failures are logged.
func (w *Service) publish(subject string, m proto.Message) { w.publishOn(w.nc, subject, m) }

func (w *Service) publishOn(nc *nats.Conn, subject string, m proto.Message) {
	b, err := wire.Marshal(m)
	if err == nil {
		err = nc.Publish(subject, b)
	}
	if err != nil && !w.closing.Load() {
		w.log.Warn("publishing", zap.String("subject", subject), zap.Error(err))
	}
}

func (w *Service) registration() *wire.Register {
	dev, total, used := device()
	return &wire.Register{
		WorkerId: w.opts.WorkerID, Rank: int32(w.opts.Rank), WorldSize: int32(w.opts.WorldSize),
		Device: dev, MemoryTotal: total, MemoryUsed: used, Version: w.opts.Version, Pid: int32(os.Getpid()),
	}
}

// noteSequences records how many sequences the executor holds (model
// goroutine only).
func (w *Service) noteSequences() {
	n := 0
	if w.exec != nil {
		n = w.exec.Sequences()
	}
	w.sequences.Store(int32(n))
}

func (w *Service) heartbeat() { w.publish(w.subj.Heartbeat(), w.heartbeatMsg()) }

// heartbeatMsg is the worker's heartbeat as of now: the load's progress
// rides on it while the state is Loading only.
func (w *Service) heartbeatMsg() *wire.Heartbeat {
	state, errMsg := w.st.Report()
	h := &wire.Heartbeat{
		WorkerId: w.opts.WorkerID, Rank: int32(w.opts.Rank), State: state.String(), Steps: w.steps.Load(),
		UnixNanos: time.Now().UnixNano(), Error: errMsg,
	}
	h.Sequences = w.sequences.Load()
	h.StepNanos, h.LastStepNanos, h.IdleNanos = w.stepNanos.Load(), w.lastStepNanos.Load(), w.idleNanos.Load()
	h.MemoryTotal, h.MemoryUsed = w.memTotal.Load(), w.memUsed.Load()
	if state == Loading {
		h.LoadBytesDone, h.LoadBytesTotal = w.loadProgress()
	}
	return h
}

// memEvery is the period of the device memory samples the heartbeats
// carry: NVML's init is too slow to run for every heartbeat, and memory
// moves with loads and the KV cache's allocation, not step by step.
const memEvery = 5 * time.Second

// sampleMemory samples the device's memory every memEvery, off the
// heartbeat's goroutine so that a slow NVML call never delays a heartbeat.
func (w *Service) sampleMemory() {
	t := time.NewTicker(memEvery)
	defer t.Stop()
	for ; ; <-t.C {
		_, total, used := device()
		w.memTotal.Store(total)
		w.memUsed.Store(used)
	}
}

func (w *Service) heartbeats() {
	t := time.NewTicker(w.opts.Heartbeat)
	defer t.Stop()
	for range t.C {
		w.heartbeat()
	}
}

// watchCoordinator ends the process when the coordinator's heartbeats
// stop, or never start.
func (w *Service) watchCoordinator() {
	timeout := w.opts.CoordinatorTimeout
	t := time.NewTicker(min(max(timeout/10, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for range t.C {
		now := time.Since(w.start)
		last := time.Duration(w.lastCoord.Load())
		switch {
		case last == 0 && now > 3*timeout:
			w.requestExit(exitReq{code: 1, reason: fmt.Sprintf("no coordinator heartbeat within %s of start", 3*timeout)})
			return
		case last != 0 && now-(last-1) > timeout:
			w.requestExit(exitReq{code: 0, reason: fmt.Sprintf("coordinator heartbeat silent for %s", timeout)})
			return
		}
	}
}

// watchParent ends the process when its parent is no longer the launcher
// (the launcher died and the worker was reparented).
func (w *Service) watchParent() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ; ; <-t.C {
		if ppid := os.Getppid(); ppid != w.opts.ParentPID {
			w.requestExit(exitReq{code: 0, reason: fmt.Sprintf("parent process %d is gone (parent now %d)", w.opts.ParentPID, ppid)})
			return
		}
	}
}

func (w *Service) onCoordinatorHeartbeat(m *nats.Msg) {
	var hb wire.Heartbeat
	if err := wire.Unmarshal(m.Data, &hb); err != nil {
		w.log.Debug("ignoring a malformed coordinator heartbeat", zap.Error(err))
		return
	}
	if w.lastCoord.Swap(int64(time.Since(w.start))+1) == 0 {
		w.log.Info("coordinator seen")
	}
}

func (w *Service) onControl(m *nats.Msg) {
	var c wire.Control
	if err := wire.Unmarshal(m.Data, &c); err != nil {
		w.log.Warn("ignoring a malformed control message", zap.Error(err))
		return
	}
	switch c.Op {
	case "drain":
		w.drain()
	case "announce":
		// A coordinator that started after this worker (foreman, systemd,
		// a restart) missed the registration: register again.
		w.publish(w.subj.Register(), w.registration())
	case "shutdown":
		w.log.Info("shutdown requested")
		w.drain()
		w.requestExit(exitReq{code: 0, drain: true, reason: "shutdown requested"})
	default:
		w.log.Warn("ignoring an unknown control op", zap.String("op", c.Op))
	}
}

func (w *Service) onLoad(m *nats.Msg) {
	var l wire.Load
	if err := wire.Unmarshal(m.Data, &l); err != nil {
		w.respond(m.Reply, &wire.LoadResult{Rank: int32(w.opts.Rank), Error: err.Error()})
		return
	}
	if err := w.enqueue(job{kind: jobLoad, load: &l, reply: m.Reply}); err != nil {
		w.respond(m.Reply, &wire.LoadResult{Rank: int32(w.opts.Rank), Error: err.Error()})
	}
}

func (w *Service) onStep(m *nats.Msg) {
	var s wire.Step
	if err := wire.Unmarshal(m.Data, &s); err != nil {
		w.log.Warn("malformed step", zap.Error(err))
		w.replyStep(m.Reply, &wire.StepResult{Rank: int32(w.opts.Rank), Error: err.Error()})
		return
	}
	if err := w.enqueue(job{kind: jobStep, step: &s, reply: m.Reply}); err != nil {
		w.replyStep(m.Reply, &wire.StepResult{StepId: s.StepId, Rank: int32(w.opts.Rank), Error: err.Error()})
	}
}

// enqueue hands j to the model goroutine without blocking the NATS
// callback.
func (w *Service) enqueue(j job) error {
	if err := w.st.Accepting(); err != nil {
		return err
	}
	select {
	case w.jobs <- j:
		return nil
	default:
		return fmt.Errorf("busy: %d jobs already queued", queueDepth)
	}
}

// respond replies m to subject (nothing when the sender did not ask).
func (w *Service) respond(subject string, m proto.Message) {
	if subject == "" {
		return
	}
	w.publish(subject, m)
}

// replyStep answers a step: rank 0 only; an oversized result becomes an
// error result.
func (w *Service) replyStep(subject string, r *wire.StepResult) {
	// Rank 0 answers every step; the others only their failures, so that
	// the coordinator learns of one at once (the first reply wins).
	if subject == "" || (w.opts.Rank != 0 && r.Error == "") {
		return
	}
	b, err := wire.Marshal(r)
	if err != nil {
		b, _ = wire.Marshal(&wire.StepResult{StepId: r.StepId, Rank: r.Rank, Error: err.Error()})
	}
	if err := w.nc.Publish(subject, b); err != nil && !w.closing.Load() {
		w.log.Warn("replying to a step", zap.Uint64("step_id", r.StepId), zap.Error(err))
	}
}

// loop runs the jobs one at a time: the only goroutine touching the model.
func (w *Service) loop() {
	for j := range w.jobs {
		w.runMu.Lock()
		err := w.st.Accepting()
		switch {
		case j.kind == jobLoad && err != nil:
			w.respond(j.reply, &wire.LoadResult{Rank: int32(w.opts.Rank), Error: err.Error()})
		case j.kind == jobLoad:
			w.respond(j.reply, w.doLoad(j.load))
		case err != nil:
			w.replyStep(j.reply, &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.opts.Rank), Error: err.Error()})
		default:
			w.doStep(j)
		}
		w.runMu.Unlock()
	}
}

// doStep runs one step under the watchdog and replies.
func (w *Service) doStep(j job) {
	start := time.Now()
	forward := len(j.step.Seqs) > 0
	if prev := w.lastStepEnd.Load(); forward && prev != 0 {
		w.idleNanos.Add(uint64(max(start.UnixNano()-prev, 0)))
	}
	limit := w.stepDeadline(j.step)
	timer := time.AfterFunc(limit, func() { w.stepHung(j, limit, limit) })
	res, err := w.runStep(j.step)
	// A step that ran past the timeout failed even if it came back: the
	// timer may not have fired yet.
	if elapsed := time.Since(start); !timer.Stop() || elapsed > limit {
		w.stepHung(j, elapsed, limit)
		return
	}
	if err != nil {
		w.log.Warn("step failed", zap.Uint64("step_id", j.step.StepId), zap.Error(err))
		if w.coll != nil {
			// The other ranks may wait for this one in a collective
			// operation of the step: end their wait now.
			if aerr := w.coll.Abort(j.step.StepId); aerr != nil {
				w.log.Warn("aborting the step's collective", zap.Error(aerr))
			}
		}
		res = &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.opts.Rank), Error: err.Error()}
	} else {
		// The time first, then the count: a heartbeat between the two
		// sees a mean a little high rather than one step short of time.
		took := uint64(time.Since(start))
		w.stepNanos.Add(took)
		if len(j.step.Seqs) > 0 {
			// A release-only step (microseconds) would hide the last
			// forward pass's time.
			w.lastStepNanos.Store(took)
		}
		w.steps.Add(1)
	}
	w.replyStep(j.reply, res)
	if forward {
		w.lastStepEnd.Store(time.Now().UnixNano())
	}
}

// stepDeadline is how long step may run: the deadline the coordinator
// scaled with the step's tokens, or the --step-timeout default.
func (w *Service) stepDeadline(s *wire.Step) time.Duration {
	if s.TimeoutMs > 0 {
		return time.Duration(s.TimeoutMs) * time.Millisecond
	}
	return w.opts.StepTimeout
}

// stepHung reports a step past its deadline and ends the process: a
// hung kernel cannot be interrupted, and the worker's state is unknown.
func (w *Service) stepHung(j job, elapsed, limit time.Duration) {
	w.fatalOnce.Do(func() {
		msg := fmt.Sprintf("step %d ran %s, over its deadline %s; worker exiting", j.step.StepId, elapsed.Round(time.Microsecond), limit)
		w.st.Fail(msg)
		w.log.Error("step watchdog", zap.Uint64("step_id", j.step.StepId), zap.Duration("elapsed", elapsed))
		w.replyStep(j.reply, &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.opts.Rank), Error: msg, TimedOut: true})
		w.heartbeat()
		w.requestExit(exitReq{code: 1, reason: msg})
	})
}

// runStep decodes s, runs it and fills res.
func (w *Service) runStep(s *wire.Step) (res *wire.StepResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("panic in step", zap.Uint64("step_id", s.StepId), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			res, err = nil, fmt.Errorf("worker: panic in step %d: %v", s.StepId, r)
		}
	}()
	if w.exec == nil {
		return nil, errors.New("no model loaded: send Load first")
	}
	defer w.noteSequences()
	if w.coll != nil {
		w.coll.Begin(s.StepId)
	}
	w.exec.Release(s.Release)
	b, err := w.codec.Decode(s)
	if err != nil {
		return nil, err
	}
	if len(b.Seqs) > 0 { // else a release-only step
		if err := w.exec.Step(context.Background(), b); err != nil {
			return nil, err
		}
	}
	return w.codec.Result(s.StepId, w.opts.Rank, b), nil
}
