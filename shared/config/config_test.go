package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testSettings is a small settings struct with one field of each kind.
type testSettings struct {
	Name    string
	Port    int
	Rate    float64
	Verbose bool
	Timeout time.Duration
	Size    int64
	Mode    string
	Tags    []string
}

var errOdd = errors.New("odd")

func testTable() *Table[testSettings] {
	return &Table[testSettings]{
		Program:   "prog",
		EnvPrefix: "TEST_",
		Settings: []Setting[testSettings]{
			{Name: "name", Aliases: []string{"LEGACY_NAME", "OLDER_NAME"}, Usage: "a name", Set: String(func(s *testSettings) *string { return &s.Name })},
			{Name: "port", Usage: "a port", Set: Int(func(s *testSettings) *int { return &s.Port })},
			{Name: "rate", Usage: "a rate", Set: NonNegativeFloat(func(s *testSettings) *float64 { return &s.Rate })},
			{Name: "verbose", Usage: "talk more", Bool: true, Set: Bool(func(s *testSettings) *bool { return &s.Verbose })},
			{Name: "timeout", Usage: "a timeout", Set: Duration(func(s *testSettings) *time.Duration { return &s.Timeout })},
			{Name: "max-size", Usage: "a size", Set: Bytes(func(s *testSettings) *int64 { return &s.Size })},
			{Name: "mode", Usage: "a mode", Set: OneOf(func(s *testSettings) *string { return &s.Mode }, "fast", "slow")},
			{Name: "tag", Aliases: []string{"TEST_TAGS"}, Usage: "a tag (repeatable)", List: true,
				Set: Strings(func(s *testSettings) *[]string { return &s.Tags }), Reset: Clear(func(s *testSettings) *[]string { return &s.Tags })},
			{Name: "even", Usage: "an even number", Set: func(s *testSettings, v string) error {
				if len(v)%2 == 1 {
					return errOdd
				}
				return nil
			}},
		},
		FileKeyAliases: map[string]string{"tags": "tag"},
		ConfigFlag:     true,
	}
}

func testDefaults() testSettings {
	return testSettings{Name: "default", Port: 1, Mode: "fast", Tags: []string{"d"}}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// writeFile writes a config file in a temporary directory and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	tab := testTable()
	file := writeFile(t, "name: file\nport: 2\nmode: slow\ntimeout: 5s\nmax_size: 2MiB\nrate: 0.5\n")

	s, used, err := tab.Load(nil, env(nil), io.Discard, testDefaults())
	if err != nil || used != "" || s.Name != "default" || s.Port != 1 || s.Mode != "fast" {
		t.Fatalf("defaults: %+v %q %v", s, used, err)
	}

	s, used, err = tab.Load([]string{"--config", file}, env(nil), io.Discard, testDefaults())
	if err != nil || used != file || s.Name != "file" || s.Port != 2 || s.Mode != "slow" ||
		s.Timeout != 5*time.Second || s.Size != 2<<20 || s.Rate != 0.5 {
		t.Fatalf("file: %+v %q %v", s, used, err)
	}

	// The file may be named by the environment; the environment beats it.
	s, used, err = tab.Load(nil, env(map[string]string{"TEST_CONFIG": file, "TEST_PORT": "3"}), io.Discard, testDefaults())
	if err != nil || used != file || s.Name != "file" || s.Port != 3 {
		t.Fatalf("environment: %+v %q %v", s, used, err)
	}

	// Flags beat everything; --config beats TEST_CONFIG; the last of a
	// repeated scalar flag wins.
	other := writeFile(t, "name: other\n")
	s, used, err = tab.Load([]string{"--config", other, "--port", "4", "--port=5"},
		env(map[string]string{"TEST_CONFIG": file, "TEST_PORT": "3", "TEST_NAME": "env"}), io.Discard, testDefaults())
	if err != nil || used != other || s.Name != "env" || s.Port != 5 || s.Mode != "fast" {
		t.Fatalf("flags: %+v %q %v", s, used, err)
	}
}

func TestAliases(t *testing.T) {
	tab := testTable()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LEGACY_NAME": "legacy"}, "legacy"},
		{map[string]string{"OLDER_NAME": "older"}, "older"},
		// The setting's own variable wins over its aliases, an earlier
		// alias over a later one.
		{map[string]string{"TEST_NAME": "own", "LEGACY_NAME": "legacy", "OLDER_NAME": "older"}, "own"},
		{map[string]string{"LEGACY_NAME": "legacy", "OLDER_NAME": "older"}, "legacy"},
		// Empty counts as unset.
		{map[string]string{"TEST_NAME": "", "LEGACY_NAME": "legacy"}, "legacy"},
	} {
		s, _, err := tab.Load(nil, env(tc.env), io.Discard, testDefaults())
		if err != nil || s.Name != tc.want {
			t.Errorf("%v: name %q %v, want %q", tc.env, s.Name, err, tc.want)
		}
	}
	s, _, err := tab.Load([]string{"--name", "flag"}, env(map[string]string{"LEGACY_NAME": "legacy"}), io.Discard, testDefaults())
	if err != nil || s.Name != "flag" {
		t.Fatalf("flag over alias: %q %v", s.Name, err)
	}
	// File key alias.
	s, _, err = tab.Load([]string{"--config", writeFile(t, "tags: [x, y]\n")}, env(nil), io.Discard, testDefaults())
	if err != nil || !slices.Equal(s.Tags, []string{"x", "y"}) {
		t.Fatalf("file key alias: %q %v", s.Tags, err)
	}
}

func TestListResetPerLayer(t *testing.T) {
	tab := testTable()
	defaults := testDefaults()
	file := writeFile(t, "tag: [f1, f2]\n")
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, nil, []string{"d"}},
		{[]string{"--config", file}, nil, []string{"f1", "f2"}},
		{[]string{"--config", file}, map[string]string{"TEST_TAG": "e1, e2,,"}, []string{"e1", "e2"}},
		{[]string{"--config", file}, map[string]string{"TEST_TAGS": "alias"}, []string{"alias"}},
		{[]string{"--config", file, "--tag", "a", "--tag", "b,c"}, map[string]string{"TEST_TAG": "e"}, []string{"a", "b", "c"}},
		// An empty list in the file clears the defaults.
		{[]string{"--config", writeFile(t, "tag: []\n")}, nil, nil},
		{[]string{"--config", writeFile(t, "tag:\n")}, nil, nil},
		// A scalar where a list goes is a list of one.
		{[]string{"--config", writeFile(t, "tag: one\n")}, nil, []string{"one"}},
	} {
		s, _, err := tab.Load(tc.args, env(tc.env), io.Discard, defaults)
		if err != nil || !slices.Equal(s.Tags, tc.want) {
			t.Errorf("%v %v: tags %q %v, want %q", tc.args, tc.env, s.Tags, err, tc.want)
		}
	}
	if !slices.Equal(defaults.Tags, []string{"d"}) {
		t.Fatalf("Load changed the defaults' list: %q", defaults.Tags)
	}
}

func TestBoolFlags(t *testing.T) {
	tab := testTable()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{[]string{"--verbose"}, nil, true},
		{[]string{"-verbose=true"}, nil, true},
		{[]string{"--verbose=false"}, map[string]string{"TEST_VERBOSE": "true"}, false},
		{[]string{"--verbose"}, map[string]string{"TEST_VERBOSE": "0"}, true},
		{nil, map[string]string{"TEST_VERBOSE": "1"}, true},
		{[]string{"--config", writeFile(t, "verbose: true\n")}, nil, true},
		{[]string{"--config", writeFile(t, "verbose: true\n")}, map[string]string{"TEST_VERBOSE": "false"}, false},
	} {
		s, _, err := tab.Load(tc.args, env(tc.env), io.Discard, testDefaults())
		if err != nil || s.Verbose != tc.want {
			t.Errorf("%v %v: verbose %v %v, want %v", tc.args, tc.env, s.Verbose, err, tc.want)
		}
	}
	// A bool flag takes no separate argument, so the value is a stray one.
	if _, _, err := tab.Load([]string{"--verbose", "false"}, env(nil), io.Discard, testDefaults()); err == nil ||
		!strings.Contains(err.Error(), `unexpected argument "false"`) {
		t.Fatalf("--verbose false: %v", err)
	}
}

func TestBadValues(t *testing.T) {
	tab := testTable()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		// Flags: the flag package names the flag.
		{[]string{"--port", "x"}, nil, []string{"-port", `want an integer, got "x"`}},
		{[]string{"--rate", "-1"}, nil, []string{"-rate", "non-negative"}},
		{[]string{"--rate", "NaN"}, nil, []string{"-rate", "non-negative"}},
		{[]string{"--verbose=maybe"}, nil, []string{"-verbose", "want true or false"}},
		{[]string{"--timeout", "soon"}, nil, []string{"-timeout", "duration"}},
		{[]string{"--max-size", "lots"}, nil, []string{"-max-size", "byte size"}},
		{[]string{"--mode", "medium"}, nil, []string{"-mode", `want fast or slow, got "medium"`}},
		{[]string{"--nope"}, nil, []string{"flag provided but not defined: -nope"}},
		{[]string{"stray"}, nil, []string{`config: unexpected argument "stray"`}},
		// Environment: the layer and the variable, alias included.
		{nil, map[string]string{"TEST_PORT": "x"}, []string{`config: environment TEST_PORT: want an integer, got "x"`}},
		{nil, map[string]string{"TEST_MAX_SIZE": "-1"}, []string{"config: environment TEST_MAX_SIZE: want a byte size"}},
		{nil, map[string]string{"LEGACY_NAME": "ok", "TEST_EVEN": "odd"}, []string{"config: environment TEST_EVEN: odd"}},
		{nil, map[string]string{"TEST_TAGS": "ok", "TEST_TIMEOUT": "1"}, []string{"config: environment TEST_TIMEOUT: want a duration"}},
		// A bad own variable is an error even where an alias is good.
		{nil, map[string]string{"TEST_VERBOSE": "yes please"}, []string{"config: environment TEST_VERBOSE: want true or false"}},
		// File: the layer (its path) and the key.
		{[]string{"--config", writeFile(t, "port: eighty\n")}, nil, []string{"c.yaml: port: want an integer"}},
		{[]string{"--config", writeFile(t, "mode: [fast, medium]\n")}, nil, []string{"c.yaml: mode: want fast or slow"}},
		{[]string{"--config", writeFile(t, "name: {first: a}\n")}, nil, []string{"c.yaml: name: want a value or a list"}},
		{[]string{"--config", writeFile(t, "tag: [[a]]\n")}, nil, []string{"c.yaml: tag: want a value or a list"}},
		{[]string{"--config", writeFile(t, "prot: 1\n")}, nil, []string{`c.yaml: unknown key "prot"`}},
		{[]string{"--config", writeFile(t, "config: other.yaml\n")}, nil, []string{`unknown key "config"`}},
		{[]string{"--config", writeFile(t, "port: [1\n")}, nil, []string{"c.yaml: yaml:"}},
		{[]string{"--config", writeFile(t, "- port\n")}, nil, []string{"c.yaml: yaml:"}},
		{[]string{"--config", "testdata/missing.yaml"}, nil, []string{"no such file"}},
		{nil, map[string]string{"TEST_CONFIG": "testdata/missing.yaml"}, []string{"no such file"}},
	} {
		var out bytes.Buffer
		s, used, err := tab.Load(tc.args, env(tc.env), &out, testDefaults())
		if err == nil {
			t.Errorf("%v %v: no error", tc.args, tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: error %q, want %q", tc.args, tc.env, err, w)
			}
		}
		if s.Name != "" || used != "" {
			t.Errorf("%v %v: settings %+v, file %q alongside an error", tc.args, tc.env, s, used)
		}
	}
}

// Errors from setters are wrapped, in each layer, so callers can test them.
func TestErrorsWrap(t *testing.T) {
	tab := testTable()
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, map[string]string{"TEST_EVEN": "odd"}},
		{[]string{"--config", writeFile(t, "even: odd\n")}, nil},
	} {
		_, _, err := tab.Load(tc.args, env(tc.env), io.Discard, testDefaults())
		if !errors.Is(err, errOdd) {
			t.Errorf("%v %v: %v does not wrap errOdd", tc.args, tc.env, err)
		}
	}
	_, _, err := tab.Load([]string{"--config", "testdata/missing.yaml"}, env(nil), io.Discard, testDefaults())
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v does not wrap os.ErrNotExist", err)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, body := range []string{"", "# only a comment\n"} {
		s, used, err := testTable().Load([]string{"--config", writeFile(t, body)}, env(nil), io.Discard, testDefaults())
		if err != nil || used == "" || s.Name != "default" {
			t.Errorf("%q: %+v %q %v", body, s, used, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out bytes.Buffer
		_, _, err := testTable().Load([]string{arg}, env(nil), &out, testDefaults())
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: %v, want flag.ErrHelp", arg, err)
		}
		help := out.String()
		for _, want := range []string{
			"Usage: prog [flags]", "Precedence: flags > environment (TEST_*) > --config file > defaults.",
			"-config", "(env TEST_CONFIG)", "-port", "(env TEST_PORT)", "-max-size", "(env TEST_MAX_SIZE)",
			"(env TEST_NAME or LEGACY_NAME or OLDER_NAME)", "(env TEST_TAG or TEST_TAGS)", "a tag (repeatable)",
		} {
			if !strings.Contains(help, want) {
				t.Errorf("%s: help lacks %q:\n%s", arg, want, help)
			}
		}
		// A bool flag is shown without an argument.
		if strings.Contains(help, "-verbose value") || !strings.Contains(help, "-port value") {
			t.Errorf("%s: bool flag shown with an argument, or other flag without:\n%s", arg, help)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "8MiB": 8 << 20, "512KiB": 512 << 10, "2MB": 2e6, "1GiB": 1 << 30, "10B": 10,
		"3KB": 3000, "1GB": 1e9, " 4 MiB ": 4 << 20, "0": 0, "8589934591GiB": 8589934591 << 30,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1", "1.5GiB", "8TiB", "MiB", "8 mib", "8589934592GiB", "99999999999999999999"} {
		if n, err := ParseBytes(in); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("%q: %d %v, want an error naming it", in, n, err)
		}
	}
}

func TestSetters(t *testing.T) {
	var s testSettings
	one := OneOf(func(s *testSettings) *string { return &s.Mode }, "only")
	if err := one(&s, "other"); err == nil || err.Error() != `want "only", got "other"` {
		t.Errorf("OneOf with one value: %v", err)
	}
	if err := one(&s, " only "); err != nil || s.Mode != "only" {
		t.Errorf("OneOf trims: %q %v", s.Mode, err)
	}
	var f float64
	set := Float(func(*testSettings) *float64 { return &f })
	for in, want := range map[string]float64{"0.9": 0.9, "-2": -2, " 1e-3 ": 1e-3} {
		if err := set(&s, in); err != nil || f != want {
			t.Errorf("Float %q: %g %v", in, f, err)
		}
	}
	for _, in := range []string{"NaN", "x", ""} {
		if err := set(&s, in); err == nil {
			t.Errorf("Float %q: no error", in)
		}
	}
	// String keeps the value as given (tokens may hold anything).
	if err := String(func(s *testSettings) *string { return &s.Name })(&s, " a b "); err != nil || s.Name != " a b " {
		t.Errorf("String: %q %v", s.Name, err)
	}
}

func TestTableErrors(t *testing.T) {
	set := String(func(s *testSettings) *string { return &s.Name })
	for _, tc := range []struct {
		tab  Table[testSettings]
		want string
	}{
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a", Set: set}, {Name: "a", Set: set}}}, `"a" defined twice`},
		{Table[testSettings]{ConfigFlag: true, Settings: []Setting[testSettings]{{Name: "config", Set: set}}}, `"config" defined twice`},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "", Set: set}}}, "bad setting name"},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a_b", Set: set}}}, "bad setting name"},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a"}}}, "has no Set"},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a", Set: set, List: true}}}, "has no Reset"},
		{Table[testSettings]{EnvPrefix: "P_", Settings: []Setting[testSettings]{{Name: "a", Set: set}, {Name: "b", Set: set, Aliases: []string{"P_A"}}}},
			`P_A read by both "a" and "b"`},
		{Table[testSettings]{EnvPrefix: "P_", Settings: []Setting[testSettings]{{Name: "a", Set: set, Aliases: []string{"P_A"}}}}, `P_A read by both`},
		{Table[testSettings]{EnvPrefix: "P_", ConfigFlag: true, Settings: []Setting[testSettings]{{Name: "a", Set: set, Aliases: []string{"P_CONFIG"}}}}, `P_CONFIG read by both`},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a", Set: set}}, FileKeyAliases: map[string]string{"b": "c"}}, `unknown key "c"`},
		{Table[testSettings]{Settings: []Setting[testSettings]{{Name: "a-b", Set: set}, {Name: "c", Set: set}}, FileKeyAliases: map[string]string{"a_b": "c"}}, `"a_b" is a setting's own key`},
	} {
		tc.tab.Program = "prog"
		_, _, err := tc.tab.Load(nil, env(nil), io.Discard, testSettings{})
		if err == nil || !strings.Contains(err.Error(), "config: table prog:") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.tab.Settings, err, tc.want)
		}
	}
}

// workerSettings and workerTable are shaped like the worker's settings:
// prefix GPTOSS_WORKER_, GPTOSS_NATS_TOKEN as an alias of --nats-token, no
// config file, and int, float, bool, duration and one-of settings.
type workerSettings struct {
	NATSURL              string
	NATSToken            string
	Rank                 int
	Heartbeat            time.Duration
	Backend              string
	GPUMemoryUtilization float64
	NCCL                 bool
}

var workerTable = &Table[workerSettings]{
	Program:   "worker",
	EnvPrefix: "GPTOSS_WORKER_",
	Settings: []Setting[workerSettings]{
		{Name: "nats-url", Usage: "NATS server URL", Set: String(func(c *workerSettings) *string { return &c.NATSURL })},
		{Name: "nats-token", Aliases: []string{"GPTOSS_NATS_TOKEN"}, Usage: "NATS authentication token", Set: String(func(c *workerSettings) *string { return &c.NATSToken })},
		{Name: "rank", Usage: "rank", Set: Int(func(c *workerSettings) *int { return &c.Rank })},
		{Name: "heartbeat", Usage: "heartbeat interval", Set: Duration(func(c *workerSettings) *time.Duration { return &c.Heartbeat })},
		{Name: "backend", Usage: "cpu or cuda", Set: OneOf(func(c *workerSettings) *string { return &c.Backend }, "cpu", "cuda")},
		{Name: "gpu-memory-utilization", Usage: "KV cache fraction", Set: Float(func(c *workerSettings) *float64 { return &c.GPUMemoryUtilization })},
		{Name: "nccl", Usage: "join a one-rank NCCL communicator", Bool: true, Set: Bool(func(c *workerSettings) *bool { return &c.NCCL })},
	},
}

var workerDefaults = workerSettings{NATSURL: "nats://127.0.0.1:4222", Heartbeat: time.Second, Backend: "cpu", GPUMemoryUtilization: 0.9}

func TestWorkerLikeTable(t *testing.T) {
	c, used, err := workerTable.Load(nil, env(nil), io.Discard, workerDefaults)
	if err != nil || used != "" || c != workerDefaults {
		t.Fatalf("defaults: %+v %q %v", c, used, err)
	}
	c, _, err = workerTable.Load(nil, env(map[string]string{
		"GPTOSS_NATS_TOKEN": "shared", "GPTOSS_WORKER_RANK": "1", "GPTOSS_WORKER_HEARTBEAT": "250ms",
		"GPTOSS_WORKER_BACKEND": "cuda", "GPTOSS_WORKER_GPU_MEMORY_UTILIZATION": "0.5", "GPTOSS_WORKER_NCCL": "true",
		// Without a file layer there is no config variable: ignored like
		// any other unknown variable.
		"GPTOSS_WORKER_CONFIG": "testdata/missing.yaml",
	}), io.Discard, workerDefaults)
	want := workerSettings{NATSURL: "nats://127.0.0.1:4222", NATSToken: "shared", Rank: 1, Heartbeat: 250 * time.Millisecond,
		Backend: "cuda", GPUMemoryUtilization: 0.5, NCCL: true}
	if err != nil || c != want {
		t.Fatalf("environment: %+v %v, want %+v", c, err, want)
	}
	// The worker's own variable beats the shared one; flags beat both.
	c, _, err = workerTable.Load(nil, env(map[string]string{"GPTOSS_NATS_TOKEN": "shared", "GPTOSS_WORKER_NATS_TOKEN": "own"}), io.Discard, workerDefaults)
	if err != nil || c.NATSToken != "own" {
		t.Fatalf("own variable over alias: %q %v", c.NATSToken, err)
	}
	c, _, err = workerTable.Load([]string{"--nats-token", "flag", "--rank=2", "--nccl=false"},
		env(map[string]string{"GPTOSS_NATS_TOKEN": "shared", "GPTOSS_WORKER_NATS_TOKEN": "own", "GPTOSS_WORKER_RANK": "1", "GPTOSS_WORKER_NCCL": "1"}), io.Discard, workerDefaults)
	if err != nil || c.NATSToken != "flag" || c.Rank != 2 || c.NCCL {
		t.Fatalf("flags: %+v %v", c, err)
	}
	// No --config flag.
	if _, _, err := workerTable.Load([]string{"--config", "w.yaml"}, env(nil), io.Discard, workerDefaults); err == nil ||
		!strings.Contains(err.Error(), "flag provided but not defined: -config") {
		t.Fatalf("--config: %v", err)
	}
	_, _, err = workerTable.Load(nil, env(map[string]string{"GPTOSS_WORKER_GPU_MEMORY_UTILIZATION": "most"}), io.Discard, workerDefaults)
	if err == nil || err.Error() != `config: environment GPTOSS_WORKER_GPU_MEMORY_UTILIZATION: want a number, got "most"` {
		t.Fatalf("bad float: %v", err)
	}
	_, _, err = workerTable.Load(nil, env(map[string]string{"GPTOSS_NATS_TOKEN": "", "GPTOSS_WORKER_BACKEND": "tpu"}), io.Discard, workerDefaults)
	if err == nil || err.Error() != `config: environment GPTOSS_WORKER_BACKEND: want cpu or cuda, got "tpu"` {
		t.Fatalf("bad one-of: %v", err)
	}
	var out bytes.Buffer
	if _, _, err := workerTable.Load([]string{"-h"}, env(nil), &out, workerDefaults); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	help := out.String()
	for _, want := range []string{"Usage: worker [flags]", "Precedence: flags > environment (GPTOSS_WORKER_*) > defaults.",
		"(env GPTOSS_WORKER_NATS_TOKEN or GPTOSS_NATS_TOKEN)", "(env GPTOSS_WORKER_GPU_MEMORY_UTILIZATION)"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "config") {
		t.Errorf("help mentions a config file:\n%s", help)
	}
}
