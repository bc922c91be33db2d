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
	"github.com/gptoss/server/coordinator/guide"
	"github.com/gptoss/server/coordinator/hub"
	"github.com/gptoss/server/coordinator/mock"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/startup"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/pipeline"
	"github.com/gptoss/server/shared/pprof"
	"github.com/gptoss/server/shared/step"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "download" {
		os.Exit(download(os.Args[2:], os.Getenv))
	}
	s, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(2)
	}
	// The log goes through the start-up's display, which keeps its
	// progress bars below the log lines on a terminal.
	tracker := startup.NewTracker()
	tty := logging.StderrIsTerminal()
	disp := startup.NewDisplay(tracker, os.Stderr, tty)
	log, err := logging.NewTo(s.LogLevel, s.LogFormat, disp.Writer(), tty)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(2)
	}
	disp.SetLogger(log.Named("startup"))
	// Signals before anything starts: a SIGTERM while the workers load
	// still ends the process cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := serve(s, log, tracker, disp, sigs); err != nil {
		log.Error("coordinator failed", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
	_ = log.Sync()
}

// resolveTimeout bounds what happens before the port opens: asking the
// Hub and fetching config.json (the weights come after).
const resolveTimeout = 2 * time.Minute

// serve builds the coordinator's parts and runs them until a signal, a
// failed listener or a failed engine ends them. The port opens before the
// weights are downloaded and loaded: /health shows the progress, and
// generation requests get 503 until the model is ready.
func serve(s config.Settings, log *zap.Logger, tracker *startup.Tracker, disp *startup.Display, sigs <-chan os.Signal) error {
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
	// pprof (off unless --pprof-addr) serves from here on, so the
	// start-up can be profiled; actor 6 owns it once the group runs.
	pp, err := pprof.Start(s.PprofAddr, log.Named("pprof"))
	if err != nil {
		return err
	}
	defer pp.Close()
	hc := hub.New(hub.EnvFrom(os.Getenv), hub.Options{Logger: log.Named("hub"), UserAgent: "gptoss-server/" + version,
		Progress: tracker.FileProgress})
	rctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	src, err := startup.Resolve(rctx, startup.Request{Model: s.Model, Revision: s.Revision, Mock: s.Mock,
		LoadFormat: s.LoadFormat, FallbackModel: s.FallbackModel, Hub: hc, Logger: log.Named("startup")})
	cancel()
	if err != nil {
		return err
	}
	tracker.Begin(src)
	preset := src.Preset
	backend := cluster.BackendFor(s.Backend, s.TP, cluster.GPUs())
	if src.Mode == "real" {
		src.Reason += fmt.Sprintf(" on %d %s worker process(es)", s.TP, backend)
	}
	log.Info("starting coordinator",
		zap.String("version", version), zap.String("model", preset.ID), zap.String("profile", s.Profile),
		zap.String("mode", src.Mode), zap.String("source", src.Kind), zap.String("reason", src.Reason), zap.Any("settings", s.Redacted()))
	switch {
	case src.Mode == "mock":
		log.Warn("MOCK MODE: no model weights are loaded; replies come from the deterministic mock engine, marked by the "+
			api.MockHeader+" header and a mock_ system_fingerprint", zap.String("reason", src.Reason))
	case src.Fallback:
		log.Warn("FALLBACK MODEL: "+s.Model+"'s weights cannot be had; serving "+s.FallbackModel+" instead", zap.String("reason", src.Reason))
	}

	tok, err := tokenizer.New()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec, err := stats.New(profs.Names(), reg, stats.WithModel(preset.ID, preset.ContextLength))
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

	// The NATS bus (embedded unless --nats-url): the stored responses
	// now, the workers' steps once the engine starts.
	clusterOpts := cluster.Options{
		TP: s.TP, Backend: backend, Launch: s.Workers == "launch", WorkerBin: s.WorkerBin,
		Deployment: s.Deployment, StepTimeout: s.StepTimeout, StepTimeoutPerToken: s.StepTimeoutPerToken, LoadTimeout: s.LoadTimeout,
		MaxStepTokens: s.MaxStepTokens, MaxSeqs: s.MaxRunning,
		LoadFormat: s.LoadFormat, CPUKernels: s.CPUKernels, LogLevel: s.LogLevel, Vocab: src.Vocab, Logger: log.Named("cluster"),
	}
	b, err := openBus(context.Background(), s, cluster.MaxPending(clusterOpts), log)
	if err != nil {
		return err
	}
	defer func() {
		b.Close()
		log.Info("NATS stopped")
	}()
	clusterOpts.NATSURL, clusterOpts.NATSToken = b.url, b.token
	store, storeKind := b.Responses()

	// The mock serves at once; the real engine starts behind the open
	// port (actor 5), the scheduler stepping a stand-in executor until the
	// model is loaded.
	var exec step.Executor
	var workers func() any
	var eng *startup.Engine
	if src.Mode == "real" {
		stand := &startup.Executor{}
		eng = startup.NewEngine(src, tracker, hc, clusterOpts, stand, log.Named("startup"))
		exec, workers = stand, eng.Workers
	} else {
		m := mock.New(tok, preset.ID, mock.Timing{Step: s.MockStep, PerSeq: s.MockPerSeq, PerPrefillToken: s.MockPrefillPerToken})
		m.SetMinReply(s.MockMinReplyTokens)
		// The mock runs its steps on a goroutine of its own, so that the
		// scheduler submits step k+1 while step k runs, as with workers.
		p := pipeline.New(m)
		defer p.Close()
		exec = p
	}
	sch := sched.New(exec, profs, sched.Options{MaxRunning: s.MaxRunning, MaxStepTokens: s.MaxStepTokens, NoPrefixCache: !s.PrefixCache,
		NoPipeline:   !s.Pipeline,
		ReadyTimeout: s.LoadTimeout,
		Logger:       log.Named("sched"), OnStep: rec.ObserveStep, OnPreempt: rec.ObservePreemption,
		OnStepFailure: rec.ObserveStepFailure, OnGuide: rec.ObserveGuide})
	srv, err := api.New(api.Options{
		Model: preset, Mode: src.Mode, ModeReason: src.Reason, Profiles: profs, DefaultProfile: s.Profile, Startup: tracker, ResponseStore: store, ResponseStoreKind: storeKind,
		APIKeys: s.APIKeys, EnableStreaming: s.EnableStreaming, ReasoningField: s.ReasoningField, MaxBodyBytes: s.MaxBodyBytes,
		Limits: api.Limits{MaxMessages: s.MaxMessages, MaxN: s.MaxN, MaxStop: s.MaxStop, MaxStopBytes: 256,
			MaxTools: s.MaxTools, MaxPromptStrings: api.DefaultLimits.MaxPromptStrings},
		CORS:            api.CORS{Origins: s.CORSOrigins, AllowCredentials: s.CORSAllowCredentials},
		SSEWriteTimeout: s.SSEWriteTimeout, Tokenizer: tok, Engine: sch, Stats: rec, Gatherer: reg,
		Logger: log.Named("api"), Version: version, Workers: workers,
		KeyLimits:   api.KeyLimits{Rate: s.KeyRate, Burst: s.KeyBurst, Concurrency: s.KeyConcurrency},
		StrictTools: s.StrictTools, Console: s.UI,
	})
	// llguidance's vocabulary takes about half a second to build: build it
	// now, behind the open port, rather than in the first structured
	// request.
	go func() {
		c := guide.Shared()
		if err := c.Err(); err != nil {
			log.Warn("structured output is unavailable (response_format json, tool_choice required or named, strict tools and guided_* are refused)", zap.Error(err))
			return
		}
		log.Info("structured output ready", zap.String("llguidance", c.Version()))
	}()
	// Until the group runs, a failure stops what started, in order.
	abort := func(err error) error {
		sch.Close()
		return err
	}
	if err != nil {
		return abort(err)
	}
	if err := registerEngineMetrics(reg, preset.ID, sch, workers); err != nil {
		return abort(err)
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return abort(fmt.Errorf("listen %s: %w", addr, err))
	}
	log.Info("listening", zap.String("address", l.Addr().String()), zap.String("mode", src.Mode), zap.String("phase", tracker.Phase()),
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

	// 4: the start-up's progress display, until the model is ready.
	dctx, dcancel := context.WithCancel(context.Background())
	g.Add(func() error {
		disp.Run(dctx)
		<-dctx.Done() // the display ends early; the group must not
		return nil
	}, func(error) { dcancel() })

	// 5: the real engine: download, workers, load, then the reload
	// watcher. Stopping it stops the workers and then the NATS bus,
	// after the scheduler has closed (actor 2). A failed start-up ends
	// the process with its error.
	if eng != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			if err := eng.Run(ctx); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}, func(error) {
			cancel()
			eng.Stop()
			log.Info("workers stopped")
		})
	}

	// 6: pprof, last: it stays up while the others stop, so that a
	// shutdown that hangs can still be profiled.
	if pp != nil {
		g.Add(pp.Wait, func(error) { pp.Close() })
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
