// Package plugin is the go-plugin contract between the coordinator and the
// workers it launches: the handshake, the plugin map and a small gRPC
// service (describe, health, shutdown). Inference itself travels over NATS,
// so a worker started by go-plugin, foreman or systemd behaves the same;
// go-plugin adds the handshake, a health check the host can call, and the
// host-side process management.
package plugin

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Handshake identifies gpt-oss workers. Protocol versions:
// 1 — Describe, Health, Shutdown; inference over NATS (shared/wire).
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "GPTOSS_WORKER_PLUGIN",
	MagicCookieValue: "b7e1c0de-gptoss-worker",
}

// Name is the plugin's name in PluginMap.
const Name = "worker"

// Service is what a worker implements for its host.
type Service interface {
	Describe(ctx context.Context) (*Description, error)
	Health(ctx context.Context) (*HealthReply, error)
	Shutdown(ctx context.Context) error
}

// GRPCPlugin adapts Service to go-plugin's gRPC transport. Impl is set on
// the worker side only.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl Service
}

// GRPCServer registers the worker's service.
func (p *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	RegisterWorkerServer(s, &server{impl: p.Impl})
	return nil
}

// GRPCClient returns the host's handle, a Service.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &client{c: NewWorkerClient(c)}, nil
}

// PluginMap is the plugin set of both sides.
var PluginMap = map[string]goplugin.Plugin{Name: &GRPCPlugin{}}

// IsPlugin reports whether this process was started by a go-plugin host.
func IsPlugin() bool { return os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue }

// Serve runs the worker side of the plugin protocol; it returns only when
// the host closes the connection. Nothing else may write to stdout: the
// handshake line goes there.
func Serve(impl Service, log hclog.Logger) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]goplugin.Plugin{Name: &GRPCPlugin{Impl: impl}},
		GRPCServer:      goplugin.DefaultGRPCServer,
		Logger:          log,
	})
}

type server struct {
	UnimplementedWorkerServer
	impl Service
}

func (s *server) Describe(ctx context.Context, _ *Empty) (*Description, error) {
	return s.impl.Describe(ctx)
}
func (s *server) Health(ctx context.Context, _ *Empty) (*HealthReply, error) {
	return s.impl.Health(ctx)
}
func (s *server) Shutdown(ctx context.Context, _ *Empty) (*Empty, error) {
	return &Empty{}, s.impl.Shutdown(ctx)
}

type client struct{ c WorkerClient }

func (c *client) Describe(ctx context.Context) (*Description, error) {
	return c.c.Describe(ctx, &Empty{})
}
func (c *client) Health(ctx context.Context) (*HealthReply, error) { return c.c.Health(ctx, &Empty{}) }
func (c *client) Shutdown(ctx context.Context) error {
	_, err := c.c.Shutdown(ctx, &Empty{})
	return err
}
