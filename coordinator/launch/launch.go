// Package launch starts and stops the local worker processes of the
// one-command mode: one per rank, each killed if the coordinator dies
// (parent-death signal, plus the parent pid the worker polls), with its
// stderr relayed into the coordinator's log under its rank.
//
// This is the first cut: processes are started with os/exec and not
// restarted when they die (the scheduler's steps then fail with the
// worker's timeout). Supervision through go-plugin, with restarts and
// backoff, replaces it in the workers issue.
package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Options configures Start.
type Options struct {
	// Bin is the worker executable.
	Bin string
	// Args returns the command-line arguments of rank's worker.
	Args func(rank int) []string
	// Env is added to the coordinator's environment for every worker.
	Env       []string
	WorldSize int
	Logger    *zap.Logger
}

// Group is the running worker processes.
type Group struct {
	log   *zap.Logger
	procs []*proc
}

type proc struct {
	rank int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start launches every rank. The processes are started from one goroutine
// locked to its OS thread for the Group's lifetime: Linux delivers the
// parent-death signal when the creating thread exits, not the process.
func Start(o Options) (*Group, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.WorldSize < 1 {
		return nil, ErrNoWorkers
	}
	if _, err := os.Stat(o.Bin); err != nil {
		return nil, fmt.Errorf("launch: worker binary: %w (build it with `make build`)", err)
	}
	g := &Group{log: o.Logger}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for rank := range o.WorldSize {
			p, err := g.start(o, rank)
			if err != nil {
				started <- err
				return
			}
			g.procs = append(g.procs, p)
		}
		started <- nil
		// Keep this thread, the workers' parent thread, alive for good
		// (one parked goroutine per Group; the coordinator has one).
		select {}
	}()
	if err := <-started; err != nil {
		g.Stop(time.Second)
		return nil, err
	}
	return g, nil
}

func (g *Group) start(o Options, rank int) (*proc, error) {
	cmd := exec.Command(o.Bin, o.Args(rank)...)
	cmd.Env = append(append(os.Environ(), o.Env...), "GPTOSS_WORKER_PARENT_PID="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("launch: rank %d: %w", rank, err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("launch: rank %d: %w", rank, err)
	}
	p := &proc{rank: rank, cmd: cmd, done: make(chan struct{})}
	log := g.log.With(zap.Int("worker_rank", rank), zap.Int("pid", cmd.Process.Pid))
	log.Info("worker started", zap.String("bin", o.Bin))
	var relay sync.WaitGroup
	relay.Add(1)
	go func() {
		defer relay.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			log.Info("worker log", zap.String("line", sc.Text()))
		}
	}()
	go func() {
		relay.Wait()
		p.err = cmd.Wait()
		if p.err != nil {
			log.Warn("worker exited", zap.Error(p.err))
		} else {
			log.Info("worker exited")
		}
		close(p.done)
	}()
	return p, nil
}

// Exited reports the ranks whose processes have ended.
func (g *Group) Exited() []int {
	var out []int
	for _, p := range g.procs {
		select {
		case <-p.done:
			out = append(out, p.rank)
		default:
		}
	}
	return out
}

// Stop asks every worker to end (SIGTERM), waits up to timeout, then kills
// what is left (with its process group).
func (g *Group) Stop(timeout time.Duration) {
	for _, p := range g.procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, p := range g.procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

// ErrNoWorkers is returned when the world size is not positive.
var ErrNoWorkers = errors.New("launch: no workers")
