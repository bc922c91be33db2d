package launch

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gptoss/server/shared/testkit"
)

var workerBin string

// TestMain builds the real worker: it speaks the go-plugin handshake. The
// tests point it at a NATS address where nothing listens, so it only
// serves the plugin side while it retries.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "launch-test")
	if err != nil {
		panic(err)
	}
	workerBin = filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", workerBin, "../../worker").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func workerArgs(rank int) []string {
	return []string{"--nats-url", "nats://127.0.0.1:1", "--coordinator-timeout", "60s", "--rank", strconv.Itoa(rank), "--world-size", "2"}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, what, cond)
}

// alive reports whether pid exists and is not a zombie (/proc/PID/stat's
// state field).
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return !(i >= 0 && i+2 < len(s) && s[i+2] == 'Z')
}

func TestRestartAndStop(t *testing.T) {
	g, err := Start(Options{Bin: workerBin, WorldSize: 2, Args: workerArgs})
	if err != nil {
		t.Fatal(err)
	}
	first := g.PIDs()
	if first[0] == 0 || first[1] == 0 {
		t.Fatalf("pids %v", first)
	}
	if err := syscall.Kill(first[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rank 1 to restart", func() bool { return g.Restarts()[1] == 1 && g.PIDs()[1] != first[1] })
	if g.Restarts()[0] != 0 || g.PIDs()[0] != first[0] {
		t.Fatal("rank 0 was touched")
	}
	// The host's health check goes through the plugin's gRPC service.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for rank, h := range g.Health(ctx) {
		if h == nil || h.State == "" {
			t.Fatalf("rank %d health %v", rank, h)
		}
	}
	now := g.PIDs()
	g.Stop(2 * time.Second)
	for _, pid := range now {
		waitFor(t, "workers to stop", func() bool { return !alive(pid) })
	}
	time.Sleep(maxBackoff / 20)
	if g.Restarts()[0] != 0 || g.Restarts()[1] != 1 {
		t.Fatalf("restarted after Stop: %v", g.Restarts())
	}
}

func TestMissingBinary(t *testing.T) {
	if _, err := Start(Options{Bin: "/nonexistent/worker", WorldSize: 1, Args: func(int) []string { return nil }}); err == nil {
		t.Fatal("no error")
	}
	if _, err := Start(Options{Bin: workerBin, WorldSize: 0}); !errors.Is(err, ErrNoWorkers) {
		t.Fatalf("world size 0: %v", err)
	}
}

// Restarts leak nothing: after a worker is killed and restarted several
// times (Kill, the way an unresponsive worker is ended), the coordinator
// holds no more goroutines than with the first process, and no socket
// file of a dead plugin is left in the temporary directory (each restart
// leaked about three goroutines and a socket).
func TestRestartsLeakNothing(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	g, err := Start(Options{Bin: workerBin, WorldSize: 1, Args: workerArgs})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop(2 * time.Second)
	settle := func() int {
		time.Sleep(300 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	base := settle()
	for i := range 4 {
		pid := g.PIDs()[0]
		g.Kill(0, pid+1) // not its process: nothing happens
		g.Kill(0, pid)
		waitFor(t, "rank 0 to restart", func() bool { return g.Restarts()[0] == i+1 && g.PIDs()[0] != pid })
		waitFor(t, "the old process to be gone", func() bool { return !alive(pid) })
	}
	if n := settle(); n > base+3 {
		t.Errorf("%d goroutines after 4 restarts, %d after the first start", n, base)
	}
	var left []string
	_ = filepath.WalkDir(tmp, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 {
			left = append(left, path)
		}
		return nil
	})
	if len(left) != 1 { // the live worker's
		t.Errorf("sockets in the temporary directory: %v", left)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "gptoss-worker-*")); len(dirs) != 1 {
		t.Errorf("socket directories: %v", dirs)
	}
}
