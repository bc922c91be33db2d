// Command coordinator is the gpt-oss server's front process: the
// OpenAI-compatible HTTP API, profiles, Harmony, tokenization and the
// scheduler, generating through the worker processes over NATS
// (coordinator/cluster) or, without the model's weights, the in-process
// mock engine (coordinator/mock).
//
//	coordinator --model 20b --profile latency_first --port 8000
//
// See --help for every setting; each also reads GPTOSS_<NAME> from the
// environment and <name> from a --config YAML file.
//
// main only reads the settings, builds the parts and wires them as a
// run.Group (oklog/run): signals, the HTTP server, the gauge ticker and the
// real engine. The group's first actor to return stops the others, one
// after another in the order they were added, which is the shutdown order:
// the HTTP server drains its requests and closes the scheduler before the
// workers and the NATS bus go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/api"
	"github.com/gptoss/server/coordinator/cluster"
	"github.com/gptoss/server/coordinator/config"
	"github.com/gptoss/server/coordinator/mock"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	s, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(2)
	}
	log, err := logging.New(s.LogLevel, s.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(2)
	}
	// Signals before anything starts: a SIGTERM while the workers load
	// still ends the process cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := serve(s, log, sigs); err != nil {
		log.Error("coordinator failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

// engine is what generates: the mock, or the workers.
type engine struct {
	mode, reason string // "mock" or "real", and why, for the log and /health
	dir          string // the checkpoint (or preset, for dummy weights) the workers load
	backend      string // the workers' backend: cpu or cuda
	vocab        int    // the model's vocabulary size
}

// chooseEngine decides between the real engine and the mock: the real one
// needs the model's weights; without them --mock=auto serves the mock and
// says why, --mock=false refuses to start. It also sets the preset's
// context length from the checkpoint.
func chooseEngine(s config.Settings, preset *model.Preset) (engine, error) {
	e := engine{backend: cluster.BackendFor(s.Backend, s.TP, cluster.GPUs()), vocab: preset.Architecture().Vocab}
	switch {
	case s.Mock == "true":
		e.mode, e.reason = "mock", "requested with --mock"
	case s.LoadFormat == "dummy":
		// Random weights of the real shapes: the workers build them, so
		// nothing is needed here but the preset (or a directory's config).
		e.mode, e.dir = "real", s.Model
		e.reason = fmt.Sprintf("dummy weights of %s (--load-format dummy) on %d %s worker process(es)", s.Model, s.TP, e.backend)
		if cfg, err := model.LoadConfig(s.Model); err == nil {
			preset.ContextLength, e.vocab = cfg.MaxPositions, cfg.Vocab
		}
	default:
		d, err := model.FindCheckpoint(s.Model, os.Getenv)
		switch {
		case err == nil:
			e.mode, e.dir = "real", d
			e.reason = fmt.Sprintf("%d %s worker process(es) on %s", s.TP, e.backend, d)
			// The checkpoint's own config sets the context length.
			cfg, err := model.LoadConfig(d)
			if err != nil {
				return e, err
			}
			preset.ContextLength, e.vocab = cfg.MaxPositions, cfg.Vocab
		case s.Mock == "false":
			return e, err
		default:
			e.mode, e.reason = "mock", err.Error()+" (--mock=auto fell back to the mock engine)"
		}
	}
	return e, nil
}

// serve builds the coordinator's parts and runs them until a signal, a
// failed listener or a failed engine ends them.
func serve(s config.Settings, log *zap.Logger, sigs <-chan os.Signal) error {
	preset, err := model.Resolve(s.Model)
	if err != nil {
		return err
	}
	profs, err := profiles.Load(s.ProfilesFile)
	if err != nil {
		return err
	}
	if _, err := profs.Get(s.Profile); err != nil {
		return fmt.Errorf("--profile: %w", err)
	}
	if len(s.APIKeys) == 0 && !s.AllowUnauthenticated && !isLoopback(s.Host) {
		return fmt.Errorf("refusing to listen on %s without API keys: set --api-key (or GPTOSS_API_KEY), or --allow-unauthenticated", s.Host)
	}
	eng, err := chooseEngine(s, &preset)
	if err != nil {
		return err
	}
	log.Info("starting coordinator",
		zap.String("version", version), zap.String("model", preset.ID), zap.String("profile", s.Profile),
		zap.String("mode", eng.mode), zap.Any("settings", s.Redacted()))
	if eng.mode == "mock" {
		log.Warn("MOCK MODE: no model weights are loaded; replies come from the deterministic mock engine",
			zap.String("reason", eng.reason))
	}

	tok, err := tokenizer.New()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec, err := stats.New(profs.Names(), reg)
	if err != nil {
		return err
	}

	var g run.Group
	// Actors in shutdown order (see the package doc). 1: signals. The
	// first ends the group; a second one cuts the drain short.
	drainCtx, cutDrain := context.WithCancel(context.Background())
	defer cutDrain()
	quit := make(chan struct{})
	g.Add(func() error {
		select {
		case sig := <-sigs:
			log.Info("shutting down: draining requests", zap.String("signal", sig.String()), zap.Duration("timeout", s.ShutdownTimeout))
			go func() {
				select {
				case <-sigs:
					log.Warn("second signal: aborting running requests now")
					cutDrain()
				case <-drainCtx.Done():
				}
			}()
			return nil
		case <-quit:
			return nil
		}
	}, func(error) { close(quit) })

	// The engine starts before the listener, so the port opens when
	// requests can be served.
	var exec step.Executor
	var workers func() any
	var cl *cluster.Cluster
	if eng.mode == "real" {
		cl, err = cluster.Start(cluster.Options{
			Model: eng.dir, TP: s.TP, Backend: eng.backend, Launch: s.Workers == "launch", WorkerBin: s.WorkerBin,
			NATSURL: s.NATSURL, NATSToken: s.NATSToken, Deployment: s.Deployment,
			StepTimeout: s.StepTimeout, StepTimeoutPerToken: s.StepTimeoutPerToken, LoadTimeout: s.LoadTimeout,
			MaxStepTokens: s.MaxStepTokens, MaxSeqs: s.MaxRunning,
			LoadFormat: s.LoadFormat, LogLevel: s.LogLevel, Vocab: eng.vocab, Logger: log.Named("cluster"),
		})
		if err != nil {
			return err
		}
		exec = cl.Executor()
		workers = func() any { return cl.Workers() }
	} else {
		m := mock.New(tok, preset.ID, mock.Timing{Step: s.MockStep, PerSeq: s.MockPerSeq, PerPrefillToken: s.MockPrefillPerToken})
		m.SetMinReply(s.MockMinReplyTokens)
		exec = m
	}
	sch := sched.New(exec, profs, sched.Options{MaxRunning: s.MaxRunning, MaxStepTokens: s.MaxStepTokens, NoPrefixCache: !s.PrefixCache,
		ReadyTimeout: s.LoadTimeout,
		Logger:       log.Named("sched"), OnStep: rec.ObserveStep, OnPreempt: rec.ObservePreemption,
		OnStepFailure: rec.ObserveStepFailure})
	srv, err := api.New(api.Options{
		Model: preset, Mode: eng.mode, ModeReason: eng.reason, Profiles: profs, DefaultProfile: s.Profile,
		APIKeys: s.APIKeys, EnableStreaming: s.EnableStreaming, ReasoningField: s.ReasoningField, MaxBodyBytes: s.MaxBodyBytes,
		Limits: api.Limits{MaxMessages: s.MaxMessages, MaxN: s.MaxN, MaxStop: s.MaxStop, MaxStopBytes: 256,
			MaxTools: s.MaxTools, MaxPromptStrings: 1},
		SSEWriteTimeout: s.SSEWriteTimeout, Tokenizer: tok, Engine: sch, Stats: rec, Gatherer: reg,
		Logger: log.Named("api"), Version: version, Workers: workers,
		KeyLimits: api.KeyLimits{Rate: s.KeyRate, Burst: s.KeyBurst, Concurrency: s.KeyConcurrency},
	})
	// Until the group runs, a failure stops what started, in order.
	abort := func(err error) error {
		sch.Close()
		if cl != nil {
			cl.Stop()
		}
		return err
	}
	if err != nil {
		return abort(err)
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return abort(fmt.Errorf("listen %s: %w", addr, err))
	}
	log.Info("listening", zap.String("address", l.Addr().String()), zap.String("mode", eng.mode),
		zap.Bool("auth", len(s.APIKeys) > 0), zap.Bool("streaming", s.EnableStreaming))

	// 2: the HTTP server. Stopping it drains: admission ends, running
	// requests may finish for --shutdown-timeout (or until a second
	// signal), the rest are aborted, the scheduler closes, the listener
	// closes. When the listener itself failed, nothing is waited for.
	g.Add(func() error {
		return srv.Serve(l)
	}, func(err error) {
		timeout := s.ShutdownTimeout
		if err != nil {
			timeout = 0
		}
		if err := srv.Shutdown(drainCtx, timeout); err != nil {
			log.Warn("closing the HTTP server", zap.Error(err))
		}
		log.Info("requests drained; scheduler closed")
	})

	// 3: the load gauges, refreshed every 2 s.
	tickDone := make(chan struct{})
	g.Add(func() error {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				srv.UpdateLoadGauges()
			case <-tickDone:
				return nil
			}
		}
	}, func(error) { close(tickDone) })

	// 4: the real engine's reload watcher; stopping it stops the workers
	// and then the NATS bus, after the scheduler has closed (actor 2).
	if cl != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return cl.Watch(ctx)
		}, func(error) {
			cancel()
			cl.Stop()
			log.Info("workers and NATS stopped")
		})
	}

	err = g.Run()
	log.Info("shutdown complete")
	return err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
