package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/api"
	"github.com/gptoss/server/coordinator/config"
	"github.com/gptoss/server/coordinator/respstore"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/natsd"
)

// bus is the coordinator's NATS: the embedded server (its JetStream store
// under --data-dir) or the external one of --nats-url, and the stored
// responses on it. The workers use the same bus; the cluster connects to
// it as to any server.
type bus struct {
	srv        *natsd.Server // nil with --nats-url
	url, token string
	conn       *nats.Conn
	store      *respstore.Store
}

// openBus starts (or reaches) NATS and opens the response store.
// maxPending sizes the embedded server's per-client buffer for the
// workers' largest step.
//
// An external server without JetStream still serves: the responses are
// then kept in memory (lost at a restart, not shared), which the log says
// at start-up and /health shows (response_store).
func openBus(ctx context.Context, s config.Settings, maxPending int64, log *zap.Logger) (*bus, error) {
	b := &bus{url: s.NATSURL, token: s.NATSToken}
	if err := b.open(ctx, s, maxPending, log); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *bus) open(ctx context.Context, s config.Settings, maxPending int64, log *zap.Logger) (err error) {
	if b.url == "" {
		dir := filepath.Join(s.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		// JetStream reserves a bucket's whole size when it is created:
		// the store's bound plus room for the stream's own files.
		if b.srv, err = natsd.Start(natsd.Options{MaxPending: maxPending, StoreDir: dir,
			JetStreamMaxStore: s.ResponsesMaxBytes + 64<<20, Logger: log.Named("nats")}); err != nil {
			return err
		}
		b.url, b.token = b.srv.ClientURL(), b.srv.Token()
	}
	opts := []nats.Option{nats.Name("gptoss-coordinator-store"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if b.token != "" {
		opts = append(opts, nats.Token(b.token))
	}
	if b.conn, err = nats.Connect(b.url, opts...); err != nil {
		return fmt.Errorf("nats %s: %w", logging.RedactURL(b.url), err)
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b.store, err = respstore.Open(octx, respstore.Options{Conn: b.conn, MaxBytes: s.ResponsesMaxBytes, TTL: s.ResponsesTTL,
		Logger: log.Named("respstore")})
	if err != nil && s.NATSURL != "" && noJetStream(err) {
		log.Warn("STORED RESPONSES IN MEMORY: the NATS server of --nats-url has no JetStream (run it with -js), so stored "+
			"responses are kept in this process only: lost at a restart, not shared with other coordinators",
			zap.String("nats", logging.RedactURL(b.url)), zap.Error(err))
		b.store = nil
		return nil
	}
	return err
}

// noJetStream reports whether err says the server runs without JetStream.
func noJetStream(err error) bool {
	// A server without JetStream has no responder for its API subjects.
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		strings.Contains(err.Error(), "JetStream not enabled")
}

// Responses is the API's response store: the JetStream bucket, or nil
// (the API's in-memory store) without JetStream.
func (b *bus) Responses() (api.ResponseStore, string) {
	if b.store == nil {
		return nil, "memory"
	}
	return storeAdapter{b.store}, "jetstream"
}

// Close closes the connection and stops the embedded server: after the
// workers and the cluster's connection are gone.
func (b *bus) Close() {
	if b.conn != nil {
		b.conn.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
	}
}

// storeAdapter tells the API's not-found from the store's.
type storeAdapter struct{ s *respstore.Store }

func (a storeAdapter) Put(ctx context.Context, id string, v []byte) error { return a.s.Put(ctx, id, v) }

func (a storeAdapter) Get(ctx context.Context, id string) ([]byte, error) {
	v, err := a.s.Get(ctx, id)
	return v, notFound(err)
}

func (a storeAdapter) Delete(ctx context.Context, id string) error {
	return notFound(a.s.Delete(ctx, id))
}

func notFound(err error) error {
	if errors.Is(err, respstore.ErrNotFound) {
		return fmt.Errorf("%w: %w", api.ErrResponseNotFound, err)
	}
	return err
}
