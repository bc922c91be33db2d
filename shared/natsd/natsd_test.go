package natsd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gptoss/server/shared/wire"
)

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func TestConnectWithToken(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := start(t, Options{Logger: zap.New(core)})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":-1") {
		t.Fatalf("url %s", s.ClientURL())
	}
	if len(s.Token()) != 64 {
		t.Fatalf("token %q: want 64 hex characters", s.Token())
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Token(s.Token()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	// The payload limit is wire.MaxMessage, well above NATS's 1 MiB default.
	if got := nc.MaxPayload(); got != wire.MaxMessage {
		t.Fatalf("max payload %d, want %d", got, wire.MaxMessage)
	}
	big := make([]byte, 4<<20)
	if err := nc.Publish("x", big); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || len(m.Data) != len(big) {
		t.Fatalf("%v", err)
	}
	// The server's notices reach zap at info level.
	if logs.FilterLevelExact(zapcore.InfoLevel).FilterMessageSnippet("Server is ready").Len() == 0 {
		t.Fatalf("no bridged notice; got %v", logs.All())
	}
}

func TestRefusesWithoutToken(t *testing.T) {
	s := start(t, Options{})
	for _, opts := range [][]nats.Option{nil, {nats.Token("wrong")}} {
		opts = append(opts, nats.NoReconnect(), nats.Timeout(2*time.Second))
		nc, err := nats.Connect(s.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatal("connected without the right token")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("unexpected error %v", err)
		}
	}
}

func TestExplicitToken(t *testing.T) {
	s := start(t, Options{Token: "secret"})
	nc, err := nats.Connect(s.ClientURL(), nats.Token("secret"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestTwoServersDiffer(t *testing.T) {
	a := start(t, Options{})
	b := start(t, Options{})
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("same url %s", a.ClientURL())
	}
	if a.Token() == b.Token() {
		t.Fatal("same token")
	}
}

func TestUnspecifiedHostReportsLoopback(t *testing.T) {
	s := start(t, Options{Host: "0.0.0.0"})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("url %s", s.ClientURL())
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Token(s.Token()))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestPortInUse(t *testing.T) {
	a := start(t, Options{})
	t0 := time.Now()
	_, err := Start(Options{Port: a.ns.Addr().(*net.TCPAddr).Port})
	if err == nil || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("second server on a taken port: %v", err)
	}
	if time.Since(t0) > 5*time.Second {
		t.Fatalf("took %s to report the failure", time.Since(t0))
	}
}

func TestShutdownIdempotent(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	url, tok := s.ClientURL(), s.Token()
	s.Shutdown()
	s.Shutdown()
	if nc, err := nats.Connect(url, nats.Token(tok), nats.NoReconnect(), nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatal("connected after shutdown")
	}
}

func TestJetStreamOffByDefault(t *testing.T) {
	s := start(t, Options{})
	if s.ns.JetStreamEnabled() {
		t.Fatal("JetStream enabled without a StoreDir")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Token(s.Token()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Fatalf("account info without JetStream: %v", err)
	}
}

// TestJetStreamSurvivesRestart writes a stream and a KV bucket, stops the
// server, starts another on the same StoreDir (another port, another
// token) and reads them back: the coordinator's stored responses depend on
// it.
func TestJetStreamSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(s *Server) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		nc, err := nats.Connect(s.ClientURL(), nats.Token(s.Token()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}

	a := start(t, Options{StoreDir: dir, JetStreamMaxStore: 64 << 20})
	nc, js := connect(a)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, "s.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// A value as large as the bus allows goes through JetStream too.
	big := make([]byte, wire.MaxMessage-1024)
	if _, err := kv.Put(ctx, "big", big); err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream before restart: %+v %v", info, err)
	}
	// The layout the restart depends on: StoreDir/jetstream/<account>/streams/<stream>.
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G", "streams", "KV_B")); err != nil {
		t.Fatalf("store layout: %v", err)
	}
	nc.Close()
	url, tok := a.ClientURL(), a.Token()
	a.Shutdown()

	b := start(t, Options{StoreDir: dir})
	if b.ClientURL() == url || b.Token() == tok {
		t.Fatal("restarted server reuses the port or token")
	}
	_, js = connect(b)
	st, err = js.Stream(ctx, "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream after restart: %+v %v", info, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "s.x")
	if err != nil || len(m.Data) != 1 || m.Data[0] != 2 {
		t.Fatalf("last message after restart: %v %v", m, err)
	}
	kv, err = js.KeyValue(ctx, "B")
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("value after restart: %v %v", e, err)
	}
	if e, err := kv.Get(ctx, "big"); err != nil || len(e.Value()) != len(big) {
		t.Fatalf("big value after restart: %v", err)
	}
}

func TestJetStreamMaxStore(t *testing.T) {
	s := start(t, Options{StoreDir: t.TempDir(), JetStreamMaxStore: 1 << 20})
	nc, err := nats.Connect(s.ClientURL(), nats.Token(s.Token()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The bound is the server's (the global account itself is unlimited).
	if got := s.ns.JetStreamConfig().MaxStore; got != 1<<20 {
		t.Fatalf("max store %d, want %d", got, 1<<20)
	}
	// A stream reserving more than the bound is refused.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, MaxBytes: 2 << 20}); err == nil {
		t.Fatal("created a stream over JetStreamMaxStore")
	}
}

func TestJetStreamNegativeMaxStore(t *testing.T) {
	if s, err := Start(Options{StoreDir: t.TempDir(), JetStreamMaxStore: -1}); err == nil {
		s.Shutdown()
		t.Fatal("started with a negative max store")
	}
}

func TestJetStreamUnusableStoreDir(t *testing.T) {
	// A file where the directory should be.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{StoreDir: f})
	if err == nil {
		s.Shutdown()
		t.Fatal("started on a store dir that is a file")
	}
	t.Log(err)
}
