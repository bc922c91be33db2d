package hub

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/hub/hubtest"
)

const repoID = "test-org/gpt-oss-small"

// testFiles is a repository as the gpt-oss ones are laid out: the HF
// layout at the top, and original/ and metal/ copies that must never be
// fetched.
func testFiles(t *testing.T) map[string][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	return map[string][]byte{
		"config.json":                      []byte(`{"model_type": "gpt_oss"}`),
		"generation_config.json":           []byte(`{"eos_token_id": [200002]}`),
		"model.safetensors.index.json":     []byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}`),
		"model-00001-of-00002.safetensors": blob(700 << 10),
		"model-00002-of-00002.safetensors": blob(300 << 10),
		"original/model.safetensors":       blob(100 << 10),
		"metal/model.bin":                  blob(100 << 10),
		"README.md":                        []byte("# test\n"),
		"chat_template.jinja":              []byte("{{ x }}"),
	}
}

func newClient(t *testing.T, hub *hubtest.Server, cache, token string) *Client {
	t.Helper()
	return New(Env{Endpoint: hub.URL(), Cache: cache, Token: token}, Options{Backoff: time.Millisecond, Attempts: 4})
}

// download resolves and downloads, returning the snapshot.
func download(t *testing.T, c *Client) (*Snapshot, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Resolve(ctx, repoID, "main")
	if err != nil {
		return nil, err
	}
	return s, c.Download(ctx, s, nil)
}

// checkSnapshot compares the snapshot folder with the served files and the
// cache layout with huggingface_hub's.
func checkSnapshot(t *testing.T, cache string, s *Snapshot, files map[string][]byte, commit string) {
	t.Helper()
	if s.Commit != commit {
		t.Fatalf("commit %s, want %s", s.Commit, commit)
	}
	repoDir := filepath.Join(cache, "models--test-org--gpt-oss-small")
	if s.Dir != filepath.Join(repoDir, "snapshots", commit) {
		t.Fatalf("dir %s", s.Dir)
	}
	ref, err := os.ReadFile(filepath.Join(repoDir, "refs", "main"))
	if err != nil || string(ref) != commit {
		t.Fatalf("refs/main = %q, %v", ref, err)
	}
	entries, _ := os.ReadDir(s.Dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := "config.json generation_config.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json"
	if strings.Join(names, " ") != want {
		t.Fatalf("snapshot holds %v, want %s", names, want)
	}
	for _, n := range names {
		p := filepath.Join(s.Dir, n)
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("%s is not a symlink: %v", n, err)
		}
		content := files[n]
		etag := fmt.Sprintf("%x", sha256.Sum256(content))
		if !strings.HasSuffix(n, ".safetensors") {
			h := sha1.New()
			fmt.Fprintf(h, "blob %d\x00", len(content))
			h.Write(content)
			etag = hex.EncodeToString(h.Sum(nil))
		}
		if target != filepath.Join("..", "..", "blobs", etag) {
			t.Fatalf("%s -> %s, want ../../blobs/%s", n, target, etag)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s: content differs (%d bytes, %v)", n, len(got), err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(repoDir, "blobs", "*.incomplete")); len(left) > 0 {
		t.Fatalf("partial files left: %v", left)
	}
}

func TestDownloadLayoutAndSelection(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{Token: "hf_good"})
	files := testFiles(t)
	commit := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	cache := t.TempDir()
	var mu sync.Mutex
	seen := map[string]int64{}
	c := New(Env{Endpoint: hub.URL(), Cache: cache, Token: "hf_good"}, Options{Progress: func(p string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if total != int64(len(files[p])) {
			t.Errorf("progress of %s: total %d, want %d", p, total, len(files[p]))
		}
		seen[p] = done
	}})
	s, err := download(t, c)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, cache, s, files, commit)
	for p, n := range seen {
		if n != int64(len(files[p])) {
			t.Fatalf("progress of %s ended at %d of %d", p, n, len(files[p]))
		}
	}
	for _, r := range hub.Requests() {
		if strings.Contains(r.Path, "original") || strings.Contains(r.Path, "metal") || strings.Contains(r.Path, "README") {
			t.Fatalf("fetched what serving does not need: %s %s", r.Method, r.Path)
		}
		if r.Host == hubtest.HostHub && !r.Auth {
			t.Fatalf("no token sent to the Hub: %s %s", r.Method, r.Path)
		}
	}
	if hub.CDNAuthSeen() {
		t.Fatal("the token was sent to the storage host")
	}
	// The cache is then enough, offline, and a second download fetches nothing.
	off, err := Cached(cache, repoID, "main")
	if err != nil || off.Dir != s.Dir || len(off.Files) != 5 {
		t.Fatalf("cached: %+v %v", off, err)
	}
	hub.ResetRequests()
	if _, err := download(t, c); err != nil {
		t.Fatal(err)
	}
	for _, r := range hub.Requests() {
		if r.Method == http.MethodGet && !strings.HasPrefix(r.Path, "/api/") {
			t.Fatalf("downloaded again: %s", r.Path)
		}
	}
}

func TestResumeAfterCut(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := testFiles(t)
	commit := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	const shard = "model-00001-of-00002.safetensors"
	hub.Cut(shard, 200<<10, 2)   // the LFS file, twice
	hub.Cut("config.json", 5, 1) // a regular file on the Hub itself
	cache := t.TempDir()
	s, err := download(t, newClient(t, hub, cache, ""))
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, cache, s, files, commit)
	ranges := hub.RangesAsked(shard)
	if len(ranges) < 2 || ranges[len(ranges)-1] != fmt.Sprintf("bytes=%d-", 400<<10) {
		t.Fatalf("ranges asked for %s: %q (want resumes at 200 KiB, then 400 KiB)", shard, ranges)
	}
}

func TestIgnoredRangeStartsOver(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := testFiles(t)
	commit := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	const shard = "model-00002-of-00002.safetensors"
	hub.Cut(shard, 100<<10, 1)
	hub.IgnoreRange(shard, true) // the resume then gets the whole file with 200
	cache := t.TempDir()
	s, err := download(t, newClient(t, hub, cache, ""))
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, cache, s, files, commit)
}

func TestCorruptBytesRetriedThenRefused(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := testFiles(t)
	commit := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	const shard = "model-00001-of-00002.safetensors"
	hub.Corrupt(shard, 2)
	hub.Corrupt("config.json", 1)
	cache := t.TempDir()
	s, err := download(t, newClient(t, hub, cache, ""))
	if err != nil {
		t.Fatalf("two corrupt transfers of four attempts: %v", err)
	}
	checkSnapshot(t, cache, s, files, commit)

	// Always corrupt: a clear error, and nothing of it in the cache.
	hub.Corrupt(shard, 100)
	cache = t.TempDir()
	_, err = download(t, newClient(t, hub, cache, ""))
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), shard) {
		t.Fatalf("want a checksum error naming %s, got %v", shard, err)
	}
	etag := fmt.Sprintf("%x", sha256.Sum256(files[shard]))
	repoDir := filepath.Join(cache, "models--test-org--gpt-oss-small")
	for _, p := range []string{filepath.Join(repoDir, "blobs", etag), filepath.Join(repoDir, "blobs", etag+".incomplete"),
		filepath.Join(repoDir, "snapshots", commit, shard)} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists after a failed verification", p)
		}
	}
	if _, err := Cached(cache, repoID, "main"); !errors.Is(err, ErrNotCached) {
		t.Fatalf("an incomplete snapshot passes as cached: %v", err)
	}
}

func TestErrors(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{Token: "hf_good"})
	files := testFiles(t)
	hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	hub.AddRepo("test-org/private", files, hubtest.RepoOptions{Private: true})
	ctx := context.Background()
	cache := t.TempDir()

	if _, err := newClient(t, hub, cache, "").Resolve(ctx, "test-org/nothing", "main"); !errors.Is(err, ErrRepoNotFound) || Unavailable(err) ||
		!strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("missing repo: %v", err)
	}
	if _, err := newClient(t, hub, cache, "").Resolve(ctx, "test-org/private", "main"); !errors.Is(err, ErrRepoNotFound) {
		t.Fatalf("private repo without a token: %v", err)
	}
	if s, err := newClient(t, hub, cache, "hf_good").Resolve(ctx, "test-org/private", "main"); err != nil || !s.Remote {
		t.Fatalf("private repo with the token: %v", err)
	}
	if _, err := newClient(t, hub, cache, "hf_bad").Resolve(ctx, repoID, "main"); !errors.Is(err, ErrAuth) {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := newClient(t, hub, cache, "").Resolve(ctx, repoID, "v9"); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("missing revision: %v", err)
	}
	if _, err := newClient(t, hub, cache, "").Resolve(ctx, "../etc", "main"); err == nil {
		t.Fatal("a path passed as a repository id")
	}

	// The Hub busy: retried. Down: unreachable, or the cache if it has it.
	hub.Fail(hubtest.APIScope, 2, http.StatusServiceUnavailable, http.Header{"Retry-After": {"0"}})
	if _, err := download(t, newClient(t, hub, cache, "")); err != nil {
		t.Fatalf("two 503s then success: %v", err)
	}
	if err := hub.SetDown(true); err != nil {
		t.Fatal(err)
	}
	s, err := newClient(t, hub, cache, "").Resolve(ctx, repoID, "main")
	if err != nil || s.Remote || s.CacheReason == "" {
		t.Fatalf("down with a cached copy: %+v %v", s, err)
	}
	if _, err := newClient(t, hub, t.TempDir(), "").Resolve(ctx, repoID, "main"); !errors.Is(err, ErrUnreachable) || !Unavailable(err) {
		t.Fatalf("down without a cached copy: %v", err)
	}
	// Offline: no request at all.
	hub.ResetRequests()
	off := New(Env{Endpoint: hub.URL(), Cache: t.TempDir(), Offline: true}, Options{})
	if _, err := off.Resolve(ctx, repoID, "main"); !errors.Is(err, ErrOffline) || !Unavailable(err) {
		t.Fatalf("offline, empty cache: %v", err)
	}
	off = New(Env{Endpoint: hub.URL(), Cache: cache, Offline: true}, Options{})
	if s, err := off.Resolve(ctx, repoID, "main"); err != nil || s.Remote {
		t.Fatalf("offline with the cache: %v", err)
	}
	if n := len(hub.Requests()); n != 0 {
		t.Fatalf("offline made %d requests", n)
	}
}

func TestRevisionsAndCommits(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := testFiles(t)
	first := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	v2 := map[string][]byte{}
	for k, v := range files {
		v2[k] = v
	}
	v2["config.json"] = []byte(`{"model_type": "gpt_oss", "v": 2}`)
	second, err := hub.AddRevision(repoID, "v2", v2)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	c := newClient(t, hub, cache, "")
	ctx := context.Background()
	for _, rev := range []string{"main", "v2", first} {
		s, err := c.Resolve(ctx, repoID, rev)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Download(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(RepoDir(cache, repoID), "refs", "v2")); string(b) != second {
		t.Fatalf("refs/v2 = %q, want %s", b, second)
	}
	// A commit needs no ref; the shards are shared blobs, stored once.
	if _, err := os.Stat(filepath.Join(RepoDir(cache, repoID), "refs", first)); err == nil {
		t.Fatal("a ref was written for a commit hash")
	}
	blobs, _ := os.ReadDir(filepath.Join(RepoDir(cache, repoID), "blobs"))
	if len(blobs) != 6 { // 2 shards, index, generation config, 2 configs
		t.Fatalf("%d blobs, want 6", len(blobs))
	}
	s, err := Cached(cache, repoID, "v2")
	if err != nil || s.Commit != second {
		t.Fatalf("cached v2: %v", err)
	}
}

func TestConcurrentDownloadersShareTheLock(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := testFiles(t)
	commit := hub.AddRepo(repoID, files, hubtest.RepoOptions{})
	hub.SetThrottle(4 << 20)
	cache := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	snaps := make([]*Snapshot, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snaps[i], errs[i] = download(t, newClient(t, hub, cache, ""))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("downloader %d: %v", i, err)
		}
		checkSnapshot(t, cache, snaps[i], files, commit)
	}
	// The lock kept each blob to one transfer.
	gets := 0
	for _, r := range hub.Requests() {
		if r.Host == hubtest.HostCDN && r.Method == http.MethodGet {
			gets++
		}
	}
	if gets != 2 {
		t.Fatalf("%d storage downloads for 2 LFS files", gets)
	}
}

func TestCheckSpace(t *testing.T) {
	cache := t.TempDir()
	c := New(Env{Endpoint: "http://127.0.0.1:1", Cache: cache}, Options{})
	s := &Snapshot{Repo: repoID, Revision: "main", Commit: strings.Repeat("a", 40), Remote: true,
		Dir:   filepath.Join(RepoDir(cache, repoID), "snapshots", strings.Repeat("a", 40)),
		Files: []File{{Path: "model.safetensors", Size: 1 << 60, SHA256: strings.Repeat("b", 64)}}}
	if err := c.CheckSpace(s); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "HF_HUB_CACHE") {
		t.Fatalf("an exabyte fits? %v", err)
	}
	s.Files[0].Size = 1 << 10
	if err := c.CheckSpace(s); err != nil {
		t.Fatal(err)
	}
}

func TestEnvFrom(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "token"), []byte("hf_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	e := EnvFrom(env(map[string]string{"HF_HOME": home}))
	if e.Endpoint != DefaultEndpoint || e.Cache != filepath.Join(home, "hub") || e.Token != "hf_file" || e.Offline {
		t.Fatalf("HF_HOME: %+v", e)
	}
	e = EnvFrom(env(map[string]string{"HF_HOME": home, "HF_TOKEN": "hf_env", "HF_HUB_CACHE": "/c", "HF_ENDPOINT": "http://mirror/",
		"HF_HUB_OFFLINE": "yes"}))
	if e.Endpoint != "http://mirror" || e.Cache != "/c" || e.Token != "hf_env" || !e.Offline {
		t.Fatalf("overrides: %+v", e)
	}
	e = EnvFrom(env(map[string]string{"HOME": home, "XDG_CACHE_HOME": "/x", "TRANSFORMERS_OFFLINE": "1", "HUGGING_FACE_HUB_TOKEN": "hf_old"}))
	if e.Cache != "/x/huggingface/hub" || !e.Offline || e.Token != "hf_old" {
		t.Fatalf("XDG and legacy names: %+v", e)
	}
	e = EnvFrom(env(map[string]string{"HOME": home, "HF_HUB_OFFLINE": "0"}))
	if e.Cache != filepath.Join(home, ".cache", "huggingface", "hub") || e.Offline {
		t.Fatalf("defaults: %+v", e)
	}
}

func TestNames(t *testing.T) {
	for s, want := range map[string]bool{"openai/gpt-oss-20b": true, "a/b": true, "models/tiny": true, "./models/tiny": false,
		"/abs/dir": false, "org/na--me": false, "org/": false, "a/b/c": false, "20b": false, "org/name.": false, "~/x": false} {
		if IsRepoID(s) != want {
			t.Errorf("IsRepoID(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"config.json": true, "generation_config.json": true, "model-00000-of-00002.safetensors": true,
		"model.safetensors.index.json": true, "original/model.safetensors": false, "metal/model.bin": false, "tokenizer.json": false} {
		if Wanted(s) != want {
			t.Errorf("Wanted(%q) = %v", s, !want)
		}
	}
}
