package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/config"
	"github.com/gptoss/server/coordinator/launch"
	"github.com/gptoss/server/coordinator/remote"
	"github.com/gptoss/server/shared/natsd"
	"github.com/gptoss/server/shared/wire"
)

// realEngine is the worker side of a real-mode coordinator: the embedded
// NATS server, the worker processes and the client that steps them.
type realEngine struct {
	nats    *natsd.Server
	conn    *nats.Conn
	client  *remote.Client
	workers *launch.Group
	cancel  context.CancelFunc // stops the reload watcher
	done    chan struct{}
}

// workerStatus is one worker as /health and /stats show it.
type workerStatus struct {
	remote.WorkerInfo
	Restarts int
}

// startReal launches tp workers for the checkpoint in dir, waits for them
// to register and load, and returns the executor to schedule over.
func startReal(s config.Settings, dir, backend string, log *zap.Logger) (*realEngine, error) {
	e := &realEngine{}
	ok := false
	defer func() {
		if !ok {
			e.stop()
		}
	}()
	var err error
	url, token := s.NATSURL, s.NATSToken
	if url == "" {
		if e.nats, err = natsd.Start(natsd.Options{Logger: log.Named("nats")}); err != nil {
			return nil, err
		}
		url, token = e.nats.ClientURL(), e.nats.Token()
	}
	connOpts := []nats.Option{nats.Name("gptoss-coordinator"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}
	if token != "" {
		connOpts = append(connOpts, nats.Token(token))
	}
	if e.conn, err = nats.Connect(url, connOpts...); err != nil {
		return nil, fmt.Errorf("nats %s: %w", redact(url), err)
	}
	subjects, err := wire.NewSubjects(s.Deployment)
	if err != nil {
		return nil, err
	}
	if e.client, err = remote.New(remote.Options{Conn: e.conn, Subjects: subjects, WorldSize: s.TP,
		StepTimeout: s.StepTimeout, LoadTimeout: s.LoadTimeout, Logger: log.Named("remote")}); err != nil {
		return nil, err
	}
	wait := time.Minute
	if s.Workers == "external" {
		// Started by someone else (foreman, systemd): they may come late.
		wait = s.LoadTimeout
		log.Info("waiting for external workers to register", zap.Int("tp", s.TP), zap.String("nats", redact(url)))
	} else if err := e.launch(s, backend, url, token, log); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.client.WaitWorkers(ctx, s.TP); err != nil {
		return nil, fmt.Errorf("waiting for %d workers to register: %w", s.TP, err)
	}
	log.Info("workers registered; loading the model", zap.String("dir", dir), zap.Int("tp", s.TP))
	lctx, lcancel := context.WithTimeout(context.Background(), s.LoadTimeout)
	defer lcancel()
	if err := e.client.Load(lctx, loadMsg(s, dir)); err != nil {
		return nil, fmt.Errorf("loading %s: %w", dir, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go e.watch(wctx, s, dir, log)
	ok = true
	return e, nil
}

// watch reloads the model on every rank when a worker comes back as a new
// process (restarted by the launcher, systemd or by hand): its KV cache and
// the collective are gone, so every rank starts over with a new epoch.
// Requests that were running fail with the step error; new ones work once
// the reload is done.
func (e *realEngine) watch(ctx context.Context, s config.Settings, dir string, log *zap.Logger) {
	defer close(e.done)
	loaded := e.ids()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := e.ids()
		if len(now) < s.TP || now == nil {
			continue
		}
		changed := false
		for rank, id := range now {
			changed = changed || id != loaded[rank]
		}
		if !changed {
			continue
		}
		log.Warn("a worker restarted: reloading the model on every rank", zap.Any("workers", now))
		lctx, cancel := context.WithTimeout(ctx, s.LoadTimeout)
		// A worker that dies or restarts during the reload (a rank stuck
		// in a collective with the dead one is killed by its step
		// watchdog) never answers its Load: start over at once instead of
		// waiting out LoadTimeout.
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-t.C:
				}
				if !sameIDs(now, e.ids()) {
					cancel()
					return
				}
			}
		}()
		err := e.client.WaitWorkers(lctx, s.TP)
		if err == nil {
			err = e.client.Load(lctx, loadMsg(s, dir))
		}
		cancel()
		if err != nil {
			log.Error("reloading after a worker restart failed; will retry", zap.Error(err))
			continue
		}
		loaded = now
		log.Info("model reloaded after a worker restart")
	}
}

// loadMsg is the Load every rank gets: the checkpoint, the tensor-parallel
// degree and the scheduler's step limits (a GPU sizes its buffers by them).
func loadMsg(s config.Settings, dir string) *wire.Load {
	return &wire.Load{ModelDir: dir, Tp: int32(s.TP), MaxStepTokens: int32(s.MaxStepTokens), MaxSeqs: int32(s.MaxRunning)}
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
func (e *realEngine) ids() map[int]string {
	out := map[int]string{}
	for _, w := range e.client.Workers() {
		if w.Registered && !w.Lost {
			out[w.Rank] = w.ID
		}
	}
	return out
}

// status lists the workers with their restart counts.
func (e *realEngine) status() any {
	var restarts []int
	if e.workers != nil {
		restarts = e.workers.Restarts()
	}
	var out []workerStatus
	for _, w := range e.client.Workers() {
		st := workerStatus{WorkerInfo: w}
		if w.Rank >= 0 && w.Rank < len(restarts) {
			st.Restarts = restarts[w.Rank]
		}
		out = append(out, st)
	}
	return out
}

// launch starts the local worker processes, each pinned to its own GPU
// (CUDA_VISIBLE_DEVICES) when they run the CUDA backend.
func (e *realEngine) launch(s config.Settings, backend, url, token string, log *zap.Logger) error {
	devices := gpus()
	if backend == "cuda" && len(devices) < s.TP {
		return fmt.Errorf("--backend cuda with --tp %d: %d GPU(s) visible", s.TP, len(devices))
	}
	bin := s.WorkerBin
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("locating the worker binary: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), "worker")
	}
	var err error
	e.workers, err = launch.Start(launch.Options{
		Bin: bin, WorldSize: s.TP, Logger: log.Named("launch"),
		// The token travels in the environment, never on a command line.
		Env: []string{"GPTOSS_NATS_TOKEN=" + token},
		Args: func(rank int) []string {
			return []string{"--nats-url", url, "--deployment", s.Deployment,
				"--rank", strconv.Itoa(rank), "--world-size", strconv.Itoa(s.TP), "--log-format", "json",
				"--log-level", s.LogLevel, "--step-timeout", s.StepTimeout.String(),
				"--backend", backend, "--load-format", s.LoadFormat}
		},
		EnvFor: func(rank int) []string {
			if backend != "cuda" {
				return nil
			}
			return []string{"CUDA_VISIBLE_DEVICES=" + devices[rank]}
		},
	})
	return err
}

// redact hides credentials in a NATS URL for logs.
func redact(url string) string {
	if at := strings.LastIndex(url, "@"); at >= 0 {
		if i := strings.Index(url, "://"); i >= 0 && i < at {
			return url[:i+3] + "<redacted>" + url[at:]
		}
	}
	return url
}

// stop shuts the workers and NATS down (after the scheduler has closed).
func (e *realEngine) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	if e.client != nil {
		e.client.Shutdown()
	}
	if e.workers != nil {
		e.workers.Stop(10 * time.Second)
	}
	if e.conn != nil {
		e.conn.Close()
	}
	if e.nats != nil {
		e.nats.Shutdown()
	}
}
