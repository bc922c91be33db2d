package launch

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A script that lives until killed stands in for the worker.
func fakeWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho started >&2\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	g, err := Start(Options{Bin: fakeWorker(t), WorldSize: 2, Args: func(int) []string { return nil }})
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
	if _, err := Start(Options{Bin: fakeWorker(t), WorldSize: 0}); err != ErrNoWorkers {
		t.Fatalf("world size 0: %v", err)
	}
}
