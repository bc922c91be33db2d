package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/collective"
	"github.com/gptoss/server/worker/cuda"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/local"
	"github.com/gptoss/server/worker/safetensors"
)

// Heartbeat states (wire.Heartbeat.state).
const (
	stateStarting = "starting" // no model loaded (also after a failed Load)
	stateLoading  = "loading"
	stateReady    = "ready"
	stateDraining = "draining"
	stateFailed   = "failed"
)

// Load defaults, used where the Load message leaves a field 0.
const (
	defaultKVBlocks      = 1024
	defaultSlidingBlocks = 256
	defaultBlockSize     = 16
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

// exitReq asks the main goroutine to end the process.
type exitReq struct {
	code   int
	drain  bool // finish the running step first
	reason string
}

type worker struct {
	cfg   config
	log   *zap.Logger
	subj  wire.Subjects
	nc    *nats.Conn
	start time.Time

	jobs chan job
	quit chan exitReq

	mu       sync.Mutex
	state    string
	stateErr string

	steps      atomic.Uint64
	draining   atomic.Bool
	loading    atomic.Bool
	failed     atomic.Bool
	closing    atomic.Bool
	connWarned atomic.Bool  // a failed connection attempt was logged
	lastCoord  atomic.Int64 // time.Since(start)+1 of the last coordinator heartbeat; 0: none yet
	fatalOnce  sync.Once

	// runMu is held by the model goroutine while it runs a job; draining
	// is checked under it, so that once a drain has set the flag and taken
	// runMu, no step runs again.
	runMu sync.Mutex

	// sequences is how many sequences the executor holds state for, as of
	// the last step or load, for heartbeats (leak checks).
	sequences atomic.Int32

	// Owned by the model goroutine.
	set     *safetensors.Set
	coll    *collective.NATS // joins the ranks when the world size is above 1
	gpu     *cuda.Backend    // the model's GPU memory (--backend cuda)
	exec    *local.Executor
	modelID string
	codec   *wire.StepDecoder
}

func newWorker(c config, log *zap.Logger) *worker {
	subj, _ := wire.NewSubjects(c.Deployment) // validated by parseConfig
	return &worker{
		cfg: c, log: log.With(zap.String("worker_id", c.WorkerID), zap.Int("rank", c.Rank)), subj: subj,
		start: time.Now(), jobs: make(chan job, queueDepth), quit: make(chan exitReq, 1),
		state: stateStarting, codec: wire.NewStepDecoder(),
	}
}

// run serves until the process should end and returns its exit status.
func (w *worker) run() int {
	c := &w.cfg
	w.log.Info("starting worker", zap.String("version", version), zap.String("nats_url", redactURL(c.NATSURL)),
		zap.String("deployment", c.Deployment), zap.Int("world_size", c.WorldSize),
		zap.Duration("heartbeat", c.Heartbeat), zap.Duration("coordinator_timeout", c.CoordinatorTimeout),
		zap.Duration("step_timeout", c.StepTimeout), zap.Bool("auth", c.NATSToken != ""), zap.Int("parent_pid", c.ParentPID))

	// Signals first: a SIGTERM during the connect still drains and exits 0.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	opts := []nats.Option{
		nats.Name("gptoss-worker-" + strconv.Itoa(c.Rank)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// A worker may start before NATS: keep trying; the coordinator
		// timeout bounds the wait.
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			w.connWarned.Store(false)
			w.log.Info("connected to NATS", zap.String("server", redactURL(nc.ConnectedUrl())))
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
			w.log.Info("reconnected to NATS; registering again", zap.String("server", redactURL(nc.ConnectedUrl())))
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

// requestExit asks the main goroutine to end the process; the first
// request wins until the main goroutine takes it.
func (w *worker) requestExit(r exitReq) {
	select {
	case w.quit <- r:
	default:
	}
}

// finish drains if asked, says goodbye and returns the exit status.
func (w *worker) finish(r exitReq, sigs <-chan os.Signal) int {
	if r.drain {
		w.log.Info("draining before exit", zap.String("reason", r.reason))
		w.drain()
		if code, ok := w.waitIdle(sigs); ok {
			r.code = code
		}
	}
	if w.failed.Load() {
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
func (w *worker) waitIdle(sigs <-chan os.Signal) (int, bool) {
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
			if w.failed.Load() {
				return 1, true
			}
			if w.loading.Load() {
				w.log.Info("not waiting for the model load in progress")
				return 0, false
			}
		}
	}
}

// drain stops accepting steps and loads; the running one finishes.
func (w *worker) drain() {
	if !w.draining.Swap(true) {
		w.log.Info("draining: no more steps accepted")
	}
	w.setState(stateDraining, "")
}

// setState changes the reported state; draining and failed are final
// (failed overriding draining).
func (w *worker) setState(s, errMsg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.state == stateFailed:
		return
	case w.state == stateDraining && s != stateFailed:
		return
	}
	w.state, w.stateErr = s, errMsg
}

func (w *worker) getState() (string, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.stateErr
}

// publish sends m on subject; failures are logged.
func (w *worker) publish(subject string, m proto.Message) { w.publishOn(w.nc, subject, m) }

func (w *worker) publishOn(nc *nats.Conn, subject string, m proto.Message) {
	b, err := wire.Marshal(m)
	if err == nil {
		err = nc.Publish(subject, b)
	}
	if err != nil && !w.closing.Load() {
		w.log.Warn("publishing", zap.String("subject", subject), zap.Error(err))
	}
}

func (w *worker) registration() *wire.Register {
	dev, total, used := device()
	return &wire.Register{
		WorkerId: w.cfg.WorkerID, Rank: int32(w.cfg.Rank), WorldSize: int32(w.cfg.WorldSize),
		Device: dev, MemoryTotal: total, MemoryUsed: used, Version: version, Pid: int32(os.Getpid()),
	}
}

// redactURL hides the credentials (user and password, or a token in the
// user field) of every URL of a comma-separated list.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// noteSequences records how many sequences the executor holds (model
// goroutine only).
func (w *worker) noteSequences() {
	n := 0
	if w.exec != nil {
		n = w.exec.Sequences()
	}
	w.sequences.Store(int32(n))
}

func (w *worker) heartbeat() {
	state, errMsg := w.getState()
	h := &wire.Heartbeat{
		WorkerId: w.cfg.WorkerID, Rank: int32(w.cfg.Rank), State: state, Steps: w.steps.Load(),
		UnixNanos: time.Now().UnixNano(), Error: errMsg,
	}
	h.Sequences = w.sequences.Load()
	w.publish(w.subj.Heartbeat(), h)
}

func (w *worker) heartbeats() {
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for range t.C {
		w.heartbeat()
	}
}

// watchCoordinator ends the process when the coordinator's heartbeats
// stop, or never start.
func (w *worker) watchCoordinator() {
	timeout := w.cfg.CoordinatorTimeout
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
func (w *worker) watchParent() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ; ; <-t.C {
		if ppid := os.Getppid(); ppid != w.cfg.ParentPID {
			w.requestExit(exitReq{code: 0, reason: fmt.Sprintf("parent process %d is gone (parent now %d)", w.cfg.ParentPID, ppid)})
			return
		}
	}
}

func (w *worker) onCoordinatorHeartbeat(m *nats.Msg) {
	var hb wire.Heartbeat
	if err := wire.Unmarshal(m.Data, &hb); err != nil {
		w.log.Debug("ignoring a malformed coordinator heartbeat", zap.Error(err))
		return
	}
	if w.lastCoord.Swap(int64(time.Since(w.start))+1) == 0 {
		w.log.Info("coordinator seen")
	}
}

func (w *worker) onControl(m *nats.Msg) {
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

func (w *worker) onLoad(m *nats.Msg) {
	var l wire.Load
	if err := wire.Unmarshal(m.Data, &l); err != nil {
		w.respond(m.Reply, &wire.LoadResult{Rank: int32(w.cfg.Rank), Error: err.Error()})
		return
	}
	if err := w.enqueue(job{kind: jobLoad, load: &l, reply: m.Reply}); err != nil {
		w.respond(m.Reply, &wire.LoadResult{Rank: int32(w.cfg.Rank), Error: err.Error()})
	}
}

func (w *worker) onStep(m *nats.Msg) {
	var s wire.Step
	if err := wire.Unmarshal(m.Data, &s); err != nil {
		w.log.Warn("malformed step", zap.Error(err))
		w.replyStep(m.Reply, &wire.StepResult{Rank: int32(w.cfg.Rank), Error: err.Error()})
		return
	}
	if err := w.enqueue(job{kind: jobStep, step: &s, reply: m.Reply}); err != nil {
		w.replyStep(m.Reply, &wire.StepResult{StepId: s.StepId, Rank: int32(w.cfg.Rank), Error: err.Error()})
	}
}

// enqueue hands j to the model goroutine without blocking the NATS
// callback.
func (w *worker) enqueue(j job) error {
	switch {
	case w.failed.Load():
		_, e := w.getState()
		return fmt.Errorf("worker failed: %s", e)
	case w.draining.Load():
		return errors.New("draining")
	}
	select {
	case w.jobs <- j:
		return nil
	default:
		return fmt.Errorf("busy: %d jobs already queued", queueDepth)
	}
}

// respond replies m to subject (nothing when the sender did not ask).
func (w *worker) respond(subject string, m proto.Message) {
	if subject == "" {
		return
	}
	w.publish(subject, m)
}

// replyStep answers a step: rank 0 only; an oversized result becomes an
// error result.
func (w *worker) replyStep(subject string, r *wire.StepResult) {
	if subject == "" || w.cfg.Rank != 0 {
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
func (w *worker) loop() {
	for j := range w.jobs {
		w.runMu.Lock()
		var err error
		switch {
		case w.failed.Load():
			_, e := w.getState()
			err = fmt.Errorf("worker failed: %s", e)
		case w.draining.Load():
			err = errors.New("draining")
		}
		switch {
		case j.kind == jobLoad && err != nil:
			w.respond(j.reply, &wire.LoadResult{Rank: int32(w.cfg.Rank), Error: err.Error()})
		case j.kind == jobLoad:
			w.respond(j.reply, w.doLoad(j.load))
		case err != nil:
			w.replyStep(j.reply, &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.cfg.Rank), Error: err.Error()})
		default:
			w.doStep(j)
		}
		w.runMu.Unlock()
	}
}

// doStep runs one step under the watchdog and replies.
func (w *worker) doStep(j job) {
	start := time.Now()
	timer := time.AfterFunc(w.cfg.StepTimeout, func() { w.stepHung(j, w.cfg.StepTimeout) })
	res, err := w.runStep(j.step)
	// A step that ran past the timeout failed even if it came back: the
	// timer may not have fired yet.
	if elapsed := time.Since(start); !timer.Stop() || elapsed > w.cfg.StepTimeout {
		w.stepHung(j, elapsed)
		return
	}
	if err != nil {
		w.log.Warn("step failed", zap.Uint64("step_id", j.step.StepId), zap.Error(err))
		res = &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.cfg.Rank), Error: err.Error()}
	} else {
		w.steps.Add(1)
	}
	w.replyStep(j.reply, res)
}

// stepHung reports a step past --step-timeout and ends the process: a
// hung kernel cannot be interrupted, and the worker's state is unknown.
func (w *worker) stepHung(j job, elapsed time.Duration) {
	w.fatalOnce.Do(func() {
		msg := fmt.Sprintf("step %d ran %s, over the step timeout %s; worker exiting", j.step.StepId, elapsed.Round(time.Microsecond), w.cfg.StepTimeout)
		w.failed.Store(true)
		w.setState(stateFailed, msg)
		w.log.Error("step watchdog", zap.Uint64("step_id", j.step.StepId), zap.Duration("elapsed", elapsed))
		w.replyStep(j.reply, &wire.StepResult{StepId: j.step.StepId, Rank: int32(w.cfg.Rank), Error: msg})
		w.heartbeat()
		w.requestExit(exitReq{code: 1, reason: msg})
	})
}

// runStep decodes s, runs it and fills res.
func (w *worker) runStep(s *wire.Step) (res *wire.StepResult, err error) {
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
	return w.codec.Result(s.StepId, w.cfg.Rank, b), nil
}

// doLoad replaces the model with the one in l.ModelDir. Any Load first
// drops the current model and every sequence: a failed Load leaves none.
func (w *worker) doLoad(l *wire.Load) (res *wire.LoadResult) {
	res = &wire.LoadResult{Rank: int32(w.cfg.Rank)}
	log := w.log.With(zap.String("model_dir", l.ModelDir))
	w.loading.Store(true)
	w.setState(stateLoading, "")
	defer w.loading.Store(false)
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic in load", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			w.unload()
			res = &wire.LoadResult{Rank: int32(w.cfg.Rank), Error: fmt.Sprintf("worker: panic in load: %v", r)}
		}
		if res.Error != "" {
			log.Error("load failed", zap.String("error", res.Error))
			w.setState(stateStarting, "load: "+res.Error)
		} else {
			log.Info("model loaded", zap.String("model", res.Model), zap.Int32("vocab", res.Vocab))
			w.setState(stateReady, "")
		}
	}()
	w.unload()
	log.Info("loading model", zap.Int32("tp", l.Tp), zap.Int32("kv_blocks", l.KvBlocks),
		zap.Int32("sliding_blocks", l.SlidingBlocks), zap.Int32("block_size", l.BlockSize))
	id, vocab, err := w.load(l)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Model, res.Vocab = id, int32(vocab)
	caps := w.exec.Capabilities()
	res.KvTokens = int64(caps.KVTokens)
	if g := caps.KV; g != nil {
		res.BlockSize, res.KvBlocks = int32(g.BlockSize), int32(g.Blocks)
		res.SlidingBlocks, res.SlidingWindow = int32(g.SlidingBlocks), int32(g.SlidingWindow)
	}
	w.noteSequences()
	return res
}

// unload drops the model, its sequences and its memory map.
func (w *worker) unload() {
	if w.exec == nil && w.set == nil && w.gpu == nil {
		return
	}
	w.exec, w.modelID = nil, ""
	w.noteSequences()
	w.codec.Reset()
	if w.coll != nil {
		w.coll.Close()
		w.coll = nil
	}
	if w.set != nil {
		if err := w.set.Close(); err != nil {
			w.log.Warn("closing the checkpoint", zap.Error(err))
		}
		w.set = nil
	}
	if w.gpu != nil {
		w.gpu.Close()
		w.gpu = nil
	}
	debug.FreeOSMemory() // the KV cache
}

func (w *worker) load(l *wire.Load) (id string, vocab int, err error) {
	ws := w.cfg.WorldSize
	if int(max(l.Tp, 1)) != ws {
		return "", 0, fmt.Errorf("load: tp %d does not match this worker's world size %d", l.Tp, ws)
	}
	if l.ModelDir == "" {
		return "", 0, errors.New("load: empty model_dir")
	}
	kv, sliding, bs := int(l.KvBlocks), int(l.SlidingBlocks), int(l.BlockSize)
	if kv < 0 || sliding < 0 || bs < 0 {
		return "", 0, fmt.Errorf("load: kv_blocks %d, sliding_blocks %d, block_size %d: must not be negative", kv, sliding, bs)
	}
	if bs == 0 {
		bs = defaultBlockSize
	}
	gpu := w.cfg.Backend == backendCUDA
	if !gpu {
		// Host memory: fixed defaults. The GPU sizes its pools from free
		// device memory when the Load leaves them 0.
		if kv == 0 {
			kv = defaultKVBlocks
		}
		if sliding == 0 {
			sliding = defaultSlidingBlocks
		}
	}
	cfg, id, err := w.modelConfig(l.ModelDir)
	if err != nil {
		return "", 0, err
	}
	var lib *cuda.Lib
	var ncclID []byte
	if gpu {
		if lib, err = w.openKernels(); err != nil {
			return "", 0, err
		}
		if ncclID, err = w.ncclID(lib, l.Epoch); err != nil {
			return "", 0, err
		}
	} else if err := checkCacheFits(&cfg, kv, sliding, bs); err != nil {
		return "", 0, err
	}
	set, weights, err := w.readWeights(cfg, l.ModelDir)
	if err != nil {
		return "", 0, err
	}
	var coll *collective.NATS
	defer func() {
		if err != nil {
			if set != nil {
				set.Close()
			}
			if coll != nil {
				coll.Close()
			}
		}
	}()
	if ws > 1 {
		// This rank's heads, experts and vocabulary, joined to the other
		// ranks' through the collective of this load (NCCL on GPUs).
		if weights, err = weights.Shard(w.cfg.Rank, ws); err != nil {
			return "", 0, err
		}
	}
	var m local.Model
	if gpu {
		var b *cuda.Backend
		if b, m, err = w.cudaModel(l, lib, ncclID, weights, kv, sliding, bs); err != nil {
			return "", 0, err
		}
		w.gpu = b
	} else {
		if ws > 1 {
			if coll, err = collective.New(w.nc, w.subj, l.Epoch, w.cfg.Rank, ws, w.cfg.StepTimeout); err != nil {
				return "", 0, err
			}
		}
		cc := weights.CacheConfig()
		var cache *engine.KVCache
		if cache, err = engine.NewKVCache(&cc, kv, sliding, bs); err != nil {
			return "", 0, err
		}
		var em *engine.Model
		if em, err = engine.NewModel(weights, cache); err != nil {
			return "", 0, err
		}
		if coll != nil {
			em.Coll = coll
		}
		em.ReuseLogits = true // the executor samples them within its step
		m = em
	}
	w.set, w.exec, w.coll = set, local.New(m, &weights.Config), coll
	w.modelID = id
	return w.modelID, cfg.Vocab, nil
}

// checkCacheFits refuses a KV cache larger than the memory available, so
// that a bad Load is an error reply rather than the process killed.
func checkCacheFits(cfg *model.Config, blocks, sliding, blockSize int) error {
	perToken := 2 * 4 * float64(cfg.KVHeads*cfg.HeadDim) // K and V, float32
	var bytes float64
	for l := range cfg.Layers {
		n := blocks
		if cfg.Sliding(l) {
			n = sliding
		}
		bytes += float64(n) * float64(blockSize) * perToken
	}
	if bytes > math.MaxInt/2 {
		return fmt.Errorf("load: a KV cache of %.3g bytes is too large", bytes)
	}
	if _, avail := readMeminfo(); avail > 0 && bytes > float64(avail) {
		return fmt.Errorf("load: the KV cache needs %.1f GiB, %.1f GiB of memory is available", bytes/(1<<30), float64(avail)/(1<<30))
	}
	return nil
}

// memoryInfo reports the machine's total and used memory in bytes.
func memoryInfo() (total, used uint64) {
	t, avail := readMeminfo()
	if t > avail {
		used = t - avail
	}
	return t, used
}

// readMeminfo reads MemTotal and MemAvailable from /proc/meminfo (zeros
// where it is unreadable).
func readMeminfo() (total, avail uint64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			avail = n << 10
		}
	}
	return total, avail
}
