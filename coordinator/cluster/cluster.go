// Package cluster is the coordinator's real engine: the NATS bus (an
// embedded server, or an external one), the worker processes (launched as
// go-plugin plugins, or started by foreman or systemd), the client that
// steps them (coordinator/remote, the scheduler's executor) and the watcher
// that reloads the model on every rank when a worker comes back as a new
// process.
//
// Start brings it up, Load loads the model; Watch runs the reload
// watcher until its context ends; Stop takes it down, workers before the
// bus. The coordinator's main runs Watch and Stop as one actor of its
// run.Group, after the HTTP server and the scheduler have stopped.
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/launch"
	"github.com/gptoss/server/coordinator/remote"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/natsd"
	"github.com/gptoss/server/shared/wire"
)

// Options configures a cluster.
type Options struct {
	// Model is the checkpoint directory the workers load, or with
	// LoadFormat "dummy" a preset name (20b, 120b, tiny).
	Model string
	// TP is the tensor-parallel degree: one worker per rank.
	TP int
	// Backend is what launched workers run on: "cpu" or "cuda" (resolve
	// "auto" with BackendFor first).
	Backend string
	// Launch starts the worker processes; false waits for workers started
	// by someone else (foreman, systemd) on NATSURL.
	Launch bool
	// WorkerBin is the worker executable ("": "worker" beside this one).
	WorkerBin string
	// NATSURL and NATSToken name an external NATS server; "" embeds one.
	NATSURL, NATSToken string
	// Deployment is the NATS subject namespace.
	Deployment string
	// StepTimeout and LoadTimeout bound a step and a load;
	// StepTimeoutPerToken is added to a step's deadline for each of its
	// tokens (0: StepTimeoutPerToken(Backend)).
	StepTimeout, LoadTimeout time.Duration
	StepTimeoutPerToken      time.Duration
	// MaxStepTokens and MaxSeqs are the scheduler's step limits, sent with
	// the Load (a GPU sizes its buffers by them).
	MaxStepTokens, MaxSeqs int
	// LoadFormat is "auto" or "dummy", passed to launched workers.
	LoadFormat string
	// CPUKernels is "exact" or "fast", passed to launched CPU workers
	// ("": the workers' default, exact).
	CPUKernels string
	// LogLevel is passed to launched workers.
	LogLevel string
	// Vocab is the model's vocabulary size: it sizes the embedded NATS
	// server's per-client buffer for the largest step's logits.
	Vocab  int
	Logger *zap.Logger
}

// Cluster is a running real engine.
type Cluster struct {
	opts    Options
	log     *zap.Logger
	nats    *natsd.Server // nil with an external server
	conn    *nats.Conn
	client  *remote.Client
	workers *launch.Group // nil with external workers
	natsURL string        // where the workers connect, for the log
}

// WorkerStatus is one worker as /health and /stats show it.
type WorkerStatus struct {
	remote.WorkerInfo
	Restarts int `json:"restarts"`
}

// MaxPending is the per-client buffer the bus needs for the largest step
// of o, for a NATS server started outside the cluster (the coordinator's
// embedded one).
func MaxPending(o Options) int64 { return maxPending(o) }

// maxPending is the per-client buffer the bus needs for the largest step:
// every rank receives the other ranks' shares of the vocabulary-split
// logits of every sampled sequence, plus a quarter for the activations and
// the rest of the traffic; at least natsd's default.
func maxPending(o Options) int64 {
	if o.TP < 2 {
		return natsd.DefaultMaxPending
	}
	share := int64(o.Vocab+o.TP-1) / int64(o.TP)
	need := int64(o.TP-1) * share * 4 * int64(max(o.MaxSeqs, 1)) * 5 / 4
	return max(need, natsd.DefaultMaxPending)
}

// StepTimeoutPerToken is the default time a step's deadline grows by for
// each of its tokens: a CPU prefills gpt-oss-20b at a few to tens of tokens
// a second on a few cores, a GPU at thousands; the deadline must stay above
// the slow device's honest step and close to the fast one's, where a hung
// kernel should be noticed soon.
func StepTimeoutPerToken(backend string) time.Duration {
	if backend == "cuda" {
		return 2 * time.Millisecond
	}
	return 200 * time.Millisecond
}

// registerWait bounds the wait for launched workers to register; external
// ones may take up to LoadTimeout (someone else starts them).
const registerWait = time.Minute

// Start starts (or connects to) NATS and launches the workers, and
// returns at once: Load waits for them and loads the model. On error
// everything it started is stopped.
func Start(o Options) (c *Cluster, err error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	c = &Cluster{opts: o, log: o.Logger}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()
	url, token := o.NATSURL, o.NATSToken
	if url == "" {
		if c.nats, err = natsd.Start(natsd.Options{MaxPending: maxPending(o), Logger: c.log.Named("nats")}); err != nil {
			return nil, err
		}
		url, token = c.nats.ClientURL(), c.nats.Token()
	}
	connOpts := []nats.Option{nats.Name("gptoss-coordinator"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}
	if token != "" {
		connOpts = append(connOpts, nats.Token(token))
	}
	if c.conn, err = nats.Connect(url, connOpts...); err != nil {
		return nil, fmt.Errorf("cluster: nats %s: %w", logging.RedactURL(url), err)
	}
	subjects, err := wire.NewSubjects(o.Deployment)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	perToken := o.StepTimeoutPerToken
	if perToken == 0 {
		perToken = StepTimeoutPerToken(o.Backend)
	}
	if c.client, err = remote.New(remote.Options{Conn: c.conn, Subjects: subjects, WorldSize: o.TP,
		StepTimeout: o.StepTimeout, StepTimeoutPerToken: perToken, LoadTimeout: o.LoadTimeout,
		Logger: c.log.Named("remote")}); err != nil {
		return nil, err
	}
	c.natsURL = url
	if o.Launch {
		if err := c.launch(url, token); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Load waits for the workers to register and loads the model on every
// rank. ctx ends the wait early (a signal during a long load); the caller
// then stops the cluster.
func (c *Cluster) Load(ctx context.Context) error {
	o := c.opts
	wait := registerWait
	if !o.Launch {
		wait = o.LoadTimeout
		c.log.Info("waiting for external workers to register", zap.Int("tp", o.TP), zap.String("nats", logging.RedactURL(c.natsURL)))
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := c.client.WaitWorkers(wctx, o.TP); err != nil {
		return fmt.Errorf("cluster: waiting for %d workers to register: %w", o.TP, err)
	}
	c.log.Info("workers registered; loading the model", zap.String("model", o.Model), zap.Int("tp", o.TP))
	lctx, lcancel := context.WithTimeout(ctx, o.LoadTimeout)
	defer lcancel()
	if err := c.client.Load(lctx, c.loadMsg()); err != nil {
		return fmt.Errorf("cluster: loading %s: %w", o.Model, err)
	}
	return nil
}

// Executor is the scheduler's executor: the client that steps the
// workers.
func (c *Cluster) Executor() *remote.Client { return c.client }

// Watch reloads the model on every rank when a worker comes back as a new
// process (restarted by the launcher, systemd or by hand): its KV cache and
// the collective are gone, so every rank starts over with a new epoch.
// Requests that were running are recomputed once the reload is done (the
// scheduler holds them while the client is not Ready). It returns nil when
// ctx ends.
func (c *Cluster) Watch(ctx context.Context) error {
	loaded := c.ids()
	killed := map[string]bool{} // lost workers already killed, by id
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		c.killLost(killed)
		now := c.ids()
		if len(now) < c.opts.TP || sameIDs(now, loaded) {
			continue
		}
		c.log.Warn("a worker restarted: reloading the model on every rank", zap.Any("workers", now))
		if err := c.reload(ctx, now); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("reloading after a worker restart failed; will retry", zap.Error(err))
			continue
		}
		loaded = now
		c.log.Info("model reloaded after a worker restart")
	}
}

// killLost kills the launched workers that stopped heartbeating while
// their process lives on (frozen by SIGSTOP, stuck in the kernel, a hung
// driver call that its own watchdog cannot reach): the launcher then
// starts them again and Watch reloads the model, as after a crash. Workers
// started by someone else (foreman, systemd) are theirs to restart.
func (c *Cluster) killLost(killed map[string]bool) {
	if c.workers == nil {
		return
	}
	for _, w := range c.client.Workers() {
		if !w.Lost || killed[w.ID] {
			continue
		}
		killed[w.ID] = true
		c.log.Error("worker lost: killing it so that it restarts", zap.String("worker", w.ID), zap.Int("rank", w.Rank),
			zap.Int("pid", w.PID), zap.Time("last_heartbeat", w.LastHeartbeat))
		// Only the process that registered as this worker: a worker that
		// died has a successor already, which must not be killed.
		c.workers.Kill(w.Rank, w.PID)
	}
}

// reload waits for every rank of ids and loads the model on them. A worker
// that dies or restarts during the reload (a rank stuck in a collective
// with the dead one is killed by its step watchdog) never answers its
// Load: the reload gives up at once instead of waiting out LoadTimeout,
// and Watch starts over.
func (c *Cluster) reload(ctx context.Context, ids map[int]string) error {
	lctx, cancel := context.WithTimeout(ctx, c.opts.LoadTimeout)
	defer cancel()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			if !sameIDs(ids, c.ids()) {
				cancel()
				return
			}
		}
	}()
	if err := c.client.WaitWorkers(lctx, c.opts.TP); err != nil {
		return err
	}
	return c.client.Load(lctx, c.loadMsg())
}

// loadMsg is the Load every rank gets: the checkpoint, the tensor-parallel
// degree and the scheduler's step limits.
func (c *Cluster) loadMsg() *wire.Load {
	return &wire.Load{ModelDir: c.opts.Model, Tp: int32(c.opts.TP), MaxStepTokens: int32(c.opts.MaxStepTokens), MaxSeqs: int32(c.opts.MaxSeqs)}
}

// sameIDs reports whether two rank → worker id maps are equal.
func sameIDs(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for rank, id := range a {
		if b[rank] != id {
			return false
		}
	}
	return true
}

// ids returns the current worker id of every registered, live rank.
func (c *Cluster) ids() map[int]string {
	out := map[int]string{}
	for _, w := range c.client.Workers() {
		if w.Registered && !w.Lost {
			out[w.Rank] = w.ID
		}
	}
	return out
}

// Workers lists the workers with their restart counts.
func (c *Cluster) Workers() []WorkerStatus {
	var restarts []int
	if c.workers != nil {
		restarts = c.workers.Restarts()
	}
	var out []WorkerStatus
	for _, w := range c.client.Workers() {
		st := WorkerStatus{WorkerInfo: w}
		if w.Rank >= 0 && w.Rank < len(restarts) {
			st.Restarts = restarts[w.Rank]
		}
		out = append(out, st)
	}
	return out
}

// launch starts the local worker processes, each pinned to its own GPU
// (CUDA_VISIBLE_DEVICES) when they run the CUDA backend.
func (c *Cluster) launch(url, token string) error {
	o := &c.opts
	devices := GPUs()
	if o.Backend == "cuda" && len(devices) < o.TP {
		return fmt.Errorf("cluster: --backend cuda with --tp %d: %d GPU(s) visible", o.TP, len(devices))
	}
	bin := o.WorkerBin
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cluster: locating the worker binary: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), "worker")
	}
	var err error
	c.workers, err = launch.Start(launch.Options{
		Bin: bin, WorldSize: o.TP, Logger: c.log.Named("launch"),
		// The token travels in the environment, never on a command line.
		Env: []string{"GPTOSS_NATS_TOKEN=" + token},
		Args: func(rank int) []string {
			args := []string{"--nats-url", url, "--deployment", o.Deployment,
				"--rank", strconv.Itoa(rank), "--world-size", strconv.Itoa(o.TP), "--log-format", "json",
				"--log-level", o.LogLevel, "--step-timeout", o.StepTimeout.String(),
				"--backend", o.Backend, "--load-format", o.LoadFormat}
			if o.CPUKernels != "" && o.Backend == "cpu" {
				args = append(args, "--cpu-kernels", o.CPUKernels)
			}
			return args
		},
		EnvFor: func(rank int) []string {
			if o.Backend != "cuda" {
				return nil
			}
			return []string{"CUDA_VISIBLE_DEVICES=" + devices[rank]}
		},
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// Stop tells the workers to shut down, stops the launched processes, closes
// the connection and stops the embedded NATS server, in that order: the
// workers must hear the shutdown before the bus goes. Call it after the
// scheduler has closed (nothing steps any more). It is safe on a partly
// started cluster and more than once.
func (c *Cluster) Stop() {
	if c.client != nil {
		c.client.Shutdown()
	}
	if c.workers != nil {
		c.workers.Stop(10 * time.Second)
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.nats != nil {
		c.nats.Shutdown()
	}
}
