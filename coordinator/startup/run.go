package startup

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/cluster"
	"github.com/gptoss/server/coordinator/hub"
)

// Engine starts the real engine behind an already serving API: it
// downloads what the snapshot lacks, starts the workers and loads the
// model, then attaches the workers to the scheduler's Executor and keeps
// them (reloading after a worker restart) until stopped.
type Engine struct {
	src     Source
	tracker *Tracker
	hub     *hub.Client
	opts    cluster.Options
	exec    *Executor
	log     *zap.Logger

	mu      sync.Mutex
	cl      *cluster.Cluster
	stopped bool
}

// NewEngine prepares the start of src; opts.Model is set from it.
func NewEngine(src Source, t *Tracker, h *hub.Client, opts cluster.Options, exec *Executor, log *zap.Logger) *Engine {
	opts.Model = src.Dir
	return &Engine{src: src, tracker: t, hub: h, opts: opts, exec: exec, log: log}
}

// Run downloads, starts and loads, then watches the workers until ctx
// ends (nil) or the start-up fails (the error, also in the tracker).
func (e *Engine) Run(ctx context.Context) error {
	begun := time.Now()
	if s := e.src.Snapshot; s != nil && len(s.Missing()) > 0 {
		e.tracker.SetPhase(PhaseDownloading)
		e.log.Info("downloading the model", zap.String("repo", s.Repo), zap.String("revision", s.Revision), zap.String("commit", s.Commit),
			zap.Int("files", len(s.Missing())), zap.String("cache", e.hub.Env().Cache))
		if err := e.hub.Download(ctx, s, nil); err != nil {
			return e.fail(ctx, fmt.Errorf("downloading %s: %w", s.Repo, err))
		}
		e.log.Info("download complete", zap.String("repo", s.Repo), zap.String("dir", s.Dir), zap.Duration("took", time.Since(begun).Round(time.Millisecond)))
	}
	e.tracker.SetPhase(PhaseLoading)
	loadBegun := time.Now()
	cl, err := cluster.Start(e.opts)
	if err != nil {
		return e.fail(ctx, err)
	}
	e.mu.Lock()
	if e.stopped { // Stop came while the cluster started
		e.mu.Unlock()
		cl.Stop()
		return nil
	}
	e.cl = cl
	e.mu.Unlock()
	e.tracker.SetWorkers(func() []WorkerLoad {
		var out []WorkerLoad
		for _, w := range cl.Workers() {
			out = append(out, WorkerLoad{Rank: w.Rank, State: w.State, Done: w.LoadBytesDone, Total: w.LoadBytesTotal})
		}
		return out
	})
	if err := cl.Load(ctx); err != nil {
		return e.fail(ctx, err)
	}
	e.exec.Attach(cl.Executor())
	e.tracker.SetPhase(PhaseReady)
	e.log.Info("model ready", zap.String("model", e.src.Preset.ID), zap.String("dir", e.src.Dir),
		zap.Duration("load", time.Since(loadBegun).Round(time.Millisecond)), zap.Duration("total", time.Since(begun).Round(time.Millisecond)))
	return cl.Watch(ctx)
}

// fail records a failed start-up; a cancelled one (shutdown) is no failure.
func (e *Engine) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	e.tracker.Fail(err)
	return err
}

// Stop stops the workers and the bus (if they started). Call it after the
// scheduler has closed.
func (e *Engine) Stop() {
	e.mu.Lock()
	e.stopped = true
	cl := e.cl
	e.mu.Unlock()
	if cl != nil {
		cl.Stop()
	}
}

// Workers lists the workers for /health and /stats (none before they start).
func (e *Engine) Workers() any {
	e.mu.Lock()
	cl := e.cl
	e.mu.Unlock()
	if cl == nil {
		return []cluster.WorkerStatus{}
	}
	return cl.Workers()
}
