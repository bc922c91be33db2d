package pprof

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestCheckLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:6060": true,
		"localhost:6060": true,
		"[::1]:6060":     true,
		"127.0.0.2:0":    true,  // all of 127/8 is loopback
		":6060":          false, // every interface
		"0.0.0.0:6060":   false,
		"[::]:6060":      false,
		"10.0.0.5:6060":  false,
		"example.com:80": false,
		"127.0.0.1":      false, // no port
		"127.0.0.1:http": false,
		"127.0.0.1:-1":   false,
	} {
		err := Check(addr)
		if (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want ok %v", addr, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--pprof-addr") {
			t.Errorf("Check(%q): %q does not name the flag", addr, err)
		}
	}
	// The refusal happens before anything listens.
	if p, err := Start("0.0.0.0:0", zap.NewNop()); err == nil || p != nil {
		t.Fatalf("startPprof on every interface: %v, %v", p, err)
	} else if !strings.Contains(err.Error(), "loopback only") {
		t.Errorf("error %q does not say why", err)
	}
}

func TestServes(t *testing.T) {
	if p, err := Start("", zap.NewNop()); p != nil || err != nil {
		t.Fatalf("off: %v, %v", p, err)
	}
	p, err := Start("127.0.0.1:0", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.Addr().String()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
	}
	// A second listener on the same port is a clear start-up error.
	if _, err := Start(p.Addr().String(), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "pprof: listen") {
		t.Errorf("port in use: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	p.Close()
	p.Close() // idempotent
	if err := <-done; err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	if _, err := http.Get(base + "/debug/pprof/"); err == nil {
		t.Error("still serving after Close")
	}
}
