// Package config gathers the coordinator's settings from, in increasing
// precedence, built-in defaults, a YAML config file (--config), environment
// variables and command-line flags. Every setting has one name: the flag
// --max-body-bytes is the file key max_body_bytes and the environment
// variable GPTOSS_MAX_BODY_BYTES. Environment is read here and nowhere else.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable name.
const EnvPrefix = "GPTOSS_"

// Settings is the coordinator's whole configuration.
type Settings struct {
	Model   string
	Profile string
	Host    string
	Port    int
	// Mock is "auto" (mock when no real engine can start, said loudly),
	// "true" or "false" (fail instead of falling back).
	Mock                 string
	APIKeys              []string
	AllowUnauthenticated bool
	EnableStreaming      bool
	ReasoningField       string
	ProfilesFile         string
	MaxBodyBytes         int64
	ShutdownTimeout      time.Duration
	SSEWriteTimeout      time.Duration
	MaxRunning           int
	PrefixCache          bool
	MaxStepTokens        int
	MaxMessages          int
	MaxN                 int
	MaxStop              int
	MaxTools             int
	KeyRate              float64
	KeyBurst             int
	KeyConcurrency       int
	MockStep             time.Duration
	MockPerSeq           time.Duration
	MockPrefillPerToken  time.Duration
	MockMinReplyTokens   int
	WorkerBin            string
	Workers              string // "launch" (start them) or "external" (foreman, systemd)
	Backend              string // launched workers' backend: "auto", "cpu" or "cuda"
	LoadFormat           string // "auto" (the checkpoint) or "dummy" (random weights of its shapes)
	NATSURL              string
	NATSToken            string
	TP                   int
	Deployment           string
	StepTimeout          time.Duration
	LoadTimeout          time.Duration
	LogLevel             string
	LogFormat            string
	// ConfigFile is where the file layer came from ("" when none).
	ConfigFile string
}

// Defaults returns the built-in settings.
func Defaults() Settings {
	return Settings{
		Model: "20b", Profile: "balanced", Host: "127.0.0.1", Port: 8000, Mock: "auto",
		EnableStreaming: true, ReasoningField: "reasoning_content", MaxBodyBytes: 8 << 20, ShutdownTimeout: 30 * time.Second,
		SSEWriteTimeout: 30 * time.Second, MaxRunning: 1024, MaxStepTokens: 8192, PrefixCache: true,
		MaxMessages: 4096, MaxN: 8, MaxStop: 4, MaxTools: 128,
		MockStep: 10 * time.Millisecond, MockPerSeq: 20 * time.Microsecond, MockPrefillPerToken: 5 * time.Microsecond,
		LogLevel: "info", LogFormat: "auto",
		TP: 1, Workers: "launch", Backend: "auto", LoadFormat: "auto", Deployment: "default", StepTimeout: 60 * time.Second, LoadTimeout: 10 * time.Minute,
	}
}

// setting binds one name to a field.
type setting struct {
	name    string   // flag name
	aliases []string // extra environment names (legacy spellings)
	usage   string
	list    bool
	set     func(*Settings, string) error
	reset   func(*Settings) // lists: cleared before a layer sets them
	isBool  bool
}

func str(f func(*Settings) *string) func(*Settings, string) error {
	return func(s *Settings, v string) error { *f(s) = v; return nil }
}

// oneOf sets a string setting that takes one of a few values.
func oneOf(f func(*Settings) *string, allowed ...string) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		v = strings.TrimSpace(v)
		if !slices.Contains(allowed, v) {
			n := len(allowed)
			return fmt.Errorf("want %s or %s, got %q", strings.Join(allowed[:n-1], ", "), allowed[n-1], v)
		}
		*f(s) = v
		return nil
	}
}

func integer(f func(*Settings) *int) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		*f(s) = n
		return nil
	}
}

func boolean(f func(*Settings) *bool) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*f(s) = b
		return nil
	}
}

func duration(f func(*Settings) *time.Duration) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want a duration such as 30s, got %q", v)
		}
		*f(s) = d
		return nil
	}
}

func bytesize(f func(*Settings) *int64) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		n, err := parseBytes(v)
		if err != nil {
			return err
		}
		*f(s) = n
		return nil
	}
}

// parseBytes accepts 1048576, 512KiB, 8MiB, 1GiB (and KB/MB/GB as powers of
// 1000).
func parseBytes(v string) (int64, error) {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(v, u.suf) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a byte size such as 8MiB, got %q", v)
	}
	return n * mult, nil
}

var settings = []setting{
	{name: "model", usage: "model to serve: 20b, 120b, tiny or a checkpoint directory", set: str(func(s *Settings) *string { return &s.Model })},
	{name: "profile", usage: "default serving profile (latency_first, balanced, quality_first)", set: str(func(s *Settings) *string { return &s.Profile })},
	{name: "host", usage: "address to listen on", set: str(func(s *Settings) *string { return &s.Host })},
	{name: "port", usage: "port to listen on", set: integer(func(s *Settings) *int { return &s.Port })},
	{name: "mock", usage: "mock engine: auto (fall back to mock when no real engine can start), true, false", set: func(s *Settings, v string) error {
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
	}, isBool: true},
	{name: "api-key", aliases: []string{"GPTOSS_API_KEYS"}, usage: "API key clients must send (repeatable; env: comma-separated)", list: true,
		set: func(s *Settings, v string) error {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					s.APIKeys = append(s.APIKeys, k)
				}
			}
			return nil
		}, reset: func(s *Settings) { s.APIKeys = nil }},
	{name: "allow-unauthenticated", usage: "allow listening on a non-loopback address without API keys", set: boolean(func(s *Settings) *bool { return &s.AllowUnauthenticated }), isBool: true},
	{name: "enable-streaming", aliases: []string{"ENABLE_STREAMING"}, usage: "serve stream=true requests (false: they get a 400)", set: boolean(func(s *Settings) *bool { return &s.EnableStreaming }), isBool: true},
	{name: "reasoning-field", usage: "where chat responses put reasoning: reasoning_content, reasoning or both (a request may choose with \"reasoning_field\")", set: oneOf(func(s *Settings) *string { return &s.ReasoningField }, "reasoning_content", "reasoning", "both")},
	{name: "profiles-file", usage: "profiles YAML (default: the built-in configs/profiles.yaml)", set: str(func(s *Settings) *string { return &s.ProfilesFile })},
	{name: "max-body-bytes", usage: "largest request body (413 above), e.g. 8MiB", set: bytesize(func(s *Settings) *int64 { return &s.MaxBodyBytes })},
	{name: "shutdown-timeout", usage: "on SIGTERM, how long running requests may finish before they are aborted", set: duration(func(s *Settings) *time.Duration { return &s.ShutdownTimeout })},
	{name: "sse-write-timeout", usage: "longest a streamed write may block on a client that stopped reading", set: duration(func(s *Settings) *time.Duration { return &s.SSEWriteTimeout })},
	{name: "max-running", usage: "most sequences in one batch over all profiles", set: integer(func(s *Settings) *int { return &s.MaxRunning })},
	{name: "prefix-cache", usage: "share the KV blocks of identical prompt prefixes between requests (real engine)", set: boolean(func(s *Settings) *bool { return &s.PrefixCache }), isBool: true},
	{name: "max-step-tokens", usage: "most tokens processed in one step (prefill chunks plus decodes)", set: integer(func(s *Settings) *int { return &s.MaxStepTokens })},
	{name: "max-messages", usage: "most messages in one chat request", set: integer(func(s *Settings) *int { return &s.MaxMessages })},
	{name: "max-n", usage: "largest n (choices per request)", set: integer(func(s *Settings) *int { return &s.MaxN })},
	{name: "max-stop", usage: "most stop sequences per request", set: integer(func(s *Settings) *int { return &s.MaxStop })},
	{name: "max-tools", usage: "most tools per request", set: integer(func(s *Settings) *int { return &s.MaxTools })},
	{name: "key-rate", usage: "requests per second per API key (or client address without keys); 0 = no limit (429 above)", set: func(s *Settings, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 {
			return fmt.Errorf("want a non-negative number, got %q", v)
		}
		s.KeyRate = f
		return nil
	}},
	{name: "key-burst", usage: "requests a key may send at once above --key-rate", set: integer(func(s *Settings) *int { return &s.KeyBurst })},
	{name: "key-concurrency", usage: "requests in flight per API key; 0 = no limit (429 above)", set: integer(func(s *Settings) *int { return &s.KeyConcurrency })},
	{name: "mock-step", usage: "mock engine: fixed time per step", set: duration(func(s *Settings) *time.Duration { return &s.MockStep })},
	{name: "mock-per-seq", usage: "mock engine: extra step time per sequence in the batch", set: duration(func(s *Settings) *time.Duration { return &s.MockPerSeq })},
	{name: "mock-prefill-per-token", usage: "mock engine: extra step time per prompt token", set: duration(func(s *Settings) *time.Duration { return &s.MockPrefillPerToken })},
	{name: "mock-min-reply-tokens", usage: "mock engine: pad replies to at least this many tokens (0: natural length), for load tests", set: integer(func(s *Settings) *int { return &s.MockMinReplyTokens })},
	{name: "backend", usage: "what launched workers run the model on: auto (cuda when go-nvml finds a GPU per rank, else cpu), cpu or cuda", set: oneOf(func(s *Settings) *string { return &s.Backend }, "auto", "cpu", "cuda")},
	{name: "load-format", usage: "auto: load the checkpoint; dummy: random, well-scaled weights of its shapes (benchmarks without the files; --model may then be a preset: 20b, 120b, tiny)", set: oneOf(func(s *Settings) *string { return &s.LoadFormat }, "auto", "dummy")},
	{name: "worker-bin", usage: "worker executable for the real engine (default: \"worker\" next to this binary)", set: str(func(s *Settings) *string { return &s.WorkerBin })},
	{name: "workers", usage: "launch: start the worker processes; external: wait for workers started by foreman or systemd", set: oneOf(func(s *Settings) *string { return &s.Workers }, "launch", "external")},
	{name: "nats-url", usage: "external NATS server or cluster (default: an embedded server on loopback)", set: str(func(s *Settings) *string { return &s.NATSURL })},
	{name: "nats-token", aliases: []string{"GPTOSS_NATS_TOKEN"}, usage: "token for --nats-url", set: str(func(s *Settings) *string { return &s.NATSToken })},
	{name: "tp", usage: "tensor-parallel degree: worker processes to launch", set: integer(func(s *Settings) *int { return &s.TP })},
	{name: "deployment", usage: "NATS subject namespace of this server and its workers", set: str(func(s *Settings) *string { return &s.Deployment })},
	{name: "step-timeout", usage: "watchdog: a forward step with no answer within this fails its requests", set: duration(func(s *Settings) *time.Duration { return &s.StepTimeout })},
	{name: "load-timeout", usage: "longest a worker may take to load the model", set: duration(func(s *Settings) *time.Duration { return &s.LoadTimeout })},
	{name: "log-level", usage: "debug, info, warn or error", set: str(func(s *Settings) *string { return &s.LogLevel })},
	{name: "log-format", usage: "json, console or auto (console on a terminal)", set: str(func(s *Settings) *string { return &s.LogFormat })},
}

func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func fileKey(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// rawFlag records a flag's values as given, to apply them as the last layer.
type rawFlag struct {
	s      *setting
	values []string
	isBool bool
}

func (r *rawFlag) String() string     { return strings.Join(r.values, ",") }
func (r *rawFlag) Set(v string) error { r.values = append(r.values, v); return r.s.set(&Settings{}, v) }
func (r *rawFlag) IsBoolFlag() bool   { return r.isBool }

// Load builds the settings from args (without the program name), the
// environment (getenv) and the config file named by --config or
// GPTOSS_CONFIG. Usage and errors go to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Settings, error) {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath := fs.String("config", "", "YAML config file (keys are the flag names with _ for -)")
	raws := make([]*rawFlag, len(settings))
	for i := range settings {
		raws[i] = &rawFlag{s: &settings[i], isBool: settings[i].isBool}
		fs.Var(raws[i], settings[i].name, settings[i].usage+" (env "+envName(settings[i].name)+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: coordinator [flags]\n\nPrecedence: flags > environment (GPTOSS_*) > --config file > defaults.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Settings{}, err
	}
	if fs.NArg() > 0 {
		return Settings{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	s := Defaults()
	path := *configPath
	if path == "" {
		path = getenv(EnvPrefix + "CONFIG")
	}
	if path != "" {
		if err := applyFile(&s, path); err != nil {
			return Settings{}, err
		}
		s.ConfigFile = path
	}
	for i := range settings {
		st := &settings[i]
		for _, name := range append([]string{envName(st.name)}, st.aliases...) {
			if v, ok := lookup(getenv, name); ok {
				if st.list && st.reset != nil {
					st.reset(&s)
				}
				if err := st.set(&s, v); err != nil {
					return Settings{}, fmt.Errorf("config: environment %s: %w", name, err)
				}
			}
		}
	}
	for _, r := range raws {
		if len(r.values) == 0 {
			continue
		}
		if r.s.list && r.s.reset != nil {
			r.s.reset(&s)
		}
		for _, v := range r.values {
			if err := r.s.set(&s, v); err != nil {
				return Settings{}, fmt.Errorf("config: --%s: %w", r.s.name, err)
			}
		}
	}
	return s, s.Validate()
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// applyFile applies a YAML file. Unknown keys are errors, so a misspelt
// setting is caught at start rather than silently ignored.
func applyFile(s *Settings, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]any
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	byKey := map[string]*setting{}
	for i := range settings {
		byKey[fileKey(settings[i].name)] = &settings[i]
	}
	byKey["api_keys"] = byKey["api_key"]
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		st, ok := byKey[k]
		if !ok {
			return fmt.Errorf("config: %s: unknown key %q", path, k)
		}
		vals := []string{}
		switch v := doc[k].(type) {
		case []any:
			for _, x := range v {
				vals = append(vals, fmt.Sprint(x))
			}
		case nil:
		default:
			vals = append(vals, fmt.Sprint(v))
		}
		if st.list && st.reset != nil {
			st.reset(s)
		}
		for _, v := range vals {
			if err := st.set(s, v); err != nil {
				return fmt.Errorf("config: %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
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
	case s.KeyBurst < 0 || s.KeyConcurrency < 0:
		return errors.New("config: key_burst and key_concurrency must not be negative")
	case s.MaxMessages < 1 || s.MaxN < 1 || s.MaxStop < 0 || s.MaxTools < 0:
		return errors.New("config: max_messages and max_n must be positive; max_stop and max_tools not negative")
	case s.Workers == "external" && s.NATSURL == "":
		return errors.New("config: --workers external needs --nats-url (the workers cannot reach an embedded server they were not told about)")
	case s.TP < 1 || s.StepTimeout <= 0 || s.LoadTimeout <= 0:
		return errors.New("config: tp must be at least 1, step and load timeouts positive")
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
