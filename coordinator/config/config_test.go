package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	s, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Model != "20b" || s.Port != 8000 || s.Host != "127.0.0.1" || !s.EnableStreaming || s.Mock != "auto" || s.MaxBodyBytes != 8<<20 {
		t.Fatalf("defaults %+v", s)
	}
}

func TestPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	// File only.
	s, err := Load([]string{"--config", "testdata/good.yaml"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Model != "120b" || s.Port != 9000 || s.EnableStreaming || s.MaxBodyBytes != 2<<20 ||
		s.ShutdownTimeout != 5*time.Second || strings.Join(s.APIKeys, ",") != "sk-file-1,sk-file-2" {
		t.Fatalf("file layer %+v", s)
	}
	// Environment beats the file; the config path itself may come from env.
	s, err = Load(nil, env(map[string]string{"GPTOSS_CONFIG": "testdata/good.yaml", "GPTOSS_PORT": "9100", "GPTOSS_API_KEY": "sk-env"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 9100 || strings.Join(s.APIKeys, ",") != "sk-env" || s.Model != "120b" {
		t.Fatalf("env layer %+v", s)
	}
	// Flags beat both; a repeated flag accumulates.
	s, err = Load([]string{"--config", "testdata/good.yaml", "--port", "9200", "--api-key", "a", "--api-key", "b", "--model", "20b"},
		env(map[string]string{"GPTOSS_PORT": "9100", "GPTOSS_API_KEY": "sk-env"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 9200 || strings.Join(s.APIKeys, ",") != "a,b" || s.Model != "20b" {
		t.Fatalf("flag layer %+v", s)
	}
}

func TestLegacyEnableStreamingEnv(t *testing.T) {
	s, err := Load(nil, env(map[string]string{"ENABLE_STREAMING": "false"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.EnableStreaming {
		t.Fatal("ENABLE_STREAMING=false did not turn streaming off")
	}
	s, _ = Load([]string{"--enable-streaming=true"}, env(map[string]string{"ENABLE_STREAMING": "false"}), io.Discard)
	if !s.EnableStreaming {
		t.Fatal("flag did not override the environment")
	}
}

func TestAPIKeysCommaSeparated(t *testing.T) {
	s, err := Load(nil, env(map[string]string{"GPTOSS_API_KEYS": "k1, k2,,k3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.APIKeys, ",") != "k1,k2,k3" {
		t.Fatalf("keys %q", s.APIKeys)
	}
	if r := s.Redacted(); strings.Contains(strings.Join(r.APIKeys, ""), "k1") {
		t.Fatal("redaction leaked a key")
	}
}

func TestMockValues(t *testing.T) {
	for in, want := range map[string]string{"": "true", "=true": "true", "=false": "false", "=auto": "auto", "=0": "false"} {
		s, err := Load([]string{"--mock" + in}, env(nil), io.Discard)
		if err != nil || s.Mock != want {
			t.Fatalf("--mock%s: %q %v", in, s.Mock, err)
		}
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", "testdata/unknown-key.bad.yaml"}, nil, `unknown key "prot"`},
		{[]string{"--config", "testdata/bad-value.bad.yaml"}, nil, "want an integer"},
		{[]string{"--config", "testdata/missing.yaml"}, nil, "no such file"},
		{[]string{"--port", "x"}, nil, "want an integer"},
		{[]string{"--port", "70000"}, nil, "out of range"},
		{[]string{"--shutdown-timeout", "soon"}, nil, "duration"},
		{[]string{"--max-body-bytes", "lots"}, nil, "byte size"},
		{[]string{"--mock=maybe"}, nil, "auto, true or false"},
		{[]string{"--reasoning-field", "thoughts"}, nil, "reasoning_content, reasoning or both"},
		{[]string{"stray"}, nil, "unexpected argument"},
		{[]string{"--cors-origins", "*", "--cors-allow-credentials"}, nil, "cannot be used with --cors-origins '*'"},
		{[]string{"--cors-allow-credentials"}, nil, "needs --cors-origins"},
		{[]string{"--cors-origins", "app.example.com"}, nil, "scheme://host"},
		{nil, map[string]string{"GPTOSS_MAX_N": "zero"}, "GPTOSS_MAX_N"},
		{nil, map[string]string{"ENABLE_STREAMING": "nope"}, "ENABLE_STREAMING"},
	}
	for _, tc := range cases {
		_, err := Load(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// The example file shipped in configs/ must stay loadable.
func TestExampleConfig(t *testing.T) {
	s, err := Load([]string{"--config", "../../configs/coordinator.yaml"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Profile != "latency_first" || s.Port != 8000 {
		t.Fatalf("%+v", s)
	}
}

// TestCORS: no origins by default (no CORS headers); --cors-origins is
// repeatable and comma-separated, GPTOSS_CORS_ORIGINS comma-separated; a
// higher layer replaces the list.
func TestCORS(t *testing.T) {
	s, err := Load(nil, env(nil), io.Discard)
	if err != nil || len(s.CORSOrigins) != 0 || s.CORSAllowCredentials {
		t.Fatalf("defaults: %q %v %v", s.CORSOrigins, s.CORSAllowCredentials, err)
	}
	s, err = Load([]string{"--cors-origins", "https://a.example,https://b.example", "--cors-origins", "http://localhost:3000", "--cors-allow-credentials"},
		env(map[string]string{"GPTOSS_CORS_ORIGINS": "https://env.example"}), io.Discard)
	if err != nil || strings.Join(s.CORSOrigins, " ") != "https://a.example https://b.example http://localhost:3000" || !s.CORSAllowCredentials {
		t.Fatalf("flags: %q %v %v", s.CORSOrigins, s.CORSAllowCredentials, err)
	}
	s, err = Load(nil, env(map[string]string{"GPTOSS_CORS_ORIGINS": "*"}), io.Discard)
	if err != nil || strings.Join(s.CORSOrigins, " ") != "*" {
		t.Fatalf("env: %q %v", s.CORSOrigins, err)
	}
}

func TestUIFlag(t *testing.T) {
	s, err := Load(nil, env(nil), io.Discard)
	if err != nil || !s.UI {
		t.Fatalf("the console should be on by default (%v)", err)
	}
	s, err = Load([]string{"--ui=false"}, env(nil), io.Discard)
	if err != nil || s.UI {
		t.Fatalf("--ui=false: UI %v, %v", s.UI, err)
	}
	s, err = Load(nil, env(map[string]string{"GPTOSS_UI": "false"}), io.Discard)
	if err != nil || s.UI {
		t.Fatalf("GPTOSS_UI=false: UI %v, %v", s.UI, err)
	}
}
