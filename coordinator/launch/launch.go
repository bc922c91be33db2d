// Package launch starts and stops the local worker processes of the
// one-command mode: one per rank, each killed if the coordinator dies
// (parent-death signal, plus the parent pid the worker polls), with its
// stderr relayed into the coordinator's log under its rank.
//
// A worker that dies is started again after a backoff that doubles up to
// a cap and resets once a process has lived a while; Restarts counts them.
// (go-plugin's handshake and gRPC health are not used yet: the workers
// speak NATS, which carries everything, and os/exec suffices to supervise.)
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
	log      *zap.Logger
	opts     Options
	mu       sync.Mutex
	procs    []*proc // current process per rank
	restarts []int
	stopping bool
	starts   chan startReq // served by the locked parent thread
}

type proc struct {
	rank    int
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	started time.Time
}

type startReq struct {
	rank  int
	reply chan startResult
}

type startResult struct {
	p   *proc
	err error
}

// Backoff bounds for restarts.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
	// a process that lived this long resets the backoff
	healthyAfter = 30 * time.Second
)

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
	g := &Group{log: o.Logger, opts: o, procs: make([]*proc, o.WorldSize), restarts: make([]int, o.WorldSize),
		starts: make(chan startReq)}
	go func() {
		// Every worker is started from this goroutine's thread, which never
		// exits (never unlocked): the parent-death signal fires when the
		// creating thread exits. One parked goroutine per Group.
		runtime.LockOSThread()
		for req := range g.starts {
			p, err := g.start(o, req.rank)
			req.reply <- startResult{p, err}
		}
	}()
	for rank := range o.WorldSize {
		p, err := g.spawn(rank)
		if err != nil {
			g.Stop(time.Second)
			return nil, err
		}
		g.mu.Lock()
		g.procs[rank] = p
		g.mu.Unlock()
		go g.supervise(rank, p)
	}
	return g, nil
}

// spawn starts rank's process on the parent thread.
func (g *Group) spawn(rank int) (*proc, error) {
	reply := make(chan startResult, 1)
	g.starts <- startReq{rank: rank, reply: reply}
	r := <-reply
	return r.p, r.err
}

// supervise restarts rank whenever its process ends unexpectedly.
func (g *Group) supervise(rank int, p *proc) {
	backoff := minBackoff
	for {
		<-p.done
		g.mu.Lock()
		stopping := g.stopping
		g.mu.Unlock()
		if stopping {
			return
		}
		if time.Since(p.started) > healthyAfter {
			backoff = minBackoff
		}
		g.log.Warn("worker died; restarting", zap.Int("worker_rank", rank), zap.Duration("backoff", backoff), zap.Error(p.err))
		time.Sleep(backoff)
		backoff = min(2*backoff, maxBackoff)
		g.mu.Lock()
		if g.stopping {
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		np, err := g.spawn(rank)
		if err != nil {
			g.log.Error("restarting a worker failed", zap.Int("worker_rank", rank), zap.Error(err))
			continue // p.done is closed: wait out the next backoff and retry
		}
		g.mu.Lock()
		g.procs[rank] = np
		g.restarts[rank]++
		g.mu.Unlock()
		p = np
	}
}

// Restarts reports how often each rank was restarted.
func (g *Group) Restarts() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.restarts...)
}

// PIDs reports each rank's current process id.
func (g *Group) PIDs() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int, len(g.procs))
	for i, p := range g.procs {
		if p != nil {
			out[i] = p.cmd.Process.Pid
		}
	}
	return out
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
	p := &proc{rank: rank, cmd: cmd, done: make(chan struct{}), started: time.Now()}
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

// Stop asks every worker to end (SIGTERM), waits up to timeout, then kills
// what is left (with its process group). Nothing is restarted after it.
func (g *Group) Stop(timeout time.Duration) {
	g.mu.Lock()
	g.stopping = true
	procs := append([]*proc(nil), g.procs...)
	g.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, p := range procs {
		if p == nil {
			continue
		}
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
