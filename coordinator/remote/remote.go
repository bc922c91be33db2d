// Package remote is the coordinator's side of the worker processes: it
// implements step.Executor over NATS (protocol in shared/wire), tracks
// worker registration and liveness for /health, sends the load command, and
// publishes the coordinator's own heartbeat so that workers notice a dead
// coordinator.
//
// A step is one NATS request on Subjects.Step: every rank is subscribed and
// runs it (tensor parallelism), every rank draws the tokens and rank 0
// replies with them. Steps pipeline (step.Pipeliner): the scheduler sends
// the next one before the reply to the last, and the workers queue it.
// Sampling parameters travel with a sequence's first step only; Release
// buffers ids that ride on the next step's release list.
//
// Concurrency: Step, Submit, its wait and Release are called from the
// scheduler's loop goroutine, Workers and WaitWorkers from any goroutine, the subscription
// handlers from NATS's. All shared state is guarded by Client.mu, the only
// lock; it is never held across a NATS request.
package remote

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/wire"
)

// Defaults for the zero values of Options.
const (
	DefaultStepTimeout    = 60 * time.Second
	DefaultLoadTimeout    = 10 * time.Minute
	DefaultHeartbeatEvery = time.Second
	DefaultWorkerTimeout  = 5 * time.Second
)

// stateRegistered is a worker's State between Register and its first
// heartbeat.
const stateRegistered = "registered"

// workerState is a WorkerInfo plus what the Client needs to know of it.
// Register and Heartbeat arrive on different subscriptions, so a worker's
// first heartbeat may be handled before its Register: it then creates the
// entry, which counts once the Register arrives.
type workerState struct {
	WorkerInfo
	beating bool // a heartbeat arrived
}

// CoordinatorID is the worker_id of the coordinator's own heartbeats.
const CoordinatorID = "coordinator"

// Options configures a Client.
type Options struct {
	// Conn is the connection to NATS (embedded or external). The Client
	// does not close it.
	Conn *nats.Conn
	// Subjects are the deployment's subjects.
	Subjects wire.Subjects
	// WorldSize is the number of ranks (tensor-parallel degree).
	WorldSize int
	// StepTimeout bounds one step: no reply in time fails the step
	// (default 60s). StepTimeoutPerToken is added for every token the
	// step carries (default 0), so that a long prefill chunk on a slow
	// device is not taken for a hung worker. The deadline travels with
	// the step: the workers' watchdog uses it.
	StepTimeout         time.Duration
	StepTimeoutPerToken time.Duration
	// LoadTimeout bounds each rank's load (default 10m).
	LoadTimeout time.Duration
	// HeartbeatEvery is the period of the coordinator's heartbeat
	// (default 1s).
	HeartbeatEvery time.Duration
	// WorkerTimeout: a worker silent for this long is reported lost
	// (default 5s).
	WorkerTimeout time.Duration
	Logger        *zap.Logger
}

// WorkerInfo is what the coordinator knows of one worker, for /health
// (whose JSON keys are the snake_case tags).
type WorkerInfo struct {
	ID          string `json:"id"`
	Rank        int    `json:"rank"`
	Device      string `json:"device"`
	MemoryTotal uint64 `json:"memory_total"` // bytes
	MemoryUsed  uint64 `json:"memory_used"`  // bytes
	// State is the worker's last reported state ("starting", "loading",
	// "ready", "draining", "failed"); "registered" before its first
	// heartbeat.
	State string `json:"state"`
	// Error is the worker's last reported error, if any.
	Error string `json:"error"`
	// LastHeartbeat is when the coordinator last heard from it (register
	// or heartbeat), in the coordinator's clock.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Steps         uint64    `json:"steps"`
	PID           int       `json:"pid"`
	// Registered: its Register arrived (an entry can come from a
	// heartbeat first).
	Registered bool `json:"registered"`
	// Lost: no heartbeat within WorkerTimeout.
	Lost bool `json:"lost"`
	// Sequences is how many sequences the worker holds state for, as of
	// its last heartbeat.
	Sequences int `json:"sequences"`
	// LoadBytesDone and LoadBytesTotal are the weight-loading progress of
	// its last heartbeat: bytes of the checkpoint's tensors read so far
	// and in all, while its State is "loading" (0 otherwise, and with
	// dummy weights).
	LoadBytesDone  int64 `json:"load_bytes_done"`
	LoadBytesTotal int64 `json:"load_bytes_total"`
	// StepTime is the time of the Steps on the worker's clock, LastStep
	// the last forward pass's, as of its last heartbeat (0 from a worker
	// that does not report them): the per-worker step time of the metrics.
	StepTime time.Duration `json:"step_time_ns"`
	LastStep time.Duration `json:"last_step_ns"`
	// IdleTime is the time the worker waited between forward steps (the
	// serving loop's bubble under load), as of its last heartbeat.
	IdleTime time.Duration `json:"idle_time_ns"`
}

// Client is the coordinator's handle on the workers. It implements
// step.Executor.
type Client struct {
	nc   *nats.Conn
	subj wire.Subjects
	opts Options
	log  *zap.Logger
	subs []*nats.Subscription

	stop     chan struct{}
	beatDone chan struct{}
	shutOnce sync.Once

	mu       sync.Mutex
	workers  map[int]*workerState      // by rank; guarded by mu
	lostSeen map[int]bool              // ranks already logged as lost; guarded by mu
	changed  chan struct{}             // closed and replaced on every worker change; guarded by mu
	enc      *wire.StepEncoder         // the step codec's coordinator half; guarded by mu
	steps    uint64                    // successful steps; guarded by mu
	draining bool                      // guarded by mu
	kvTokens int64                     // smallest KV capacity any rank reported at load; guarded by mu
	kv       *step.KVGeometry          // the ranks' KV geometry (the smallest pools); guarded by mu
	loaded   map[int]string            // worker id per rank at the last successful load; guarded by mu
	failedAt time.Time                 // the last failed step, until every rank has been heard from since; guarded by mu
	inbox    string                    // the steps' replies come to inbox.<step id>
	replies  map[uint64]chan *nats.Msg // the steps in flight, by id; guarded by mu
	queued   time.Duration             // the deadlines of the steps in flight; guarded by mu
}

var (
	_ step.Executor  = (*Client)(nil)
	_ step.Readier   = (*Client)(nil)
	_ step.Flusher   = (*Client)(nil)
	_ step.Pipeliner = (*Client)(nil)
)

// New subscribes to worker registrations and heartbeats and starts the
// coordinator's heartbeat (the first one at once).
func New(o Options) (*Client, error) {
	if o.Conn == nil {
		return nil, errors.New("remote: no NATS connection")
	}
	if o.WorldSize < 1 {
		return nil, fmt.Errorf("remote: world size %d", o.WorldSize)
	}
	if o.Subjects == (wire.Subjects{}) {
		return nil, errors.New("remote: no subjects (use wire.NewSubjects)")
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = DefaultStepTimeout
	}
	if o.LoadTimeout <= 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if o.WorkerTimeout <= 0 {
		o.WorkerTimeout = DefaultWorkerTimeout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	c := &Client{
		nc: o.Conn, subj: o.Subjects, opts: o, log: o.Logger,
		stop: make(chan struct{}), beatDone: make(chan struct{}),
		workers: map[int]*workerState{}, lostSeen: map[int]bool{}, changed: make(chan struct{}),
		enc: wire.NewStepEncoder(), inbox: o.Conn.NewInbox(), replies: map[uint64]chan *nats.Msg{},
	}
	for _, s := range []struct {
		subject string
		h       nats.MsgHandler
	}{{o.Subjects.Register(), c.onRegister}, {o.Subjects.Heartbeat(), c.onHeartbeat}, {c.inbox + ".*", c.onReply}} {
		sub, err := o.Conn.Subscribe(s.subject, s.h)
		if err != nil {
			c.unsubscribe()
			return nil, fmt.Errorf("remote: subscribe %s: %w", s.subject, err)
		}
		c.subs = append(c.subs, sub)
	}
	// Make sure the server has the subscriptions before anyone is told
	// to start workers.
	if err := o.Conn.FlushTimeout(5 * time.Second); err != nil {
		c.unsubscribe()
		return nil, fmt.Errorf("remote: flush: %w", err)
	}
	// Workers that started before this coordinator (foreman, systemd, a
	// coordinator restart) registered when nobody listened: ask them to
	// announce themselves again.
	if data, err := wire.Marshal(&wire.Control{Op: "announce"}); err == nil {
		_ = o.Conn.Publish(o.Subjects.Control(), data)
	}
	go c.heartbeat()
	return c, nil
}

// onRegister records a worker. A Register sent as a request is acknowledged
// with an empty reply.
func (c *Client) onRegister(m *nats.Msg) {
	var r wire.Register
	if err := wire.Unmarshal(m.Data, &r); err != nil {
		c.log.Warn("bad register message", zap.Error(err))
		return
	}
	rank := int(r.Rank)
	if rank < 0 || rank >= c.opts.WorldSize || int(r.WorldSize) != c.opts.WorldSize {
		c.log.Error("worker registered with a rank or world size that does not match this deployment; ignored",
			zap.String("worker", r.WorkerId), zap.Int32("rank", r.Rank), zap.Int32("world_size", r.WorldSize),
			zap.Int("want_world_size", c.opts.WorldSize))
		return
	}
	now := time.Now()
	c.mu.Lock()
	w := c.workers[rank]
	switch {
	case w != nil && w.ID == r.WorkerId:
		// Registering again (after a reconnect), or its heartbeat came
		// first: keep what it reported.
	case w != nil && w.Registered && now.Sub(w.LastHeartbeat) <= c.opts.WorkerTimeout:
		c.log.Warn("rank re-registered by another worker while the previous one is alive",
			zap.Int("rank", rank), zap.String("old", w.ID), zap.String("new", r.WorkerId))
		fallthrough
	default:
		w = &workerState{WorkerInfo: WorkerInfo{ID: r.WorkerId, Rank: rank, State: stateRegistered}}
		c.workers[rank] = w
	}
	w.Registered = true
	w.Device, w.MemoryTotal, w.MemoryUsed, w.PID, w.LastHeartbeat = r.Device, r.MemoryTotal, r.MemoryUsed, int(r.Pid), now
	delete(c.lostSeen, rank)
	c.notifyLocked()
	c.mu.Unlock()
	c.log.Info("worker registered", zap.String("worker", r.WorkerId), zap.Int("rank", rank),
		zap.String("device", r.Device), zap.Uint64("memory_total", r.MemoryTotal),
		zap.String("version", r.Version), zap.Int32("pid", r.Pid))
	if m.Reply != "" {
		if err := m.Respond(nil); err != nil {
			c.log.Warn("register ack failed", zap.Error(err))
		}
	}
}

// onHeartbeat refreshes a worker. Heartbeats from a worker that is not the
// one registered for its rank are ignored; one for a rank nobody has
// registered creates an entry that counts once the worker registers.
func (c *Client) onHeartbeat(m *nats.Msg) {
	var h wire.Heartbeat
	if err := wire.Unmarshal(m.Data, &h); err != nil {
		c.log.Warn("bad heartbeat message", zap.Error(err))
		return
	}
	rank := int(h.Rank)
	if rank < 0 || rank >= c.opts.WorldSize {
		c.log.Debug("heartbeat with a rank outside this deployment", zap.String("worker", h.WorkerId), zap.Int("rank", rank))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.workers[rank]
	switch {
	case w == nil || (!w.Registered && w.ID != h.WorkerId):
		w = &workerState{WorkerInfo: WorkerInfo{ID: h.WorkerId, Rank: rank}}
		c.workers[rank] = w
	case w.ID != h.WorkerId:
		c.log.Debug("heartbeat from a worker that is not the one registered for its rank",
			zap.String("worker", h.WorkerId), zap.Int("rank", rank), zap.String("registered", w.ID))
		return
	}
	if c.lostSeen[rank] {
		delete(c.lostSeen, rank)
		c.log.Info("worker is back", zap.String("worker", w.ID), zap.Int("rank", rank))
	}
	if h.State != w.State || h.Error != w.Error {
		lvl := zap.InfoLevel
		if h.State == "failed" {
			lvl = zap.ErrorLevel
		}
		c.log.Log(lvl, "worker state", zap.String("worker", w.ID), zap.Int("rank", rank),
			zap.String("state", h.State), zap.String("error", h.Error))
	}
	w.State, w.Error, w.Steps, w.LastHeartbeat, w.beating = h.State, h.Error, h.Steps, time.Now(), true
	w.Sequences = int(h.Sequences)
	w.LoadBytesDone, w.LoadBytesTotal = h.LoadBytesDone, h.LoadBytesTotal
	w.StepTime, w.LastStep, w.IdleTime = time.Duration(h.StepNanos), time.Duration(h.LastStepNanos), time.Duration(h.IdleNanos)
	if h.MemoryTotal > 0 {
		// Sampled since the registration (which was before the load).
		w.MemoryTotal, w.MemoryUsed = h.MemoryTotal, h.MemoryUsed
	}
	c.notifyLocked()
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// heartbeat publishes the coordinator's heartbeat every HeartbeatEvery and
// logs workers that fall silent.
func (c *Client) heartbeat() {
	defer close(c.beatDone)
	t := time.NewTicker(c.opts.HeartbeatEvery)
	defer t.Stop()
	for {
		c.beat()
		c.checkLost()
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

func (c *Client) beat() {
	c.mu.Lock()
	h := &wire.Heartbeat{WorkerId: CoordinatorID, Rank: -1, State: "ready", Steps: c.steps, UnixNanos: time.Now().UnixNano()}
	if c.draining {
		h.State = "draining"
	}
	c.mu.Unlock()
	if err := c.publish(c.subj.CoordinatorHeartbeat(), h); err != nil {
		c.log.Warn("coordinator heartbeat not sent", zap.Error(err))
	}
}

func (c *Client) checkLost() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for rank, w := range c.workers {
		if now.Sub(w.LastHeartbeat) > c.opts.WorkerTimeout && !c.lostSeen[rank] {
			c.lostSeen[rank] = true
			c.log.Error("worker lost: no heartbeat", zap.String("worker", w.ID), zap.Int("rank", rank),
				zap.Duration("silent", now.Sub(w.LastHeartbeat).Round(time.Millisecond)))
		}
	}
}

func (c *Client) publish(subject string, m proto.Message) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return c.nc.Publish(subject, b)
}

// WaitWorkers waits until ranks 0..n-1 have registered, have sent a
// heartbeat since, and are alive (heard from within WorkerTimeout). It fails
// at once when one of them reports the "failed" state.
func (c *Client) WaitWorkers(ctx context.Context, n int) error {
	if n < 1 || n > c.opts.WorldSize {
		return fmt.Errorf("remote: wait for %d workers with world size %d", n, c.opts.WorldSize)
	}
	for {
		c.mu.Lock()
		now := time.Now()
		var missing []int
		var failed error
		for rank := range n {
			w := c.workers[rank]
			switch {
			case w == nil || !w.Registered || !w.beating || now.Sub(w.LastHeartbeat) > c.opts.WorkerTimeout:
				missing = append(missing, rank)
			case w.State == "failed" && failed == nil:
				failed = fmt.Errorf("remote: worker %s (rank %d) failed: %s", w.ID, rank, w.Error)
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if failed != nil {
			return failed
		}
		if len(missing) == 0 {
			return nil
		}
		// A live worker that goes silent is noticed at the next change;
		// poll anyway so that the check does not depend on other traffic.
		t := time.NewTimer(c.opts.WorkerTimeout)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("remote: waiting for workers (ranks %v missing): %w", missing, ctx.Err())
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// Load asks every rank to load its shard, in parallel, each within
// LoadTimeout, and waits for all of them. The error names every rank that
// failed and its message.
func (c *Client) Load(ctx context.Context, l *wire.Load) error {
	if l.Epoch == 0 {
		// One epoch for every rank of this load: it names their
		// collective's subjects.
		l.Epoch = uint64(time.Now().UnixNano())
	}
	data, err := wire.Marshal(l)
	if err != nil {
		return fmt.Errorf("remote: load: %w", err)
	}
	ids := map[int]string{}
	c.mu.Lock()
	c.loaded = nil // not ready while loading
	for rank, w := range c.workers {
		ids[rank] = w.ID
	}
	c.mu.Unlock()
	errs := make([]error, c.opts.WorldSize)
	var wg sync.WaitGroup
	for rank := range c.opts.WorldSize {
		wg.Go(func() { errs[rank] = c.loadRank(ctx, rank, data) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.mu.Lock()
	c.loaded, c.failedAt = ids, time.Time{}
	c.mu.Unlock()
	return nil
}

// Ready reports whether steps can be sent: the model is loaded on the
// workers now registered (a restarted worker has a new id and needs a
// reload first), every rank is alive and not failed, and after a failed
// step every rank has been heard from since, so a step is not retried into
// a worker that died (its last heartbeat predates the failure) before the
// coordinator noticed. The scheduler holds its batch while this is false.
func (c *Client) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded == nil {
		return false
	}
	now := time.Now()
	for rank := range c.opts.WorldSize {
		w := c.workers[rank]
		switch {
		case w == nil || w.ID != c.loaded[rank] || w.State == "failed",
			now.Sub(w.LastHeartbeat) > c.opts.WorkerTimeout,
			!c.failedAt.IsZero() && !w.LastHeartbeat.After(c.failedAt):
			return false
		}
	}
	c.failedAt = time.Time{}
	return true
}

func (c *Client) loadRank(ctx context.Context, rank int, data []byte) error {
	t0 := time.Now()
	lctx, cancel := context.WithTimeout(ctx, c.opts.LoadTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(lctx, c.subj.Load(rank), data)
	if err != nil {
		return fmt.Errorf("remote: load: rank %d: %w", rank, requestErr(ctx, lctx, err, c.opts.LoadTimeout, "load timeout"))
	}
	var r wire.LoadResult
	if err := wire.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("remote: load: rank %d: %w", rank, err)
	}
	if r.Error != "" {
		return fmt.Errorf("remote: load: rank %d: %s", rank, r.Error)
	}
	if int(r.Rank) != rank {
		return fmt.Errorf("remote: load: rank %d answered as rank %d", rank, r.Rank)
	}
	c.log.Info("worker loaded", zap.Int("rank", rank), zap.String("model", r.Model), zap.Int32("vocab", r.Vocab),
		zap.Int64("kv_tokens", r.KvTokens), zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
	c.mu.Lock()
	if r.KvTokens > 0 && (c.kvTokens == 0 || r.KvTokens < c.kvTokens) {
		c.kvTokens = r.KvTokens
	}
	if r.BlockSize > 0 {
		// Every rank's pools have the same geometry in practice (same
		// Load); if they differ, plan for the smallest.
		g := step.KVGeometry{BlockSize: int(r.BlockSize), Blocks: int(r.KvBlocks), SlidingBlocks: int(r.SlidingBlocks),
			SlidingWindow: int(r.SlidingWindow)}
		if c.kv != nil && c.kv.BlockSize == g.BlockSize {
			g.Blocks, g.SlidingBlocks = min(g.Blocks, c.kv.Blocks), min(g.SlidingBlocks, c.kv.SlidingBlocks)
		}
		c.kv = &g
	}
	c.mu.Unlock()
	return nil
}

// requestErr explains a failed request: the caller's context ended, the
// watchdog (timeout) fired, or NATS failed (no workers subscribed, closed
// connection).
func requestErr(parent, ctx context.Context, err error, timeout time.Duration, what string) error {
	switch {
	case parent.Err() != nil:
		return parent.Err()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || ctx.Err() != nil:
		return fmt.Errorf("no reply within %s (%s): %w", timeout, what, context.DeadlineExceeded)
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no worker is subscribed: %w", err)
	}
	return err
}

// Step sends one forward pass to every rank and fills Out for the sampled
// sequences from rank 0's reply.
func (c *Client) Step(ctx context.Context, b *step.Batch) error { return c.Submit(ctx, b)() }

// Submit publishes one forward pass to every rank and returns the wait for
// rank 0's reply (step.Pipeliner): the scheduler sends step k+1 while step
// k runs, and the workers' job queue holds it, so that a worker starts it
// the moment step k ends instead of waiting a NATS round trip and the
// scheduler's turnaround. Steps reach the workers in the order published
// (one connection), and a release rides on the next step published, so it
// takes effect after every step before it. The wait's deadline is the
// step's own plus that of the steps still ahead of it in the queue.
func (c *Client) Submit(ctx context.Context, b *step.Batch) func() error {
	deadline := c.StepDeadline(b)
	c.mu.Lock()
	msg, fresh := c.enc.Encode(b)
	msg.TimeoutMs = uint32(min(deadline.Milliseconds(), math.MaxUint32))
	reply := make(chan *nats.Msg, 1)
	c.replies[msg.StepId] = reply
	ahead := c.queued
	c.queued += deadline
	c.mu.Unlock()

	done := func(err error) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.replies, msg.StepId)
		c.queued -= deadline
		if err != nil {
			// The workers may not have seen the step: its releases go back
			// on the list and its Sampling will be sent again (the
			// sequences of the batch are failed and released by the
			// scheduler anyway).
			c.enc.Undo(msg, fresh)
			if ctx.Err() == nil {
				c.failedAt = time.Now()
			}
			return fmt.Errorf("remote: step %d: %w", msg.StepId, err)
		}
		c.steps++
		return nil
	}
	data, err := wire.Marshal(msg)
	if err == nil {
		err = c.nc.PublishRequest(c.subj.Step(), c.inbox+"."+strconv.FormatUint(msg.StepId, 10), data)
	}
	if err != nil {
		err = done(err)
		return func() error { return err }
	}
	return func() error {
		t := time.NewTimer(ahead + deadline + stepGrace)
		defer t.Stop()
		var m *nats.Msg
		select {
		case m = <-reply:
		case <-ctx.Done():
			return done(ctx.Err())
		case <-t.C:
			return done(fmt.Errorf("%w: no reply within %s (step timeout): %w", step.ErrTimeout, deadline, context.DeadlineExceeded))
		}
		if m.Header.Get("Status") == "503" {
			return done(fmt.Errorf("no worker is subscribed: %w", nats.ErrNoResponders))
		}
		var res wire.StepResult
		if err := wire.Unmarshal(m.Data, &res); err != nil {
			return done(err)
		}
		c.mu.Lock()
		err := c.enc.Decode(b, msg, &res)
		c.mu.Unlock()
		return done(err)
	}
}

// onReply hands a step's reply to its waiter: the first one wins (rank 0's
// answer, or another rank's failure), later ones and replies to abandoned
// steps are dropped.
func (c *Client) onReply(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	c.mu.Lock()
	ch := c.replies[id]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}

// StepDeadline is how long b may take: StepTimeout plus
// StepTimeoutPerToken for each of its tokens.
func (c *Client) StepDeadline(b *step.Batch) time.Duration {
	tokens := 0
	for i := range b.Seqs {
		tokens += len(b.Seqs[i].Tokens)
	}
	return c.opts.StepTimeout + time.Duration(tokens)*c.opts.StepTimeoutPerToken
}

// stepGrace is how much longer than the workers' watchdog the coordinator
// waits for a step's reply: the watchdog's own reply (which names the
// step and the time it ran) should win.
const stepGrace = time.Second

// Flush sends the pending releases in a step of their own, when there are
// any: the scheduler calls it when it has nothing else to run.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	pending := c.enc.Pending()
	c.mu.Unlock()
	if !pending || !c.Ready() {
		return nil // workers that are coming back start with empty caches anyway
	}
	return c.Step(ctx, &step.Batch{})
}

// Release queues ids for the next step's release list.
func (c *Client) Release(ids []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.Release(ids)
}

// Capabilities: logprobs (the workers compute them and Step passes them
// on) and the KV cache the workers reported.
func (c *Client) Capabilities() step.Capabilities {
	c.mu.Lock()
	defer c.mu.Unlock()
	return step.Capabilities{Logprobs: true, KVTokens: int(c.kvTokens), KV: c.kv}
}

// Workers reports every known worker, sorted by rank.
func (c *Client) Workers() []WorkerInfo {
	now := time.Now()
	c.mu.Lock()
	out := make([]WorkerInfo, 0, len(c.workers))
	for _, w := range c.workers {
		wi := w.WorkerInfo
		wi.Lost = now.Sub(w.LastHeartbeat) > c.opts.WorkerTimeout
		out = append(out, wi)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b WorkerInfo) int { return a.Rank - b.Rank })
	return out
}

// Drain tells every worker to drain (finish what it has, accept no new
// work) and marks the coordinator's heartbeat "draining".
func (c *Client) Drain(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	return c.control(ctx, "drain")
}

// Shutdown tells every worker to shut down, stops the coordinator's
// heartbeat and unsubscribes. It does not close the connection. It may be
// called more than once.
func (c *Client) Shutdown() {
	c.shutOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.control(ctx, "shutdown"); err != nil {
			c.log.Warn("shutdown command not delivered", zap.Error(err))
		}
		close(c.stop)
		<-c.beatDone
		c.unsubscribe()
	})
}

func (c *Client) control(ctx context.Context, op string) error {
	if err := c.publish(c.subj.Control(), &wire.Control{Op: op}); err != nil {
		return fmt.Errorf("remote: %s: %w", op, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("remote: %s: flush: %w", op, err)
	}
	return nil
}

func (c *Client) unsubscribe() {
	for _, s := range c.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			c.log.Debug("unsubscribe", zap.String("subject", s.Subject), zap.Error(err))
		}
	}
}
