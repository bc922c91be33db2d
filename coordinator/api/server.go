// Package api is the coordinator's HTTP front door: the OpenAI-compatible
// endpoints (chat completions, completions, responses, models), vLLM's
// /tokenize, /detokenize and /version, health, readiness, statistics,
// Prometheus metrics and the web console (coordinator/console), served by
// Echo. It validates and renders requests, submits them to the scheduler
// and writes the results, streaming or not. It knows nothing of how tokens are produced: the mock
// engine and the real workers sit behind the same Engine interface.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gptoss/server/coordinator/console"
	"github.com/gptoss/server/coordinator/guide"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
)

// Engine is what the API needs from the generation side: the scheduler.
type Engine interface {
	Submit(ctx context.Context, req *sched.Request) (*sched.Stream, error)
	Capabilities() step.Capabilities
	Load() map[string]sched.Load
	Drain()
	Idle() bool
	Close()
	// KV is the paged KV cache's occupancy when the scheduler owns the
	// block tables (nil otherwise).
	KV() *sched.KVUsage
	// EngineReady reports whether the model can run steps now (false
	// while workers are lost, restarting or reloading).
	EngineReady() bool
}

// Options configures a Server. Every field is required unless noted.
type Options struct {
	Model model.Preset
	// Mode is "mock" or "real", reported by /health; ModeReason says why.
	Mode, ModeReason string
	Profiles         profiles.Set
	DefaultProfile   string
	// APIKeys, when non-empty, are required on /v1 routes.
	APIKeys         []string
	EnableStreaming bool
	// ReasoningField is where chat reasoning goes by default:
	// "reasoning_content" (default), "reasoning" or "both".
	ReasoningField string
	// MaxBodyBytes caps request bodies (413 above).
	MaxBodyBytes int64
	Limits       Limits
	// SSEWriteTimeout bounds one streamed write to a client that stopped
	// reading; the stream is then cancelled. Zero means no bound.
	SSEWriteTimeout time.Duration
	Tokenizer       *tokenizer.Tokenizer
	Engine          Engine
	Stats           *stats.Recorder
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	Logger   *zap.Logger
	// Version is reported by /health and /version.
	Version string
	// Root is the checkpoint /v1/models reports as each card's root, as
	// vLLM does (the directory or the Hub repository served); "" derives
	// it from Model (modelRoot).
	Root string
	// CORS opens the API to browser pages of other origins; the zero value
	// sends no CORS headers.
	CORS CORS
	// Workers, when set, lists the worker processes for /health and /stats.
	Workers func() any
	// KeyLimits bound each client's request rate and concurrency (429).
	KeyLimits KeyLimits
	// ResponseStore keeps the Responses API's stored responses (NATS
	// JetStream in the coordinator); nil keeps them in memory.
	ResponseStore ResponseStore
	// ResponseStoreKind names the store for /health ("jetstream"; "memory"
	// when ResponseStore is nil).
	ResponseStoreKind string
	// Guides builds the constrained-decoding guides (structured output,
	// forced calls, reasoning budgets); nil uses guide.Shared().
	Guides *guide.Compiler
	// StrictTools constrains every tool's arguments to its schema, as if
	// each were marked strict.
	StrictTools bool
	// Startup, when set, is the engine's start-up (download, load): until
	// it is over, generation requests get 503 with Retry-After, /ready
	// says 503 and /health shows its phase and progress.
	Startup Startup
	// Console serves the web console (coordinator/console) at /ui/, and
	// redirects / there.
	Console bool
}

// Startup is the engine's start-up as the API sees it.
type Startup interface {
	// Phase is "downloading", "loading", "ready" or "failed".
	Phase() string
	// Pending says why requests cannot run yet ("" once ready).
	Pending() string
	// RetryAfter is the wait to suggest to clients, in seconds.
	RetryAfter() int
	// Status is /health's "startup" object.
	Status() any
}

// MockHeader marks every response of a server running the mock engine, so
// no client mistakes its text for the model's.
const MockHeader = "X-Gptoss-Mock"

// Server is the HTTP API.
type Server struct {
	opts    Options
	echo    *echo.Echo
	log     *zap.Logger
	keys    [][sha256.Size]byte
	limits  *limiter
	started time.Time
	ready   atomic.Bool
	// fingerprint identifies this server build and model for
	// system_fingerprint.
	fingerprint string
	responses   ResponseStore
	cors        *corsPolicy // nil: no CORS headers
}

// New builds the server and its routes.
func New(opts Options) (*Server, error) {
	if opts.Engine == nil || opts.Tokenizer == nil || opts.Stats == nil || opts.Profiles == nil {
		return nil, errors.New("api: Engine, Tokenizer, Stats and Profiles are required")
	}
	if _, err := opts.Profiles.Get(opts.DefaultProfile); err != nil {
		return nil, fmt.Errorf("api: default profile: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	switch opts.ReasoningField {
	case "":
		opts.ReasoningField = "reasoning_content"
	case "reasoning_content", "reasoning", "both":
	default:
		return nil, fmt.Errorf("api: reasoning field %q: want reasoning_content, reasoning or both", opts.ReasoningField)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	cors, err := newCORSPolicy(opts.CORS)
	if err != nil {
		return nil, err
	}
	if opts.Root == "" {
		opts.Root = modelRoot(opts.Model)
	}
	s := &Server{opts: opts, log: opts.Logger, started: time.Now(), limits: newLimiter(opts.KeyLimits), responses: opts.ResponseStore, cors: cors}
	if s.responses == nil {
		s.responses, s.opts.ResponseStoreKind = &memStore{}, "memory"
	}
	for _, k := range opts.APIKeys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	fp := sha256.Sum256([]byte(opts.Version + "|" + opts.Model.ID + "|" + opts.Mode))
	s.fingerprint = "fp_" + hex.EncodeToString(fp[:5])
	if opts.Mode == "mock" {
		// Every mock completion says so in its body too.
		s.fingerprint = "mock_" + hex.EncodeToString(fp[:5])
	}
	s.ready.Store(true)

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.requestIDMiddleware, s.logMiddleware, s.recoverMiddleware)
	if opts.Mode == "mock" {
		e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				c.Response().Header().Set(MockHeader, "true")
				return next(c)
			}
		})
	}
	if cors != nil {
		// Before the routes' own middleware (auth, limits): a preflight
		// is answered here, without a key.
		e.Use(s.corsMiddleware)
	}
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: fmt.Sprintf("%dB", opts.MaxBodyBytes)}))

	e.GET("/health", s.health)
	e.HEAD("/health", s.health)
	e.GET("/ready", s.readyz)
	e.GET("/stats", s.stats)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{})))

	// Auth per route rather than on a /v1 group: a group with middleware
	// catches every /v1/* path, which turns a wrong method (405) into 404.
	e.POST(chatRoute, s.chatCompletions, s.authMiddleware, s.startupMiddleware, s.limitMiddleware)
	e.POST(completionsRoute, s.completions, s.authMiddleware, s.startupMiddleware, s.limitMiddleware)
	e.POST(responsesRoute, s.createResponse, s.authMiddleware, s.startupMiddleware, s.limitMiddleware)
	e.POST(responsesRoute+"/input_tokens", s.countInputTokens, s.authMiddleware)
	e.GET(responsesRoute+"/:id", s.getResponse, s.authMiddleware)
	e.DELETE(responsesRoute+"/:id", s.deleteResponse, s.authMiddleware)
	e.GET(responsesRoute+"/:id/input_items", s.listInputItems, s.authMiddleware)
	e.POST(responsesRoute+"/:id/cancel", s.cancelResponse, s.authMiddleware)
	e.GET("/v1/models", s.models, s.authMiddleware)
	e.GET("/v1/models/:id", s.model, s.authMiddleware)
	// vLLM's utility endpoints, at the root as vLLM serves them, under
	// the same key as /v1. They need neither the engine nor a start-up
	// that is over, and they are no generation: not in the stats.
	e.POST("/tokenize", s.tokenize, s.authMiddleware)
	e.POST("/detokenize", s.detokenize, s.authMiddleware)
	e.GET("/version", s.version, s.authMiddleware)
	if opts.Console {
		console.Register(e)
	}
	s.echo = e
	return s, nil
}

// The generation routes, and the endpoint label each is counted under in
// the stats (a request to any other URL is counted as "unknown").
const (
	chatRoute        = "/v1/chat/completions"
	completionsRoute = "/v1/completions"
	responsesRoute   = "/v1/responses"
)

var routeEndpoints = map[string]string{chatRoute: "chat", completionsRoute: "completions", responsesRoute: "responses",
	responsesRoute + "/input_tokens": "responses", responsesRoute + "/:id/cancel": "responses"}

// Handler returns the HTTP handler, for tests and custom listeners.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: it would cut long streams. SSE writes carry their
		// own deadline (SSEWriteTimeout).
		IdleTimeout: 120 * time.Second,
		ErrorLog:    zap.NewStdLog(s.log.Named("http")),
	}
	s.echo.Server = srv
	s.echo.Listener = l
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown drains gracefully: readiness turns false and new generation
// requests get 503 at once, while running ones may finish until timeout;
// then the rest are aborted (streams end with finish_reason "abort") and
// the listener closes.
func (s *Server) Shutdown(ctx context.Context, timeout time.Duration) error {
	s.ready.Store(false)
	s.opts.Engine.Drain()
	deadline := time.Now().Add(timeout)
	for !s.opts.Engine.Idle() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			deadline = time.Now()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !s.opts.Engine.Idle() {
		s.log.Warn("shutdown timeout reached; aborting running requests", zap.Duration("timeout", timeout))
	}
	s.opts.Engine.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return s.echo.Shutdown(sctx)
}

// servesModel reports whether a request's model id names this model.
func (s *Server) servesModel(id string) bool {
	for _, a := range s.opts.Model.Aliases() {
		if strings.EqualFold(id, a) {
			return true
		}
	}
	return false
}

// ---- middleware ----

const infoKey = "gptoss.info"

// reqInfo collects what the request log line and the stats need.
type reqInfo struct {
	id               string
	start            time.Time
	profile          string
	endpoint         string
	stream           bool
	promptTokens     int
	completionTokens int
	finish           string
	ttft             time.Duration
	errCode          string
	// err is the error the request failed with, in full: its cause and
	// request id go to the log line, never to the client.
	err      *Error
	recorded bool // stats already recorded by the handler
}

func getInfo(c echo.Context) *reqInfo {
	if v, ok := c.Get(infoKey).(*reqInfo); ok {
		return v
	}
	i := &reqInfo{}
	c.Set(infoKey, i)
	return i
}

func setInfo(c echo.Context, f func(*reqInfo)) { f(getInfo(c)) }

func requestID(c echo.Context) string { return getInfo(c).id }

// requestIDMiddleware accepts a sane X-Request-Id from the client (to match
// logs across proxies) or makes one, and echoes it back.
func (s *Server) requestIDMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		info := getInfo(c)
		info.id, info.start = id, time.Now()
		return next(c)
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || r == ':' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return false
		}
	}
	return true
}

// logMiddleware writes one line per request and records refused /v1
// requests in the stats (handlers record the ones that ran). An error the
// handler chain returned becomes an *Error carrying the request id before
// the error handler writes it; its message and cause are logged with the
// line (field error).
func (s *Server) logMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(s.requestError(c, err))
		}
		info := getInfo(c)
		status := c.Response().Status
		path := c.Request().URL.Path
		if strings.HasPrefix(path, "/v1/") && c.Request().Method == http.MethodPost && !info.recorded && status >= 400 {
			p := info.profile
			if p == "" {
				p = s.opts.DefaultProfile
			}
			// The route, not the handler, names the endpoint: a request
			// refused before its handler ran (auth, limits, body size,
			// decoding) counts under it too.
			s.opts.Stats.ObserveRejected(p, routeEndpoints[c.Path()], status, info.errCode)
		}
		lvl := zapcore.InfoLevel
		if path == "/health" || path == "/ready" || path == "/metrics" {
			lvl = zapcore.DebugLevel
		}
		if status >= 500 {
			lvl = zapcore.WarnLevel
		}
		if ce := s.log.Check(lvl, "request"); ce != nil {
			fields := []zap.Field{
				zap.String("request_id", info.id),
				zap.String("method", c.Request().Method),
				zap.String("path", path),
				zap.Int("status", status),
				zap.Duration("latency", time.Since(start)),
				zap.String("remote", c.RealIP()),
			}
			if info.endpoint != "" {
				fields = append(fields,
					zap.String("profile", info.profile),
					zap.Bool("stream", info.stream),
					zap.Int("prompt_tokens", info.promptTokens),
					zap.Int("completion_tokens", info.completionTokens),
					zap.Duration("ttft", info.ttft),
					zap.String("finish_reason", info.finish))
			}
			if info.errCode != "" {
				fields = append(fields, zap.String("error_code", info.errCode))
			}
			if info.err != nil {
				fields = append(fields, zap.Error(info.err))
			}
			ce.Write(fields...)
		}
		return nil
	}
}

// recoverMiddleware turns a handler panic into a 500 for that request only.
func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				perr, isErr := r.(error)
				if isErr && errors.Is(perr, http.ErrAbortHandler) {
					panic(r)
				}
				s.log.Error("handler panic", zap.String("request_id", requestID(c)), zap.Any("panic", r), zap.Stack("stack"))
				var cause error
				if isErr {
					cause = fmt.Errorf("panic: %w", perr)
				} else {
					cause = fmt.Errorf("panic: %v", r) // not an error: nothing to wrap
				}
				err = &Error{Status: 500, Type: "server_error", Code: "internal_error", Message: "The server had an error while processing your request.", NoRetry: true, Cause: cause}
			}
		}()
		return next(c)
	}
}

// apiKey is the key a request carries: an Authorization header with the
// Bearer scheme, in any case (auth schemes are case-insensitive, RFC 9110
// §11.1), or else an X-Api-Key header. "" when there is none.
func apiKey(h http.Header) string {
	auth := strings.TrimSpace(h.Get(echo.HeaderAuthorization))
	if i := strings.IndexAny(auth, " \t"); i > 0 && strings.EqualFold(auth[:i], "Bearer") {
		if key := strings.TrimSpace(auth[i+1:]); key != "" {
			return key
		}
	}
	return strings.TrimSpace(h.Get("X-Api-Key"))
}

// bearerChallenge is the WWW-Authenticate header of every 401 (RFC 9110
// §11.6.1); a key that was given but is wrong adds RFC 6750's error.
const (
	bearerChallenge        = `Bearer realm="gptoss"`
	bearerChallengeInvalid = `Bearer realm="gptoss", error="invalid_token", error_description="The API key is not valid."`
)

// authMiddleware checks the API key in constant time against every
// configured key (SHA-256 digests, OR-accumulated, no early exit), so
// neither the match position nor the key length leaks through timing.
func (s *Server) authMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.keys) == 0 {
			return next(c)
		}
		key := apiKey(c.Request().Header)
		if key == "" {
			return &Error{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key",
				Message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."}
		}
		d := sha256.Sum256([]byte(key))
		match := 0
		for i := range s.keys {
			match |= subtle.ConstantTimeCompare(d[:], s.keys[i][:])
		}
		if match != 1 {
			c.Response().Header().Set("WWW-Authenticate", bearerChallengeInvalid)
			return &Error{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key", Message: "Incorrect API key provided."}
		}
		return next(c)
	}
}

// startupMiddleware answers generation requests with 503 and Retry-After
// while the model downloads or loads: a client retries (the openai SDKs do
// on 503) instead of waiting on a connection for minutes.
func (s *Server) startupMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Startup == nil {
			return next(c)
		}
		if msg := s.opts.Startup.Pending(); msg != "" {
			code := "model_loading"
			if s.opts.Startup.Phase() == "failed" {
				code = "model_failed"
			}
			return &Error{Status: 503, Type: "server_error", Code: code, Message: msg, RetryAfter: s.opts.Startup.RetryAfter()}
		}
		return next(c)
	}
}

// phase is the start-up's phase ("ready" without a start-up).
func (s *Server) phase() string {
	if s.opts.Startup == nil {
		return "ready"
	}
	return s.opts.Startup.Phase()
}

// ---- simple endpoints ----

func (s *Server) health(c echo.Context) error {
	load := s.opts.Engine.Load()
	var active, queued int
	for _, l := range load {
		active += l.Active
		queued += l.Queued
	}
	body := map[string]any{
		"status":          "ok",
		"model":           s.opts.Model.ID,
		"mode":            s.opts.Mode,
		"mode_reason":     s.opts.ModeReason,
		"profile":         s.opts.DefaultProfile,
		"profiles":        s.opts.Profiles.Names(),
		"version":         s.opts.Version,
		"uptime_seconds":  time.Since(s.started).Seconds(),
		"ready":           s.ready.Load(),
		"streaming":       s.opts.EnableStreaming,
		"context_length":  s.opts.Model.ContextLength,
		"active_requests": active,
		"queued_requests": queued,
		"workers":         s.workers(),
		"response_store":  s.opts.ResponseStoreKind,
	}
	if kv := s.opts.Engine.KV(); kv != nil {
		body["kv_cache"] = map[string]any{
			"block_size": kv.Geometry.BlockSize, "sliding_window": kv.Geometry.SlidingWindow,
			"blocks": kv.Geometry.Blocks, "blocks_free": kv.FreeBlocks, "blocks_used": kv.UsedBlocks, "blocks_cached": kv.CachedBlocks,
			"sliding_blocks": kv.Geometry.SlidingBlocks, "sliding_blocks_free": kv.SlidingFree,
			"sliding_blocks_used": kv.SlidingUsed, "sliding_blocks_cached": kv.SlidingCached,
			"sequences": kv.Sequences, "prefix_cache_hits": kv.PrefixHits, "prefix_cache_lookups": kv.PrefixLookups,
		}
	}
	engineReady := s.opts.Engine.EngineReady()
	body["engine_ready"] = engineReady
	phase := s.phase()
	body["phase"] = phase
	if s.opts.Startup != nil {
		body["startup"] = s.opts.Startup.Status()
	}
	switch {
	case !s.ready.Load():
		body["status"] = "draining"
	case phase == "failed":
		body["status"] = "failed"
	case phase != "ready":
		// Downloading or loading: alive (200), not ready (/ready 503).
		body["status"] = "starting"
	case !engineReady:
		// Alive, but requests wait: workers are lost, restarting or
		// loading. Liveness stays 200 (restarting the coordinator would
		// not help); /ready says 503.
		body["status"] = "degraded"
	}
	return c.JSON(http.StatusOK, body)
}

// workers lists the worker processes; the mock engine runs in-process and
// has none.
func (s *Server) workers() any {
	if s.opts.Workers == nil {
		return []any{}
	}
	return s.opts.Workers()
}

func (s *Server) readyz(c echo.Context) error {
	if !s.ready.Load() {
		return &Error{Status: 503, Type: "server_error", Code: "not_ready", Message: "The server is shutting down.", RetryAfter: 5}
	}
	if s.opts.Startup != nil {
		if msg := s.opts.Startup.Pending(); msg != "" {
			return &Error{Status: 503, Type: "server_error", Code: "model_loading", Message: msg, RetryAfter: s.opts.Startup.RetryAfter()}
		}
	}
	if !s.opts.Engine.EngineReady() {
		return &Error{Status: 503, Type: "server_error", Code: "engine_unavailable",
			Message: "The model workers are not ready (lost, restarting or loading the model); requests wait until they are.", RetryAfter: 5}
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "model": s.opts.Model.ID, "mode": s.opts.Mode})
}

func (s *Server) stats(c echo.Context) error {
	load := s.loadForStats()
	s.opts.Stats.SetLoad(load)
	snap := s.opts.Stats.Snapshot(load)
	return c.JSON(http.StatusOK, map[string]any{
		"model":   s.opts.Model.ID,
		"mode":    s.opts.Mode,
		"profile": s.opts.DefaultProfile,
		"stats":   snap,
		"workers": s.workers(),
	})
}

func (s *Server) loadForStats() map[string]stats.Load {
	load := s.opts.Engine.Load()
	out := make(map[string]stats.Load, len(load))
	for k, v := range load {
		out[k] = stats.Load{Active: v.Active, Queued: v.Queued}
	}
	return out
}

// UpdateLoadGauges refreshes the running/waiting gauges; the coordinator
// calls it periodically so /metrics scrapes see current values.
func (s *Server) UpdateLoadGauges() { s.opts.Stats.SetLoad(s.loadForStats()) }

func (s *Server) card() ModelCard {
	return ModelCard{ID: s.opts.Model.ID, Object: "model", Created: s.started.Unix(), OwnedBy: "openai",
		ContextLength: s.opts.Model.ContextLength, MaxModelLen: s.opts.Model.ContextLength,
		Root: s.opts.Root, Permission: []any{}}
}

// modelRoot is the checkpoint a model was loaded from, as far as the
// preset tells: its Hub repository, else the directory it was resolved
// from (model.Resolve names a directory's model by its path), else its id.
func modelRoot(p model.Preset) string {
	switch {
	case p.HubRepo != "":
		return p.HubRepo
	case strings.ContainsRune(p.Name, '/') || strings.ContainsRune(p.Name, filepath.Separator) || strings.HasPrefix(p.Name, "."):
		return p.Name
	}
	return p.ID
}

func (s *Server) models(c echo.Context) error {
	return c.JSON(http.StatusOK, ModelList{Object: "list", Data: []ModelCard{s.card()}})
}

func (s *Server) model(c echo.Context) error {
	if !s.servesModel(c.Param("id")) {
		return &Error{Status: 404, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", clipString(c.Param("id"), 100))}
	}
	return c.JSON(http.StatusOK, s.card())
}
