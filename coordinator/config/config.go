// Package config gathers the coordinator's settings from, in increasing
// precedence, built-in defaults, a YAML config file (--config), environment
// variables and command-line flags. Every setting has one name: the flag
// --max-body-bytes is the file key max_body_bytes and the environment
// variable GPTOSS_MAX_BODY_BYTES. Environment is read here and nowhere else.
//
// The mechanism (layers, parsers, usage text) is shared/config, in shared/
// so that the worker can use it too; this package holds the coordinator's
// settings, their table, defaults and the checks across settings.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	sc "github.com/gptoss/server/shared/config"
)

// EnvPrefix prefixes every environment variable name.
const EnvPrefix = "GPTOSS_"

// Settings is the coordinator's whole configuration.
type Settings struct {
	Model string
	// Revision is the Hub branch, tag or commit of a repository --model.
	Revision string
	// FallbackModel is a checkpoint directory served when --model's
	// weights cannot be had (offline, unreachable); "" for none.
	FallbackModel string
	Profile       string
	Host          string
	Port          int
	// Mock is "auto" (mock when no real engine can start, said loudly),
	// "true" or "false" (fail instead of falling back).
	Mock                 string
	APIKeys              []string
	AllowUnauthenticated bool
	// CORSOrigins may call the API from browser pages (scheme://host[:port]
	// or "*"); none: no CORS headers at all. CORSAllowCredentials lets
	// those pages send cookies and HTTP auth; never with "*".
	CORSOrigins          []string
	CORSAllowCredentials bool
	// StrictTools constrains every tool's arguments to its schema, as if
	// each tool were marked strict.
	StrictTools bool
	// UI serves the web console at /ui/ (GET / redirects there).
	UI                  bool
	EnableStreaming     bool
	ReasoningField      string
	ProfilesFile        string
	MaxBodyBytes        int64
	ShutdownTimeout     time.Duration
	SSEWriteTimeout     time.Duration
	MaxRunning          int
	PrefixCache         bool
	Pipeline            bool
	MaxStepTokens       int
	MaxMessages         int
	MaxN                int
	MaxStop             int
	MaxTools            int
	KeyRate             float64
	KeyBurst            int
	KeyConcurrency      int
	MockStep            time.Duration
	MockPerSeq          time.Duration
	MockPrefillPerToken time.Duration
	MockMinReplyTokens  int
	WorkerBin           string
	Workers             string // "launch" (start them) or "external" (foreman, systemd)
	Backend             string // launched workers' backend: "auto", "cpu" or "cuda"
	LoadFormat          string // "auto" (the checkpoint) or "dummy" (random weights of its shapes)
	CPUKernels          string // launched CPU workers' kernels: "exact" or "fast"
	NATSURL             string
	NATSToken           string
	// DataDir holds what the coordinator keeps on disk: the embedded NATS
	// server's JetStream store (the Responses API's stored responses).
	DataDir string
	// ResponsesMaxBytes and ResponsesTTL bound the stored responses: the
	// oldest are dropped past the size, any past the age.
	ResponsesMaxBytes int64
	ResponsesTTL      time.Duration
	TP                int
	Deployment        string
	StepTimeout       time.Duration
	// StepTimeoutPerToken is added to StepTimeout for every token of a
	// step; 0 picks it by backend (cluster.StepTimeoutPerToken).
	StepTimeoutPerToken time.Duration
	LoadTimeout         time.Duration
	LogLevel            string
	LogFormat           string
	// PprofAddr serves net/http/pprof on this loopback host:port; "" is
	// off (coordinator/pprof.go refuses other hosts at start-up).
	PprofAddr string
	// ConfigFile is where the file layer came from ("" when none).
	ConfigFile string
}

// Defaults returns the built-in settings.
func Defaults() Settings {
	return Settings{
		Model: "20b", Revision: "main", ResponsesMaxBytes: 1 << 30, ResponsesTTL: 30 * 24 * time.Hour, Profile: "balanced", Host: "127.0.0.1", Port: 8000, Mock: "auto",
		UI: true, EnableStreaming: true, ReasoningField: "reasoning_content", MaxBodyBytes: 8 << 20, ShutdownTimeout: 30 * time.Second,
		SSEWriteTimeout: 30 * time.Second, MaxRunning: 1024, MaxStepTokens: 8192, PrefixCache: true, Pipeline: true,
		MaxMessages: 4096, MaxN: 8, MaxStop: 4, MaxTools: 128,
		MockStep: 10 * time.Millisecond, MockPerSeq: 20 * time.Microsecond, MockPrefillPerToken: 5 * time.Microsecond,
		LogLevel: "info", LogFormat: "auto",
		TP: 1, Workers: "launch", Backend: "auto", LoadFormat: "auto", CPUKernels: "exact", Deployment: "default", StepTimeout: 60 * time.Second, LoadTimeout: 10 * time.Minute,
	}
}

// settings is the coordinator's table: every setting's name, help and
// parser, read by shared/config in every layer.
var settings = []sc.Setting[Settings]{
	{Name: "model", Usage: "model to serve: 20b, 120b (openai/gpt-oss-20b, -120b), a Hugging Face repository (org/name, downloaded into the Hugging Face cache) or a checkpoint directory", Set: sc.String(func(s *Settings) *string { return &s.Model })},
	{Name: "revision", Usage: "branch, tag or commit of a Hugging Face repository --model", Set: sc.String(func(s *Settings) *string { return &s.Revision })},
	{Name: "fallback-model", Usage: "checkpoint directory to serve, said loudly, when --model's weights cannot be had (offline, unreachable Hub)", Set: sc.String(func(s *Settings) *string { return &s.FallbackModel })},
	{Name: "profile", Usage: "default serving profile (latency_first, balanced, quality_first)", Set: sc.String(func(s *Settings) *string { return &s.Profile })},
	{Name: "host", Usage: "address to listen on", Set: sc.String(func(s *Settings) *string { return &s.Host })},
	{Name: "port", Usage: "port to listen on", Set: sc.Int(func(s *Settings) *int { return &s.Port })},
	{Name: "mock", Usage: "mock engine: auto (fall back to mock when no real engine can start), true, false", Set: func(s *Settings, v string) error {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "auto", "true", "false":
			s.Mock = v
		case "1", "yes", "on":
			s.Mock = "true"
		case "0", "no", "off":
			s.Mock = "false"
		default:
			return fmt.Errorf("want auto, true or false, got %q", v)
		}
		return nil
	}, Bool: true},
	{Name: "api-key", Aliases: []string{"GPTOSS_API_KEYS"}, Usage: "API key clients must send (repeatable; env: comma-separated)", List: true,
		Set: sc.Strings(func(s *Settings) *[]string { return &s.APIKeys }), Reset: sc.Clear(func(s *Settings) *[]string { return &s.APIKeys })},
	{Name: "allow-unauthenticated", Usage: "allow listening on a non-loopback address without API keys", Set: sc.Bool(func(s *Settings) *bool { return &s.AllowUnauthenticated }), Bool: true},
	{Name: "cors-origins", Usage: "origins whose browser pages may call the API, e.g. https://app.example.com, or * for any (repeatable or comma-separated; default: none, no CORS headers)", List: true,
		Set: sc.Strings(func(s *Settings) *[]string { return &s.CORSOrigins }), Reset: sc.Clear(func(s *Settings) *[]string { return &s.CORSOrigins })},
	{Name: "strict-tools", Usage: "constrain every tool's arguments to its parameters schema, as if each were marked strict", Set: sc.Bool(func(s *Settings) *bool { return &s.StrictTools }), Bool: true},
	{Name: "cors-allow-credentials", Usage: "let --cors-origins pages send cookies and HTTP auth (not with *, which browsers refuse)", Set: sc.Bool(func(s *Settings) *bool { return &s.CORSAllowCredentials }), Bool: true},
	{Name: "ui", Usage: "serve the web console (chat playground and dashboard) at /ui/, GET / redirecting there; --ui=false turns it off", Set: sc.Bool(func(s *Settings) *bool { return &s.UI }), Bool: true},
	{Name: "enable-streaming", Aliases: []string{"ENABLE_STREAMING"}, Usage: "serve stream=true requests (false: they get a 400)", Set: sc.Bool(func(s *Settings) *bool { return &s.EnableStreaming }), Bool: true},
	{Name: "reasoning-field", Usage: "where chat responses put reasoning: reasoning_content, reasoning or both (a request may choose with \"reasoning_field\")", Set: sc.OneOf(func(s *Settings) *string { return &s.ReasoningField }, "reasoning_content", "reasoning", "both")},
	{Name: "profiles-file", Usage: "profiles YAML (default: the built-in configs/profiles.yaml)", Set: sc.String(func(s *Settings) *string { return &s.ProfilesFile })},
	{Name: "max-body-bytes", Usage: "largest request body (413 above), e.g. 8MiB", Set: sc.Bytes(func(s *Settings) *int64 { return &s.MaxBodyBytes })},
	{Name: "shutdown-timeout", Usage: "on SIGTERM, how long running requests may finish before they are aborted", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.ShutdownTimeout })},
	{Name: "sse-write-timeout", Usage: "longest a streamed write may block on a client that stopped reading", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.SSEWriteTimeout })},
	{Name: "max-running", Usage: "most sequences in one batch over all profiles", Set: sc.Int(func(s *Settings) *int { return &s.MaxRunning })},
	{Name: "prefix-cache", Usage: "share the KV blocks of identical prompt prefixes between requests (real engine)", Set: sc.Bool(func(s *Settings) *bool { return &s.PrefixCache }), Bool: true},
	{Name: "pipeline", Usage: "submit each step before delivering the one in flight, so the engine never waits for the scheduler (--pipeline=false: one step at a time)", Set: sc.Bool(func(s *Settings) *bool { return &s.Pipeline }), Bool: true},
	{Name: "max-step-tokens", Usage: "most tokens processed in one step (prefill chunks plus decodes)", Set: sc.Int(func(s *Settings) *int { return &s.MaxStepTokens })},
	{Name: "max-messages", Usage: "most messages in one chat request", Set: sc.Int(func(s *Settings) *int { return &s.MaxMessages })},
	{Name: "max-n", Usage: "largest n (choices per request)", Set: sc.Int(func(s *Settings) *int { return &s.MaxN })},
	{Name: "max-stop", Usage: "most stop sequences per request", Set: sc.Int(func(s *Settings) *int { return &s.MaxStop })},
	{Name: "max-tools", Usage: "most tools per request", Set: sc.Int(func(s *Settings) *int { return &s.MaxTools })},
	{Name: "key-rate", Usage: "requests per second per API key (or client address without keys); 0 = no limit (429 above)", Set: sc.NonNegativeFloat(func(s *Settings) *float64 { return &s.KeyRate })},
	{Name: "key-burst", Usage: "requests a key may send at once above --key-rate", Set: sc.Int(func(s *Settings) *int { return &s.KeyBurst })},
	{Name: "key-concurrency", Usage: "requests in flight per API key; 0 = no limit (429 above)", Set: sc.Int(func(s *Settings) *int { return &s.KeyConcurrency })},
	{Name: "mock-step", Usage: "mock engine: fixed time per step", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.MockStep })},
	{Name: "mock-per-seq", Usage: "mock engine: extra step time per sequence in the batch", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.MockPerSeq })},
	{Name: "mock-prefill-per-token", Usage: "mock engine: extra step time per prompt token", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.MockPrefillPerToken })},
	{Name: "mock-min-reply-tokens", Usage: "mock engine: pad replies to at least this many tokens (0: natural length), for load tests", Set: sc.Int(func(s *Settings) *int { return &s.MockMinReplyTokens })},
	{Name: "backend", Usage: "what launched workers run the model on: auto (cuda when go-nvml finds a GPU per rank, else cpu), cpu or cuda", Set: sc.OneOf(func(s *Settings) *string { return &s.Backend }, "auto", "cpu", "cuda")},
	{Name: "cpu-kernels", Usage: "what launched CPU workers multiply with: exact (the default: float32 products, the tests' reference) or fast (activations rounded to int8 for the MXFP4 experts and bf16 for the dense matrices, as llama.cpp does; about twice the speed where the CPU has AVX-512 VNNI and BF16; the error is in docs/performance.md)", Set: sc.OneOf(func(s *Settings) *string { return &s.CPUKernels }, "exact", "fast")},
	{Name: "load-format", Usage: "auto: load the checkpoint; dummy: random, well-scaled weights of its shapes (benchmarks without the files; --model may then be a preset: 20b, 120b, tiny)", Set: sc.OneOf(func(s *Settings) *string { return &s.LoadFormat }, "auto", "dummy")},
	{Name: "worker-bin", Usage: "worker executable for the real engine (default: \"worker\" next to this binary)", Set: sc.String(func(s *Settings) *string { return &s.WorkerBin })},
	{Name: "workers", Usage: "launch: start the worker processes; external: wait for workers started by foreman or systemd", Set: sc.OneOf(func(s *Settings) *string { return &s.Workers }, "launch", "external")},
	{Name: "nats-url", Usage: "external NATS server or cluster (default: an embedded server on loopback)", Set: sc.String(func(s *Settings) *string { return &s.NATSURL })},
	{Name: "nats-token", Usage: "token for --nats-url", Set: sc.String(func(s *Settings) *string { return &s.NATSToken })},
	{Name: "data-dir", Usage: "directory of the embedded NATS server's JetStream store (stored responses); default $XDG_DATA_HOME/gptoss or ~/.local/share/gptoss", Set: sc.String(func(s *Settings) *string { return &s.DataDir })},
	{Name: "responses-max-bytes", Usage: "bound on the stored responses (the oldest are dropped past it)", Set: sc.Bytes(func(s *Settings) *int64 { return &s.ResponsesMaxBytes })},
	{Name: "responses-ttl", Usage: "how long a stored response is kept", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.ResponsesTTL })},
	{Name: "tp", Usage: "tensor-parallel degree: worker processes to launch", Set: sc.Int(func(s *Settings) *int { return &s.TP })},
	{Name: "deployment", Usage: "NATS subject namespace of this server and its workers", Set: sc.String(func(s *Settings) *string { return &s.Deployment })},
	{Name: "step-timeout", Usage: "watchdog: a forward step with no answer within this fails its requests", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.StepTimeout })},
	{Name: "step-timeout-per-token", Usage: "added to --step-timeout for each token of a step, so a long prefill on a slow device is not taken for a hung worker (0: 200ms on cpu, 2ms on cuda)", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.StepTimeoutPerToken })},
	{Name: "load-timeout", Usage: "longest a worker may take to load the model", Set: sc.Duration(func(s *Settings) *time.Duration { return &s.LoadTimeout })},
	{Name: "log-level", Usage: "debug, info, warn or error", Set: sc.String(func(s *Settings) *string { return &s.LogLevel })},
	{Name: "log-format", Usage: "json, console or auto (console on a terminal)", Set: sc.String(func(s *Settings) *string { return &s.LogFormat })},
	{Name: "pprof-addr", Usage: "serve net/http/pprof on this loopback host:port, e.g. 127.0.0.1:6060, a listener of its own (default: off; other hosts are refused)", Set: sc.String(func(s *Settings) *string { return &s.PprofAddr })},
}

// table reads the settings; api_keys is the file key a list reads best as.
var table = &sc.Table[Settings]{
	Program:        "coordinator",
	EnvPrefix:      EnvPrefix,
	Settings:       settings,
	FileKeyAliases: map[string]string{"api_keys": "api_key"},
	ConfigFlag:     true,
}

// Load builds the settings from args (without the program name), the
// environment (getenv) and the config file named by --config or
// GPTOSS_CONFIG, in the precedence shared/config gives them. Usage and
// errors go to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Settings, error) {
	s, file, err := table.Load(args, getenv, out, Defaults())
	if err != nil {
		return Settings{}, err
	}
	s.ConfigFile = file
	if s.DataDir == "" {
		s.DataDir = defaultDataDir(getenv)
	}
	return s, s.Validate()
}

// defaultDataDir is the XDG data directory's gptoss folder.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gptoss")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "gptoss")
	}
	return filepath.Join(os.TempDir(), "gptoss")
}

// Validate checks ranges that no single setter can.
func (s Settings) Validate() error {
	switch {
	case s.Port < 0 || s.Port > 65535:
		return fmt.Errorf("config: port %d out of range", s.Port)
	case s.MaxBodyBytes < 1024:
		return fmt.Errorf("config: max_body_bytes %d is below 1KiB", s.MaxBodyBytes)
	case s.ShutdownTimeout < 0:
		return errors.New("config: shutdown_timeout must not be negative")
	case s.MaxRunning < 1 || s.MaxStepTokens < 1:
		return errors.New("config: max_running and max_step_tokens must be positive")
	case s.CORSAllowCredentials && slices.Contains(s.CORSOrigins, "*"):
		// Browsers refuse credentials for any origin; echoing every
		// origin instead would let any site act with a user's cookies.
		return errors.New("config: --cors-allow-credentials cannot be used with --cors-origins '*': list the origins")
	case s.CORSAllowCredentials && len(s.CORSOrigins) == 0:
		return errors.New("config: --cors-allow-credentials needs --cors-origins")
	case slices.ContainsFunc(s.CORSOrigins, func(o string) bool { return o != "*" && !strings.Contains(o, "://") }):
		// The API checks the whole form; this catches a bare host early.
		return fmt.Errorf("config: --cors-origins %q: want scheme://host[:port] (as browsers send Origin) or *", s.CORSOrigins)
	case s.KeyBurst < 0 || s.KeyConcurrency < 0:
		return errors.New("config: key_burst and key_concurrency must not be negative")
	case s.MaxMessages < 1 || s.MaxN < 1 || s.MaxStop < 0 || s.MaxTools < 0:
		return errors.New("config: max_messages and max_n must be positive; max_stop and max_tools not negative")
	case s.Workers == "external" && s.NATSURL == "":
		return errors.New("config: --workers external needs --nats-url (the workers cannot reach an embedded server they were not told about)")
	case s.TP < 1 || s.StepTimeout <= 0 || s.LoadTimeout <= 0:
		return errors.New("config: tp must be at least 1, step and load timeouts positive")
	case s.StepTimeoutPerToken < 0:
		return errors.New("config: step_timeout_per_token must not be negative")
	case s.ResponsesMaxBytes < 1<<20 || s.ResponsesTTL < time.Second:
		return errors.New("config: responses_max_bytes must be at least 1MiB and responses_ttl at least 1s")
	case s.MockStep < 0 || s.MockPerSeq < 0 || s.MockPrefillPerToken < 0 || s.MockMinReplyTokens < 0:
		return errors.New("config: mock timings must not be negative")
	}
	return nil
}

// Redacted returns the settings as printable fields with secrets hidden,
// for the startup log.
func (s Settings) Redacted() Settings {
	r := s
	if r.NATSToken != "" {
		r.NATSToken = "<redacted>"
	}
	r.APIKeys = make([]string, len(s.APIKeys))
	for i := range s.APIKeys {
		r.APIKeys[i] = "<redacted>"
	}
	return r
}
