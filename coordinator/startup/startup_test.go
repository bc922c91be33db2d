package startup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/hub"
	"github.com/gptoss/server/coordinator/hub/hubtest"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
)

// tinyRepo is a repository whose config.json is the tiny model's (the
// weights are noise: Resolve reads only the config).
func tinyRepo(t *testing.T) map[string][]byte {
	t.Helper()
	cfg, err := model.Presets["tiny"].Architecture().HFJSON()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"config.json":       cfg,
		"model.safetensors": make([]byte, 64<<10),
		"original/x.bin":    make([]byte, 1<<10),
	}
}

// tinyDir writes a checkpoint directory with the tiny config.
func tinyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range tinyRepo(t) {
		if !strings.Contains(name, "/") {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func resolve(t *testing.T, h *hubtest.Server, cache string, offline bool, r Request) (Source, error) {
	t.Helper()
	endpoint := "http://127.0.0.1:1" // nothing listens
	if h != nil {
		endpoint = h.URL()
	}
	r.Hub = hub.New(hub.Env{Endpoint: endpoint, Cache: cache, Offline: offline}, hub.Options{Backoff: time.Millisecond})
	if r.Mock == "" {
		r.Mock = "auto"
	}
	if r.Revision == "" {
		r.Revision = "main"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Resolve(ctx, r)
}

func TestResolveRules(t *testing.T) {
	cache := t.TempDir()
	dir := tinyDir(t)

	// A directory serves itself, named after it.
	src, err := resolve(t, nil, cache, true, Request{Model: dir})
	if err != nil || src.Mode != "real" || src.Kind != KindDirectory || src.Preset.ID != "ckpt" || src.Preset.ContextLength != 4096 {
		t.Fatalf("directory: %+v %v", src, err)
	}
	// A path that does not exist is an error, never the mock.
	for _, p := range []string{"/no/such/dir", "./nope", "a/b/c"} {
		if _, err := resolve(t, nil, cache, true, Request{Model: p}); err == nil {
			t.Fatalf("%s: no error", p)
		}
	}
	// A preset without its weights: the mock with --mock=auto, saying why.
	src, err = resolve(t, nil, cache, true, Request{Model: "20b"})
	if err != nil || src.Mode != "mock" || src.Preset.ID != "gpt-oss-20b" || !strings.Contains(src.Reason, "HF_HUB_OFFLINE") {
		t.Fatalf("20b offline: %+v %v", src, err)
	}
	src, err = resolve(t, nil, cache, false, Request{Model: "openai/gpt-oss-120b"})
	if err != nil || src.Mode != "mock" || src.Preset.ID != "gpt-oss-120b" || !strings.Contains(src.Reason, "cannot be reached") {
		t.Fatalf("120b unreachable: %+v %v", src, err)
	}
	// ... an error with --mock=false, the fallback model when one is given.
	if _, err := resolve(t, nil, cache, true, Request{Model: "20b", Mock: "false"}); !errors.Is(err, hub.ErrOffline) {
		t.Fatalf("--mock=false: %v", err)
	}
	src, err = resolve(t, nil, cache, true, Request{Model: "20b", FallbackModel: dir})
	if err != nil || !src.Fallback || src.Mode != "real" || src.Dir != dir || !strings.Contains(src.Reason, "FALLBACK") {
		t.Fatalf("fallback: %+v %v", src, err)
	}
	// A repository that is no preset gets no mock.
	if _, err := resolve(t, nil, cache, true, Request{Model: "someone/model"}); err == nil || !strings.Contains(err.Error(), "mock stands in only") {
		t.Fatalf("non-preset repo offline: %v", err)
	}
	// --mock and dummy weights need nothing.
	if src, err := resolve(t, nil, cache, true, Request{Model: "20b", Mock: "true"}); err != nil || src.Mode != "mock" {
		t.Fatalf("--mock: %+v %v", src, err)
	}
	if src, err := resolve(t, nil, cache, true, Request{Model: "120b", LoadFormat: "dummy"}); err != nil || src.Kind != KindDummy || src.Dir != "120b" {
		t.Fatalf("dummy: %+v %v", src, err)
	}
}

func TestResolveFromHub(t *testing.T) {
	h := hubtest.New(t, hubtest.Options{})
	files := tinyRepo(t)
	commit := h.AddRepo("test-org/tiny", files, hubtest.RepoOptions{})
	h.AddRepo("openai/gpt-oss-20b", files, hubtest.RepoOptions{})
	cache := t.TempDir()

	// A repository that the Hub does not know is an error, even with --mock=auto.
	if _, err := resolve(t, h, cache, false, Request{Model: "test-org/missing"}); !errors.Is(err, hub.ErrRepoNotFound) ||
		!strings.Contains(err.Error(), "no directory test-org/missing") {
		t.Fatalf("missing repo: %v", err)
	}
	if _, err := resolve(t, h, cache, false, Request{Model: "test-org/tiny", Revision: "nope"}); !errors.Is(err, hub.ErrRevisionNotFound) {
		t.Fatalf("missing revision: %v", err)
	}
	// Found: config.json fetched now, the weights left to Run.
	src, err := resolve(t, h, cache, false, Request{Model: "test-org/tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if src.Kind != KindHub || src.Preset.ID != "test-org/tiny" || src.Preset.ContextLength != 4096 || src.Vocab != 201088 ||
		src.Snapshot.Commit != commit || !strings.Contains(src.Reason, "downloading") {
		t.Fatalf("hub source: %+v", src)
	}
	if m := src.Snapshot.Missing(); len(m) != 1 || m[0].Path != "model.safetensors" {
		t.Fatalf("left to download: %+v", m)
	}
	// The preset keeps its public id; once downloaded it comes from the cache.
	src, err = resolve(t, h, cache, false, Request{Model: "20b"})
	if err != nil || src.Preset.ID != "gpt-oss-20b" || src.Kind != KindHub {
		t.Fatalf("20b from the hub: %+v %v", src, err)
	}
	if err := hub.New(hub.Env{Endpoint: h.URL(), Cache: cache}, hub.Options{}).Download(context.Background(), src.Snapshot, nil); err != nil {
		t.Fatal(err)
	}
	src, err = resolve(t, nil, cache, true, Request{Model: "gpt-oss-20b"})
	if err != nil || src.Kind != KindCache || src.Mode != "real" {
		t.Fatalf("20b from the cache: %+v %v", src, err)
	}
}

func TestTracker(t *testing.T) {
	h := hubtest.New(t, hubtest.Options{})
	h.AddRepo("test-org/tiny", tinyRepo(t), hubtest.RepoOptions{})
	src, err := resolve(t, h, t.TempDir(), false, Request{Model: "test-org/tiny"})
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker()
	tr.Begin(src)
	if tr.Phase() != PhaseDownloading || !strings.Contains(tr.Pending(), "downloading") {
		t.Fatalf("phase %s, pending %q", tr.Phase(), tr.Pending())
	}
	tr.FileProgress("model.safetensors", 16<<10, 64<<10)
	st := tr.Snapshot()
	if st.Download == nil || st.Download.BytesDone != 16<<10 || st.Download.BytesTotal != 64<<10 || st.Repo != "test-org/tiny" ||
		!strings.Contains(tr.Pending(), "25%") {
		t.Fatalf("download status %+v, pending %q", st.Download, tr.Pending())
	}
	tr.SetPhase(PhaseLoading)
	tr.SetWorkers(func() []WorkerLoad {
		return []WorkerLoad{{Rank: 0, State: "loading", Done: 3, Total: 4}, {Rank: 1, State: "loading", Done: 1, Total: 4}}
	})
	st = tr.Snapshot()
	if st.Load == nil || st.Load.BytesDone != 4 || st.Load.BytesTotal != 8 || len(st.Load.Workers) != 2 || !strings.Contains(tr.Pending(), "50%") {
		t.Fatalf("load status %+v, pending %q", st.Load, tr.Pending())
	}
	lines := barLines(st, 100)
	if len(lines) != 3 || !strings.Contains(lines[0], " 50%") || !strings.Contains(lines[2], "rank 1") {
		t.Fatalf("bars: %q", lines)
	}
	tr.SetPhase(PhaseReady)
	if tr.Pending() != "" {
		t.Fatal("pending once ready")
	}
	tr.Fail(errors.New("boom"))
	if !strings.Contains(tr.Pending(), "boom") || tr.Phase() != PhaseFailed {
		t.Fatal("failure not reported")
	}
}

// fakeExec is a ready executor that records its calls.
type fakeExec struct {
	steps, released int
	ready           bool
}

func (f *fakeExec) Step(context.Context, *step.Batch) error { f.steps++; return nil }
func (f *fakeExec) Release(ids []uint64)                    { f.released += len(ids) }
func (f *fakeExec) Capabilities() step.Capabilities         { return step.Capabilities{Logprobs: true} }
func (f *fakeExec) Ready() bool                             { return f.ready }

func TestExecutorStandsIn(t *testing.T) {
	var e Executor
	if e.Ready() || e.Capabilities().Logprobs || !errors.Is(e.Step(context.Background(), &step.Batch{}), errNotReady) {
		t.Fatal("ready before attach")
	}
	e.Release([]uint64{1})
	f := &fakeExec{}
	e.Attach(f)
	if e.Ready() {
		t.Fatal("an unready executor reads ready")
	}
	f.ready = true
	if !e.Ready() || !e.Capabilities().Logprobs || e.Step(context.Background(), &step.Batch{}) != nil || f.steps != 1 {
		t.Fatal("not forwarded")
	}
	e.Release([]uint64{1, 2})
	if f.released != 2 || e.Flush(context.Background()) != nil {
		t.Fatal("release not forwarded")
	}
}
