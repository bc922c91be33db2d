// Package natsd runs the NATS server of a deployment: embedded in the
// coordinator by default, the bus between it and its worker processes
// (subjects and messages in shared/wire). It listens on loopback by
// default, requires a token that the coordinator hands to the workers it
// launches, accepts messages up to wire.MaxMessage, leaves signals to its
// host process and writes its logs through zap.
//
// JetStream is off unless Options.StoreDir names a directory: the bus
// between coordinator and workers is core NATS only, and JetStream exists
// here for the coordinator's own state that must outlive it (the stored
// responses of coordinator/respstore), kept in JetStream's file store under
// that directory. A server started again on the same StoreDir (with another
// port and token) finds its streams again.
//
// It lives in shared/ because its limits are part of the wire contract:
// the tests of both sides (the worker's collective and service, the
// coordinator's remote client) run against this server, configured as in
// production, so that a message the bus would refuse fails a test too.
//
//	srv, err := natsd.Start(natsd.Options{Logger: log.Named("nats")})
//	...
//	defer srv.Shutdown()
//	nc, err := nats.Connect(srv.ClientURL(), nats.Token(srv.Token()))
package natsd

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gptoss/server/shared/wire"
)

// readyTimeout bounds how long Start waits for the server to accept
// connections.
const readyTimeout = 10 * time.Second

// Options configures the embedded server.
type Options struct {
	// Host is the listen address; "" means 127.0.0.1. Workers run on the
	// same machine, so loopback is the right default.
	Host string
	// Port is the client port; 0 picks a free port (server.RANDOM_PORT).
	Port int
	// Token is the client authorization token; "" generates a random one
	// (32 random bytes, hex-encoded).
	Token string
	// MaxPending is the most bytes the server buffers for one client
	// before it cuts it off as a slow consumer; 0 means DefaultMaxPending.
	// A tensor-parallel step's collective traffic arrives in bursts (the
	// vocabulary-split logits of every sampled sequence), so the limit
	// must hold the largest step the scheduler can send.
	MaxPending int64
	// StoreDir, when not empty, enables JetStream with its file store
	// under this directory (nats-server keeps it in StoreDir/jetstream,
	// one directory per account and stream). "" keeps JetStream off.
	StoreDir string
	// JetStreamMaxStore bounds the bytes JetStream may keep on disk; 0
	// leaves it to nats-server, which takes 75% of the disk space free
	// under StoreDir at start-up. Streams with a MaxBytes (a respstore
	// bucket) reserve their whole MaxBytes against this bound when they
	// are created, so it must exceed their sum. Ignored without StoreDir.
	JetStreamMaxStore int64
	// Logger receives the server's logs; nil discards them.
	Logger *zap.Logger
}

// serverName is the server's name (in its logs, advisories and the INFO it
// sends to clients).
const serverName = "gptoss-coordinator"

// DefaultMaxPending holds the logits of 1024 sampled sequences of a
// 201088-token vocabulary split over up to 8 ranks (7/8 of 823 MB arrive
// at each rank), where NATS's own 64 MiB cut tensor-parallel CPU workers
// off at about 128 sequences.
const DefaultMaxPending = 1 << 30

// Server is a running embedded NATS server.
type Server struct {
	ns    *server.Server
	host  string // as configured
	token string
	once  sync.Once
}

// Start starts the server and waits until it accepts connections. A server
// that reports a fatal error while starting (for example because the port
// is taken) or is not ready within 10 s is shut down and reported as an
// error.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	if o.Port < server.RANDOM_PORT || o.Port > 65535 {
		return nil, fmt.Errorf("natsd: invalid port %d", o.Port)
	}
	if o.Token == "" {
		t, err := randomToken()
		if err != nil {
			return nil, err
		}
		o.Token = t
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.JetStreamMaxStore < 0 {
		return nil, fmt.Errorf("natsd: negative JetStream max store %d", o.JetStreamMaxStore)
	}
	debug := o.Logger.Core().Enabled(zapcore.DebugLevel)
	opts := &server.Options{
		// A fixed name: a standalone server's file store does not depend
		// on it (streams live under StoreDir/jetstream/<account>/streams),
		// but a random one would show up as another server in every
		// restart's logs and advisories.
		ServerName:    serverName,
		Host:          o.Host,
		Port:          o.Port,
		NoSigs:        true,
		MaxPayload:    wire.MaxMessage,
		MaxPending:    o.MaxPending,
		JetStream:     o.StoreDir != "",
		StoreDir:      o.StoreDir,
		Authorization: o.Token,
		Debug:         debug,
		// Trace logs every protocol line (message payloads included):
		// far too much even at debug level.
		Trace: false,
	}
	if o.StoreDir != "" && o.JetStreamMaxStore > 0 {
		opts.JetStreamMaxStore = o.JetStreamMaxStore
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	zl := &zapLogger{l: o.Logger.WithOptions(zap.AddCallerSkip(1)).Sugar(), fatal: make(chan string, 1)}
	ns.SetLoggerV2(zl, debug, false, false)
	go ns.Start()
	fail := func(why string) (*Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsd: server on %s: %s", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), why)
	}
	for deadline := time.Now().Add(readyTimeout); !ns.ReadyForConnections(20 * time.Millisecond); {
		select {
		case msg := <-zl.fatal:
			return fail(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Sprintf("not ready within %s", readyTimeout))
		}
	}
	s := &Server{ns: ns, host: o.Host, token: o.Token}
	if o.StoreDir != "" {
		if !ns.JetStreamEnabled() {
			// nats-server reports a failure to enable JetStream through
			// Fatalf before it listens, which the loop above catches;
			// this keeps a caller who asked for a store from ever
			// getting a server without one.
			return fail("JetStream did not start (see the logs)")
		}
		o.Logger.Info("embedded NATS server listening", zap.String("url", s.ClientURL()), zap.String("jetstream_store", ns.StoreDir()))
		return s, nil
	}
	o.Logger.Info("embedded NATS server listening", zap.String("url", s.ClientURL()))
	return s, nil
}

// ClientURL is the URL clients connect to (the actual port when it was
// chosen at random). An unspecified listen address (0.0.0.0, ::) is reported
// as loopback, which is where the coordinator's own workers connect.
func (s *Server) ClientURL() string {
	addr, ok := s.ns.Addr().(*net.TCPAddr)
	if !ok || addr == nil {
		return s.ns.ClientURL()
	}
	host := s.host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// Token is the authorization token clients must present (nats.Token).
func (s *Server) Token() string { return s.token }

// Shutdown stops the server and waits until it has stopped. It may be
// called more than once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	})
}

func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("natsd: token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// zapLogger bridges server.Logger to zap.
type zapLogger struct {
	l *zap.SugaredLogger
	// fatal receives the first fatal message, so that Start can fail at
	// once instead of waiting out its timeout.
	fatal chan string
}

var _ server.Logger = (*zapLogger)(nil)

func (z *zapLogger) Noticef(format string, v ...any) { z.l.Infof(format, v...) }
func (z *zapLogger) Warnf(format string, v ...any)   { z.l.Warnf(format, v...) }
func (z *zapLogger) Errorf(format string, v ...any)  { z.l.Errorf(format, v...) }

// Fatalf logs at error level and returns: NATS's own loggers exit the
// process here, but the coordinator decides when it stops (a server that
// fails to start is reported by Start instead).
func (z *zapLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	z.l.Error("fatal: " + msg)
	select {
	case z.fatal <- msg:
	default:
	}
}
func (z *zapLogger) Debugf(format string, v ...any) { z.l.Debugf(format, v...) }
func (z *zapLogger) Tracef(format string, v ...any) { z.l.Debugf(format, v...) }
