package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/config"
	"github.com/gptoss/server/coordinator/launch"
	"github.com/gptoss/server/coordinator/natsd"
	"github.com/gptoss/server/coordinator/remote"
	"github.com/gptoss/server/shared/wire"
)

// realEngine is the worker side of a real-mode coordinator: the embedded
// NATS server, the worker processes and the client that steps them.
type realEngine struct {
	nats    *natsd.Server
	conn    *nats.Conn
	client  *remote.Client
	workers *launch.Group
}

// startReal launches tp workers for the checkpoint in dir, waits for them
// to register and load, and returns the executor to schedule over.
func startReal(s config.Settings, dir string, log *zap.Logger) (*realEngine, error) {
	e := &realEngine{}
	ok := false
	defer func() {
		if !ok {
			e.stop()
		}
	}()
	var err error
	if e.nats, err = natsd.Start(natsd.Options{Logger: log.Named("nats")}); err != nil {
		return nil, err
	}
	if e.conn, err = nats.Connect(e.nats.ClientURL(), nats.Token(e.nats.Token()), nats.Name("gptoss-coordinator"),
		nats.MaxReconnects(-1)); err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	subjects, err := wire.NewSubjects(s.Deployment)
	if err != nil {
		return nil, err
	}
	if e.client, err = remote.New(remote.Options{Conn: e.conn, Subjects: subjects, WorldSize: s.TP,
		StepTimeout: s.StepTimeout, LoadTimeout: s.LoadTimeout, Logger: log.Named("remote")}); err != nil {
		return nil, err
	}
	bin := s.WorkerBin
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating the worker binary: %w", err)
		}
		bin = filepath.Join(filepath.Dir(self), "worker")
	}
	if e.workers, err = launch.Start(launch.Options{
		Bin: bin, WorldSize: s.TP, Logger: log.Named("launch"),
		Env: []string{"GPTOSS_NATS_TOKEN=" + e.nats.Token()},
		Args: func(rank int) []string {
			return []string{"--nats-url", e.nats.ClientURL(), "--deployment", s.Deployment,
				"--rank", strconv.Itoa(rank), "--world-size", strconv.Itoa(s.TP), "--log-format", "json",
				"--log-level", s.LogLevel, "--step-timeout", s.StepTimeout.String()}
		},
	}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.client.WaitWorkers(ctx, s.TP); err != nil {
		return nil, fmt.Errorf("waiting for %d workers to register: %w", s.TP, err)
	}
	log.Info("workers registered; loading the model", zap.String("dir", dir), zap.Int("tp", s.TP))
	lctx, lcancel := context.WithTimeout(context.Background(), s.LoadTimeout)
	defer lcancel()
	if err := e.client.Load(lctx, &wire.Load{ModelDir: dir, Tp: int32(s.TP)}); err != nil {
		return nil, fmt.Errorf("loading %s: %w", dir, err)
	}
	ok = true
	return e, nil
}

// stop shuts the workers and NATS down (after the scheduler has closed).
func (e *realEngine) stop() {
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
