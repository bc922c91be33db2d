// Package launch starts, supervises and stops the local worker processes
// of the one-command mode: one per rank, each killed if the coordinator
// dies (parent-death signal, plus the parent pid the worker polls), with
// its stderr relayed into the coordinator's log under its rank.
//
// Workers are go-plugin plugins: the handshake on start, a small gRPC
// service (describe, health, shutdown) for the host, while inference
// travels over NATS. A worker that dies is started again after a backoff
// that doubles up to a cap and resets once a process has lived a while;
// Restarts counts them.
package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"go.uber.org/zap"

	"github.com/gptoss/server/shared/plugin"
)

// Options configures Start.
type Options struct {
	// Bin is the worker executable.
	Bin string
	// Args returns the command-line arguments of rank's worker.
	Args func(rank int) []string
	// Env is added to the coordinator's environment for every worker, and
	// EnvFor(rank), when set, to rank's (its GPU, say).
	Env       []string
	EnvFor    func(rank int) []string
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
	client  *goplugin.Client
	svc     plugin.Service
	pid     int
	done    chan struct{}
	started time.Time
	// sockets is the directory of the plugin's gRPC socket, made for this
	// process and removed when it ends: a killed plugin cannot remove its
	// socket itself.
	sockets string
}

// release frees what the host holds for an ended process: go-plugin's RPC
// client and its goroutines, and the socket directory.
func (p *proc) release() {
	p.client.Kill() // a no-op for the process, which has exited
	if p.sockets != "" {
		_ = os.RemoveAll(p.sockets)
	}
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
			return // Stop releases it
		}
		p.release()
		if time.Since(p.started) > healthyAfter {
			backoff = minBackoff
		}
		g.log.Warn("worker died; restarting", zap.Int("worker_rank", rank), zap.Duration("backoff", backoff))
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
			out[i] = p.pid
		}
	}
	return out
}

func (g *Group) start(o Options, rank int) (*proc, error) {
	sockets, err := os.MkdirTemp("", "gptoss-worker-")
	if err != nil {
		return nil, fmt.Errorf("launch: rank %d: socket directory: %w", rank, err)
	}
	cmd := exec.Command(o.Bin, o.Args(rank)...)
	cmd.Env = append(append(os.Environ(), o.Env...), "GPTOSS_WORKER_PARENT_PID="+strconv.Itoa(os.Getpid()),
		goplugin.EnvUnixSocketDir+"="+sockets)
	if o.EnvFor != nil {
		cmd.Env = append(cmd.Env, o.EnvFor(rank)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	log := g.log.With(zap.Int("worker_rank", rank))
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		Plugins:          plugin.PluginMap,
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
		Stderr:           &lineLog{log: log},
		// The handshake only; the model loads later, over NATS.
		StartTimeout: time.Minute,
	})
	fail := func(err error) (*proc, error) {
		client.Kill()
		_ = os.RemoveAll(sockets)
		return nil, fmt.Errorf("launch: rank %d: %w", rank, err)
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(plugin.Name)
	if err != nil {
		return fail(err)
	}
	svc, ok := raw.(plugin.Service)
	if !ok {
		return fail(fmt.Errorf("the plugin is a %T, not a worker", raw))
	}
	p := &proc{rank: rank, client: client, svc: svc, pid: cmd.Process.Pid, done: make(chan struct{}), started: time.Now(),
		sockets: sockets}
	log.Info("worker started", zap.String("bin", o.Bin), zap.Int("pid", p.pid))
	go func() {
		// go-plugin owns the process's Wait; poll its view.
		for !client.Exited() {
			time.Sleep(100 * time.Millisecond)
		}
		log.Warn("worker exited", zap.Int("pid", p.pid))
		close(p.done)
	}()
	return p, nil
}

// lineLog writes a worker's stderr into the coordinator's log, a line at a
// time.
type lineLog struct {
	log *zap.Logger
	buf []byte
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Info("worker log", zap.String("line", string(l.buf[:i])))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 1<<20 { // a line without end: do not grow forever
		l.log.Info("worker log", zap.String("line", string(l.buf)))
		l.buf = l.buf[:0]
	}
	return len(b), nil
}

// Stop asks every worker to drain and end (the plugin's Shutdown), waits
// up to timeout, then kills what is left (go-plugin's Kill, then the
// process group). Nothing is restarted after it.
func (g *Group) Stop(timeout time.Duration) {
	g.mu.Lock()
	g.stopping = true
	procs := append([]*proc(nil), g.procs...)
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, p := range procs {
		if p != nil {
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			_ = p.svc.Shutdown(sctx)
			scancel()
		}
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			p.client.Kill()
			if p.pid > 0 {
				_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			}
			<-p.done
		}
		p.release()
	}
}

// Kill ends rank's process pid at once (SIGKILL to its process group),
// for a worker that is alive but unresponsive (frozen, or hung where its
// own watchdog cannot reach): the supervisor then starts a new one, as for
// a crash. It does nothing when pid is no longer rank's current process
// (it already died and was replaced), and after Stop.
func (g *Group) Kill(rank, pid int) {
	g.mu.Lock()
	var p *proc
	if rank >= 0 && rank < len(g.procs) && !g.stopping {
		p = g.procs[rank]
	}
	g.mu.Unlock()
	if p == nil || p.pid <= 0 || p.pid != pid {
		return
	}
	g.log.Warn("killing an unresponsive worker", zap.Int("worker_rank", rank), zap.Int("pid", p.pid))
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}

// Health asks every worker's plugin service for its state (the host-side
// check; NATS heartbeats carry the same for remote workers).
func (g *Group) Health(ctx context.Context) []*plugin.HealthReply {
	g.mu.Lock()
	procs := append([]*proc(nil), g.procs...)
	g.mu.Unlock()
	out := make([]*plugin.HealthReply, len(procs))
	for i, p := range procs {
		if p == nil {
			continue
		}
		if h, err := p.svc.Health(ctx); err == nil {
			out[i] = h
		}
	}
	return out
}

// ErrNoWorkers is returned when the world size is not positive.
var ErrNoWorkers = errors.New("launch: no workers")
