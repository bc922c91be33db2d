package natsd

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
