// Command coordinator is the gpt-oss server's front process: the
// OpenAI-compatible HTTP API, profiles, Harmony, tokenization and the
// scheduler. It generates through an engine behind the scheduler: the
// in-process mock engine today; the worker processes (one per GPU, over
// NATS and NCCL) when they land.
//
//	coordinator --model 20b --profile latency_first --port 8000
//
// See --help for every setting; each also reads GPTOSS_<NAME> from the
// environment and <name> from a --config YAML file.
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/api"
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
	if err := run(s, log); err != nil {
		log.Error("coordinator failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

func run(s config.Settings, log *zap.Logger) error {
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

	// The real engine needs the model's weights; without them --mock=auto
	// serves the mock engine and says why, --mock=false refuses to start.
	var mode, reason, dir string
	backend := backendFor(s.Backend, s.TP, gpus())
	switch {
	case s.Mock == "true":
		mode, reason = "mock", "requested with --mock"
	case s.LoadFormat == "dummy":
		// Random weights of the real shapes: the workers build them, so
		// nothing is needed here but the preset (or a directory's config).
		mode, reason, dir = "real", fmt.Sprintf("dummy weights of %s (--load-format dummy) on %d %s worker process(es)", s.Model, s.TP, backend), s.Model
		if cfg, err := model.LoadConfig(s.Model); err == nil {
			preset.ContextLength = cfg.MaxPositions
		}
	default:
		d, err := model.FindCheckpoint(s.Model, os.Getenv)
		switch {
		case err == nil:
			mode, reason, dir = "real", fmt.Sprintf("%d %s worker process(es) on %s", s.TP, backend, d), d
			// The checkpoint's own config sets the context length.
			cfg, err := model.LoadConfig(d)
			if err != nil {
				return err
			}
			preset.ContextLength = cfg.MaxPositions
		case s.Mock == "false":
			return err
		default:
			mode, reason = "mock", err.Error()+" (--mock=auto fell back to the mock engine)"
		}
	}
	log.Info("starting coordinator",
		zap.String("version", version), zap.String("model", preset.ID), zap.String("profile", s.Profile),
		zap.String("mode", mode), zap.Any("settings", s.Redacted()))
	if mode == "mock" {
		log.Warn("MOCK MODE: no model weights are loaded; replies come from the deterministic mock engine",
			zap.String("reason", reason))
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
	var exec step.Executor
	var workers func() any
	if mode == "real" {
		real, err := startReal(s, dir, backend, log)
		if err != nil {
			return err
		}
		defer real.stop()
		exec = real.client
		workers = real.status
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
		Model: preset, Mode: mode, ModeReason: reason, Profiles: profs, DefaultProfile: s.Profile,
		APIKeys: s.APIKeys, EnableStreaming: s.EnableStreaming, ReasoningField: s.ReasoningField, MaxBodyBytes: s.MaxBodyBytes,
		Limits: api.Limits{MaxMessages: s.MaxMessages, MaxN: s.MaxN, MaxStop: s.MaxStop, MaxStopBytes: 256,
			MaxTools: s.MaxTools, MaxPromptStrings: 1},
		SSEWriteTimeout: s.SSEWriteTimeout, Tokenizer: tok, Engine: sch, Stats: rec, Gatherer: reg,
		Logger: log.Named("api"), Version: version, Workers: workers,
		KeyLimits: api.KeyLimits{Rate: s.KeyRate, Burst: s.KeyBurst, Concurrency: s.KeyConcurrency},
	})
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	log.Info("listening", zap.String("address", l.Addr().String()), zap.String("mode", mode),
		zap.Bool("auth", len(s.APIKeys) > 0), zap.Bool("streaming", s.EnableStreaming))

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()

	gaugeTick := time.NewTicker(2 * time.Second)
	defer gaugeTick.Stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	for {
		select {
		case err := <-serveErr:
			sch.Close()
			return err
		case <-gaugeTick.C:
			srv.UpdateLoadGauges()
		case sig := <-sigs:
			log.Info("shutting down: draining requests", zap.String("signal", sig.String()), zap.Duration("timeout", s.ShutdownTimeout))
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				// A second signal cuts the drain short.
				<-sigs
				log.Warn("second signal: aborting running requests now")
				cancel()
			}()
			err := srv.Shutdown(ctx, s.ShutdownTimeout)
			cancel()
			log.Info("shutdown complete")
			return err
		}
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
