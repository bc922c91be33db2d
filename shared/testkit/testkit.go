// Package testkit holds the helpers the tests of both sides share: a NATS
// server configured as in production (shared/natsd) and polling for a
// condition that becomes true asynchronously. Tests only: nothing outside
// _test.go files imports it (shared/step's TestLayering does not check
// that; a review does).
package testkit

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gptoss/server/shared/natsd"
)

// NATS starts an embedded NATS server on a random loopback port with a
// random token, configured as the coordinator's (message size limits
// included), and shuts it down when the test ends.
func NATS(tb testing.TB) *natsd.Server {
	tb.Helper()
	srv, err := natsd.Start(natsd.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// Connect opens a client connection to srv, closed when the test ends.
func Connect(tb testing.TB, srv *natsd.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(srv.ClientURL(), append([]nats.Option{nats.Token(srv.Token())}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Poll is how often Eventually checks its condition.
const Poll = 5 * time.Millisecond

// Eventually waits up to timeout for cond to hold, checking every Poll,
// and fails the test naming what it waited for otherwise.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Within(timeout, cond) {
		tb.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Within reports whether cond holds within timeout, checking every Poll
// (for tests that fail with their own message).
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Poll)
	}
	return true
}

// Context is a context that ends after timeout or with the test.
func Context(tb testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	tb.Cleanup(cancel)
	return ctx
}

// Touch creates an empty file at path, and its directories.
func Touch(tb testing.TB, path string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
}
