package hubtest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const token = "hf_test_token"

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testFiles is a small gpt-oss-like repository: regular JSON files, LFS
// weights by extension and by folder, and a big file LFS by size.
func testFiles(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"config.json":            []byte(`{"model_type":"gpt_oss"}` + "\n"),
		"generation_config.json": []byte(`{"eos_token_id":200002}` + "\n"),
		"model.safetensors":      randBytes(t, 300_000),
		"original/config.json":   []byte(`{"num_hidden_layers":2}`),
		"original/x.bin":         randBytes(t, 5_000),
		"metal/model.bin":        randBytes(t, 1_000),
		"tokenizer.json":         bytes.Repeat([]byte("t"), 70_000), // LFS by size (threshold 64 KiB)
		"README.md":              []byte("hello\n"),
	}
}

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.LFSThreshold == 0 {
		opts.LFSThreshold = 64 << 10
	}
	return New(t, opts)
}

// client does not follow redirects, to look at the Hub's 302 itself.
var client = &http.Client{
	Timeout:       10 * time.Second,
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type hdr map[string]string

func do(t *testing.T, method, url string, h hdr) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, body
}

func auth() hdr { return hdr{"Authorization": "Bearer " + token} }

func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
}

func TestHashes(t *testing.T) {
	// `printf 'hello\n' | git hash-object --stdin`
	if got := GitBlobSHA1([]byte("hello\n")); got != "ce013625030ba8dba906f756967f9e9ca394464a" {
		t.Errorf("GitBlobSHA1 = %s", got)
	}
	sha := SHA256Hex([]byte("hello\n"))
	want := "version https://git-lfs.github.com/spec/v1\noid sha256:" + sha + "\nsize 6\n"
	if got := LFSPointer(sha, 6); got != want {
		t.Errorf("LFSPointer = %q", got)
	}
}

type infoJSON struct {
	ID       string `json:"id"`
	ModelID  string `json:"modelId"`
	SHA      string `json:"sha"`
	Private  bool   `json:"private"`
	Siblings []struct {
		RFilename string `json:"rfilename"`
		Size      *int64 `json:"size"`
		BlobID    string `json:"blobId"`
		LFS       *struct {
			SHA256      string `json:"sha256"`
			Size        int64  `json:"size"`
			PointerSize int    `json:"pointerSize"`
		} `json:"lfs"`
	} `json:"siblings"`
}

func TestModelInfo(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	commit := s.AddRepo("org/model", files, RepoOptions{Refs: []string{"refs/pr/1", "v1"}})
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(commit) {
		t.Fatalf("commit %q is not 40 lowercase hex", commit)
	}
	if again := s.AddRepo("org/model", files, RepoOptions{Refs: []string{"refs/pr/1", "v1"}}); again != commit {
		t.Errorf("same content gave commit %s then %s", commit, again)
	}
	if other := s.AddRepo("org/copy", files, RepoOptions{}); other == commit {
		t.Error("two repositories share a commit id")
	}

	for _, u := range []string{"/api/models/org/model", "/api/models/org/model/revision/main",
		"/api/models/org/model/revision/refs%2Fpr%2F1", "/api/models/org/model/revision/refs/pr/1",
		"/api/models/org/model/revision/v1", "/api/models/org/model/revision/" + commit} {
		resp, body := do(t, "GET", s.URL()+u, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
		var info infoJSON
		decode(t, body, &info)
		if info.SHA != commit || info.ID != "org/model" || info.ModelID != "org/model" || info.Private {
			t.Errorf("GET %s: %+v", u, info)
		}
		if len(info.Siblings) != len(files) || info.Siblings[0].Size != nil || info.Siblings[0].BlobID != "" {
			t.Errorf("GET %s without blobs: siblings %+v", u, info.Siblings)
		}
	}

	resp, body := do(t, "GET", s.URL()+"/api/models/org/model/revision/main?blobs=true", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("blobs=true: %d %s", resp.StatusCode, body)
	}
	var info infoJSON
	decode(t, body, &info)
	var names []string
	for _, sb := range info.Siblings {
		names = append(names, sb.RFilename)
		data := files[sb.RFilename]
		if sb.Size == nil || *sb.Size != int64(len(data)) {
			t.Errorf("%s: size %v, want %d", sb.RFilename, sb.Size, len(data))
		}
		lfs := map[string]bool{"model.safetensors": true, "original/x.bin": true, "original/config.json": true,
			"metal/model.bin": true, "tokenizer.json": true}[sb.RFilename]
		if !lfs {
			if sb.LFS != nil || sb.BlobID != GitBlobSHA1(data) {
				t.Errorf("%s: regular file listed as %+v", sb.RFilename, sb)
			}
			continue
		}
		sha := SHA256Hex(data)
		ptr := LFSPointer(sha, int64(len(data)))
		if sb.LFS == nil || sb.LFS.SHA256 != sha || sb.LFS.Size != int64(len(data)) ||
			sb.LFS.PointerSize != len(ptr) || sb.BlobID != GitBlobSHA1([]byte(ptr)) {
			t.Errorf("%s: LFS file listed as %+v (lfs %+v)", sb.RFilename, sb, sb.LFS)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("siblings not sorted: %v", names)
	}

	// A second revision with other content.
	v2, err := s.AddRevision("org/model", "v2", map[string][]byte{"config.json": []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	_, body = do(t, "GET", s.URL()+"/api/models/org/model/revision/v2", nil)
	decode(t, body, &info)
	if v2 == commit || info.SHA != v2 || len(info.Siblings) != 1 {
		t.Errorf("v2: commit %s, info %+v", v2, info)
	}
	if c, _ := s.Commit("org/model", "main"); c != commit {
		t.Errorf("main moved to %s", c)
	}
	if _, err := s.AddRevision("org/none", "main", nil); err == nil {
		t.Error("AddRevision on a missing repo: no error")
	}
}

type entry struct {
	Type string `json:"type"`
	OID  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		OID         string `json:"oid"`
		Size        int64  `json:"size"`
		PointerSize int    `json:"pointerSize"`
	} `json:"lfs"`
}

var linkRe = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// listTree follows the pagination and returns the entries and page count.
func listTree(t *testing.T, url string) ([]entry, int) {
	t.Helper()
	var all []entry
	pages := 0
	for url != "" {
		resp, body := do(t, "GET", url, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		var page []entry
		decode(t, body, &page)
		all = append(all, page...)
		pages++
		url = ""
		if l := resp.Header.Get("Link"); l != "" {
			m := linkRe.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("bad Link header %q", l)
			}
			url = m[1]
		}
	}
	return all, pages
}

func TestTreePagination(t *testing.T) {
	s := start(t, Options{TreePageSize: 3})
	files := testFiles(t)
	files["original/sub/deep.json"] = []byte("{}")
	commit := s.AddRepo("org/model", files, RepoOptions{})

	all, pages := listTree(t, s.URL()+"/api/models/org/model/tree/main?recursive=true")
	want := len(files) + 3 // + original, original/sub, metal
	if len(all) != want || pages != (want+2)/3 {
		t.Fatalf("recursive: %d entries in %d pages, want %d in %d", len(all), pages, want, (want+2)/3)
	}
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.Path] {
			t.Errorf("%s listed twice", e.Path)
		}
		seen[e.Path] = true
		switch e.Type {
		case "directory":
			if e.Size != 0 || len(e.OID) != 40 {
				t.Errorf("directory %+v", e)
			}
		case "file":
			info, _ := s.FileInfo("org/model", commit, e.Path)
			if e.OID != info.BlobID || e.Size != int64(len(files[e.Path])) {
				t.Errorf("file %+v, want %+v", e, info)
			}
			if info.LFS != (e.LFS != nil) || e.LFS != nil && (e.LFS.OID != info.SHA256 ||
				e.LFS.Size != info.Size || e.LFS.PointerSize != info.PointerSize) {
				t.Errorf("file %s lfs %+v, want %+v", e.Path, e.LFS, info)
			}
		default:
			t.Errorf("entry type %q", e.Type)
		}
	}

	root, _ := listTree(t, s.URL()+"/api/models/org/model/tree/"+commit)
	var rootPaths []string
	for _, e := range root {
		rootPaths = append(rootPaths, e.Type+":"+e.Path)
	}
	wantRoot := "file:README.md file:config.json file:generation_config.json directory:metal " +
		"file:model.safetensors directory:original file:tokenizer.json"
	if strings.Join(rootPaths, " ") != wantRoot {
		t.Errorf("root listing %v", rootPaths)
	}

	// The path in the tree URL comes encoded as one segment from
	// huggingface_hub, as plain segments from others.
	for _, u := range []string{"/tree/main/original%2Fsub", "/tree/main/original/sub?recursive=false"} {
		sub, _ := listTree(t, s.URL()+"/api/models/org/model"+u)
		if len(sub) != 1 || sub[0].Path != "original/sub/deep.json" {
			t.Errorf("%s: %+v", u, sub)
		}
	}
	resp, _ := do(t, "GET", s.URL()+"/api/models/org/model/tree/main?cursor=bogus", nil)
	if resp.StatusCode != 400 {
		t.Errorf("bad cursor: %d", resp.StatusCode)
	}
}

func TestResolve(t *testing.T) {
	s := start(t, Options{Token: token})
	files := testFiles(t)
	commit := s.AddRepo("org/model", files, RepoOptions{Refs: []string{"refs/pr/1"}})

	// A regular file is served by the Hub itself.
	for _, method := range []string{"HEAD", "GET"} {
		resp, body := do(t, method, s.URL()+"/org/model/resolve/main/config.json",
			hdr{"Accept-Encoding": "identity"})
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("X-Repo-Commit") != commit ||
			h.Get("ETag") != `"`+GitBlobSHA1(files["config.json"])+`"` ||
			h.Get("Content-Length") != "25" || h.Get("Content-Encoding") != "" {
			t.Errorf("%s config.json: %d %v", method, resp.StatusCode, h)
		}
		if method == "GET" && !bytes.Equal(body, files["config.json"]) {
			t.Errorf("GET config.json: %q", body)
		}
	}

	// An LFS file is a redirect to the CDN, its metadata in X-Linked-*.
	data := files["model.safetensors"]
	sha := SHA256Hex(data)
	for _, rev := range []string{"main", commit, "refs%2Fpr%2F1", "refs/pr/1"} {
		resp, _ := do(t, "HEAD", s.URL()+"/org/model/resolve/"+rev+"/model.safetensors", auth())
		h := resp.Header
		loc := h.Get("Location")
		if resp.StatusCode != 302 || h.Get("X-Repo-Commit") != commit ||
			h.Get("X-Linked-Etag") != `"`+sha+`"` || h.Get("X-Linked-Size") != "300000" ||
			h.Get("ETag") != `"`+GitBlobSHA1([]byte(LFSPointer(sha, 300000)))+`"` ||
			!strings.HasPrefix(loc, s.CDNURL()+"/") || !strings.Contains(loc, sha) ||
			!strings.Contains(loc, "Signature=") {
			t.Fatalf("HEAD %s model.safetensors: %d %v", rev, resp.StatusCode, h)
		}
	}
	resp, body := do(t, "GET", s.URL()+"/org/model/resolve/main/original/x.bin", nil)
	if resp.StatusCode != 302 || len(body) == 0 {
		t.Fatalf("GET original/x.bin: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", resp.Header.Get("Location"), nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, files["original/x.bin"]) ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), `filename="x.bin";`) {
		t.Errorf("CDN GET original/x.bin: %d %v", resp.StatusCode, resp.Header)
	}

	// The CDN honours only the signed URL it was given.
	loc := s.CDNBlobURL(sha)
	if resp, _ := do(t, "GET", loc, nil); resp.StatusCode != 200 {
		t.Errorf("CDNBlobURL: %d", resp.StatusCode)
	}
	for _, bad := range []string{strings.Replace(loc, "Signature=", "Signature=0", 1),
		s.CDNURL() + "/repos/" + sha[:2] + "/" + sha[2:4] + "/" + sha} {
		if resp, _ := do(t, "GET", bad, nil); resp.StatusCode != 403 {
			t.Errorf("GET %s: %d, want 403", bad, resp.StatusCode)
		}
	}
	if s.CDNAuthSeen() {
		t.Error("CDNAuthSeen with no Authorization sent to the CDN")
	}
	do(t, "GET", loc, auth())
	if !s.CDNAuthSeen() {
		t.Error("Authorization sent to the CDN not seen")
	}
}

// errorCase checks the status and Hub error headers of a request.
func errorCase(t *testing.T, name, method, url string, h hdr, status int, code, msg string) {
	t.Helper()
	resp, body := do(t, method, url, h)
	if resp.StatusCode != status || resp.Header.Get("X-Error-Code") != code ||
		msg != "" && resp.Header.Get("X-Error-Message") != msg {
		t.Errorf("%s: %d %q %q, want %d %q %q", name, resp.StatusCode, resp.Header.Get("X-Error-Code"),
			resp.Header.Get("X-Error-Message"), status, code, msg)
	}
	if method == "GET" {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("%s: body %q is not {\"error\": ...}", name, body)
		}
	}
}

func TestErrors(t *testing.T) {
	s := start(t, Options{Token: token})
	files := testFiles(t)
	commit := s.AddRepo("org/model", files, RepoOptions{})
	s.AddRepo("org/secret", files, RepoOptions{Private: true})
	u := s.URL()
	bad := hdr{"Authorization": "Bearer nope"}
	lower := hdr{"Authorization": "bearer " + token}

	for _, m := range []string{"GET", "HEAD"} {
		errorCase(t, "unknown repo, token", m, u+"/api/models/org/none", auth(), 404, "RepoNotFound", msgRepoNotFound)
		errorCase(t, "unknown repo, no token", m, u+"/api/models/org/none", nil, 401, "RepoNotFound", msgNoAuth)
		errorCase(t, "unknown repo resolve", m, u+"/org/none/resolve/main/config.json", nil, 401, "RepoNotFound", msgNoAuth)
		errorCase(t, "private, no token", m, u+"/api/models/org/secret", nil, 401, "RepoNotFound", msgNoAuth)
		errorCase(t, "private resolve, no token", m, u+"/org/secret/resolve/main/config.json", nil, 401, "RepoNotFound", msgNoAuth)
		errorCase(t, "private tree, no token", m, u+"/api/models/org/secret/tree/main", nil, 401, "RepoNotFound", msgNoAuth)
		errorCase(t, "wrong token", m, u+"/api/models/org/model", bad, 401, "", msgBadToken)
		errorCase(t, "wrong token, private", m, u+"/org/secret/resolve/main/config.json", bad, 401, "", msgBadToken)
		errorCase(t, "unknown revision", m, u+"/api/models/org/model/revision/nope", nil, 404, "RevisionNotFound", "")
		errorCase(t, "unknown revision resolve", m, u+"/org/model/resolve/nope/config.json", nil, 404, "RevisionNotFound", "")
		errorCase(t, "unknown revision tree", m, u+"/api/models/org/model/tree/nope", nil, 404, "RevisionNotFound", "")
		errorCase(t, "missing file", m, u+"/org/model/resolve/main/nope.json", nil, 404, "EntryNotFound", msgEntryNotFound)
		errorCase(t, "missing dir", m, u+"/api/models/org/model/tree/main/nope", nil, 404, "EntryNotFound", msgEntryNotFound)
	}
	resp, _ := do(t, "HEAD", u+"/org/model/resolve/main/nope.json", nil)
	if resp.Header.Get("X-Repo-Commit") != commit {
		t.Errorf("EntryNotFound without X-Repo-Commit: %v", resp.Header)
	}
	for _, h := range []hdr{auth(), lower} {
		if resp, body := do(t, "GET", u+"/org/secret/resolve/main/config.json", h); resp.StatusCode != 200 ||
			!bytes.Equal(body, files["config.json"]) {
			t.Errorf("private with token %v: %d", h, resp.StatusCode)
		}
		if resp, _ := do(t, "GET", u+"/api/models/org/secret", h); resp.StatusCode != 200 {
			t.Errorf("private info with token %v: %d", h, resp.StatusCode)
		}
	}
	if resp, _ := do(t, "POST", u+"/api/models/org/model", nil); resp.StatusCode != 405 {
		t.Errorf("POST: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", u+"/api/whatever", nil); resp.StatusCode != 404 || resp.Header.Get("X-Error-Code") != "" {
		t.Errorf("unknown page: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestRanges(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	data := files["model.safetensors"]
	cdn := s.CDNBlobURL(SHA256Hex(data))
	readme := s.URL() + "/org/model/resolve/main/README.md"
	cases := []struct {
		url, rng string
		status   int
		want     []byte
		crange   string
	}{
		{cdn, "bytes=1000-", 206, data[1000:], "bytes 1000-299999/300000"},
		{cdn, "bytes=10-19", 206, data[10:20], "bytes 10-19/300000"},
		{cdn, "bytes=299990-400000", 206, data[299990:], "bytes 299990-299999/300000"},
		{cdn, "bytes=-5", 206, data[299995:], "bytes 299995-299999/300000"},
		{cdn, "bytes=0-", 206, data, "bytes 0-299999/300000"},
		{cdn, "bytes=300000-", 416, nil, "bytes */300000"},
		{cdn, "bytes=5-2", 200, data, ""},     // invalid: ignored
		{cdn, "bytes=0-1,5-6", 200, data, ""}, // several ranges: ignored
		{readme, "bytes=2-", 206, []byte("llo\n"), "bytes 2-5/6"},
		{readme, "bytes=6-", 416, nil, "bytes */6"},
	}
	for _, c := range cases {
		resp, body := do(t, "GET", c.url, hdr{"Range": c.rng})
		if resp.StatusCode != c.status || resp.Header.Get("Content-Range") != c.crange ||
			c.want != nil && !bytes.Equal(body, c.want) {
			t.Errorf("%s %s: %d %q, %d bytes", c.url, c.rng, resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
		}
		if c.want != nil && resp.Header.Get("Content-Length") != strconv.Itoa(len(c.want)) {
			t.Errorf("%s: Content-Length %s", c.rng, resp.Header.Get("Content-Length"))
		}
	}
	resp, _ := do(t, "HEAD", cdn, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "300000" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("CDN HEAD: %d %v", resp.StatusCode, resp.Header)
	}
	if got := s.RangesAsked("model.safetensors"); len(got) != 8 || got[0] != "bytes=1000-" {
		t.Errorf("RangesAsked = %q", got)
	}
}

// get fetches url and returns what arrived and the read error.
func get(t *testing.T, url string, h hdr) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestCut(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	data := files["model.safetensors"]
	cdn := s.CDNBlobURL(SHA256Hex(data))

	s.Cut("model.safetensors", 1000, 1)
	resp, body, err := get(t, cdn, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || resp.ContentLength != 300000 || !bytes.Equal(body, data[:1000]) {
		t.Fatalf("cut download: err %v, %d bytes of %d", err, len(body), resp.ContentLength)
	}
	// The client resumes: not cut any more.
	resp, body, err = get(t, cdn, hdr{"Range": "bytes=1000-"})
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, data[1000:]) {
		t.Fatalf("resume: %v %d", err, resp.StatusCode)
	}
	if got := s.RangesAsked("model.safetensors"); len(got) != 2 || got[0] != "" || got[1] != "bytes=1000-" {
		t.Errorf("RangesAsked = %q", got)
	}
	if reqs := s.Requests(); reqs[0].Fault != "cut" || reqs[1].Fault != "" {
		t.Errorf("faults recorded: %+v", reqs)
	}

	// Regular files are cut on the Hub; AllFiles counts per file.
	s.Cut(AllFiles, 0, 1)
	for _, p := range []string{"config.json", "generation_config.json"} {
		_, body, err := get(t, s.URL()+"/org/model/resolve/main/"+p, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 0 {
			t.Errorf("%s first GET: %v, %d bytes", p, err, len(body))
		}
		if _, body, err := get(t, s.URL()+"/org/model/resolve/main/"+p, nil); err != nil || !bytes.Equal(body, files[p]) {
			t.Errorf("%s second GET: %v", p, err)
		}
	}
	// HEAD requests and redirects are never cut, nor counted.
	s.Cut(AllFiles, 0, 1)
	if resp, _ := do(t, "HEAD", s.URL()+"/org/model/resolve/main/README.md", nil); resp.StatusCode != 200 {
		t.Errorf("HEAD: %d", resp.StatusCode)
	}
	if _, _, err := get(t, s.URL()+"/org/model/resolve/main/README.md", nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("GET after HEAD not cut: %v", err)
	}
	s.Cut(AllFiles, 0, 0) // removed
	if _, _, err := get(t, s.URL()+"/org/model/resolve/main/tokenizer.json", nil); err != nil {
		t.Errorf("removed cut still cuts: %v", err)
	}
}

func TestCorruptAndIgnoreRange(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	data := files["original/x.bin"]
	cdn := s.CDNBlobURL(SHA256Hex(data))

	s.Corrupt("original/x.bin", 1)
	_, body, err := get(t, cdn, nil)
	if err != nil || len(body) != len(data) {
		t.Fatalf("corrupt: %v, %d bytes", err, len(body))
	}
	diff := 0
	for i := range body {
		if body[i] != data[i] {
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("corrupt changed %d bytes, want 1", diff)
	}
	if _, body, _ := get(t, cdn, nil); !bytes.Equal(body, data) {
		t.Error("second download still corrupt")
	}
	s.Corrupt(AllFiles, Always)
	for range 2 {
		if _, body, _ := get(t, s.URL()+"/org/model/resolve/main/config.json", nil); bytes.Equal(body, files["config.json"]) {
			t.Error("Always-corrupt file served intact")
		}
	}
	s.ResetFaults()

	s.IgnoreRange("original/x.bin", true)
	resp, body, err := get(t, cdn, hdr{"Range": "bytes=100-"})
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Range") != "" || !bytes.Equal(body, data) {
		t.Errorf("ignore-range: %v %d %q", err, resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	s.IgnoreRange("original/x.bin", false)
	if resp, _, _ := get(t, cdn, hdr{"Range": "bytes=100-"}); resp.StatusCode != 206 {
		t.Errorf("range after IgnoreRange(false): %d", resp.StatusCode)
	}
}

func TestFail(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	info := s.URL() + "/api/models/org/model"

	s.Fail(APIScope, 2, 429, http.Header{"Retry-After": {"1"}})
	for i := range 2 {
		resp, _ := do(t, "GET", info, nil)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("API request %d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
	if resp, _ := do(t, "GET", info, nil); resp.StatusCode != 200 {
		t.Errorf("third API request: %d", resp.StatusCode)
	}

	s.Fail("config.json", 1, 500, nil)
	if resp, _ := do(t, "GET", s.URL()+"/api/models/org/model/tree/main", nil); resp.StatusCode != 200 {
		t.Errorf("a file's failure hit the API: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "HEAD", s.URL()+"/org/model/resolve/main/README.md", nil); resp.StatusCode != 200 {
		t.Errorf("a file's failure hit another file: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "HEAD", s.URL()+"/org/model/resolve/main/config.json", nil); resp.StatusCode != 500 {
		t.Errorf("config.json: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "HEAD", s.URL()+"/org/model/resolve/main/config.json", nil); resp.StatusCode != 200 {
		t.Errorf("config.json again: %d", resp.StatusCode)
	}

	s.Fail(AllFiles, 1, 503, nil)
	if resp, _ := do(t, "GET", s.URL()+"/org/model/resolve/main/README.md", nil); resp.StatusCode != 503 {
		t.Errorf("AllFiles: %d", resp.StatusCode)
	}
	cdn := s.CDNBlobURL(SHA256Hex(files["model.safetensors"]))
	s.Fail(CDNScope+"model.safetensors", 1, 503, nil)
	if resp, _ := do(t, "GET", cdn, nil); resp.StatusCode != 503 {
		t.Errorf("CDN failure: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", cdn, nil); resp.StatusCode != 200 {
		t.Errorf("CDN after failure: %d", resp.StatusCode)
	}
}

func TestThrottle(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	s.SetThrottle(20_000)
	begin := time.Now()
	_, body, err := get(t, s.CDNBlobURL(SHA256Hex(files["original/x.bin"])), nil) // 5000 bytes
	if err != nil || len(body) != 5000 {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Errorf("5000 bytes at 20000 B/s took %v", d)
	}
	s.SetThrottle(0)
	begin = time.Now()
	get(t, s.CDNBlobURL(SHA256Hex(files["model.safetensors"])), nil)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("unthrottled download took %v", d)
	}
}

func TestDown(t *testing.T) {
	s := start(t, Options{})
	s.AddRepo("org/model", testFiles(t), RepoOptions{})
	info := s.URL() + "/api/models/org/model"
	do(t, "GET", info, nil) // leaves a keep-alive connection in the pool
	if err := s.SetDown(true); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{info, s.CDNURL() + "/repos/x"} {
		_, err := client.Get(u)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET %s while down: %v, want connection refused", u, err)
		}
	}
	if !s.Down() {
		t.Error("Down() false")
	}
	if err := s.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if resp, _ := do(t, "GET", info, nil); resp.StatusCode != 200 {
		t.Errorf("back up: %d", resp.StatusCode)
	}
}

func TestCountsAndControl(t *testing.T) {
	s := start(t, Options{Control: true})
	s.AddRepo("org/model", testFiles(t), RepoOptions{})
	do(t, "GET", s.URL()+"/api/models/org/model", auth())
	do(t, "GET", s.URL()+"/api/models/org/model", nil)
	do(t, "HEAD", s.URL()+"/org/model/resolve/main/config.json", nil)
	if n := s.Count(HostHub, "GET", "/api/models/org/model"); n != 2 {
		t.Errorf("count = %d", n)
	}
	if n := s.Counts()[RequestKey{HostHub, "HEAD", "/org/model/resolve/main/config.json"}]; n != 1 {
		t.Errorf("HEAD count = %d", n)
	}
	reqs := s.Requests()
	if len(reqs) != 3 || !reqs[0].Auth || reqs[1].Auth || reqs[2].File != "config.json" || reqs[2].Status != 200 {
		t.Errorf("requests %+v", reqs)
	}

	// The control endpoints, on the Hub and on the control listener.
	_, body := do(t, "GET", s.URL()+"/_fake/requests", nil)
	var got struct {
		Requests    []Request      `json:"requests"`
		Counts      map[string]int `json:"counts"`
		CDNAuthSeen bool           `json:"cdn_auth_seen"`
	}
	decode(t, body, &got)
	if len(got.Requests) != 3 || got.Counts["hub GET /api/models/org/model"] != 2 || got.CDNAuthSeen {
		t.Errorf("/_fake/requests: %s", body)
	}
	if resp, body := do(t, "POST", s.URL()+"/_fake/fault?kind=fail&scope=/api&status=503&times=1", nil); resp.StatusCode != 200 {
		t.Fatalf("fault: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", s.URL()+"/api/models/org/model", nil); resp.StatusCode != 503 {
		t.Errorf("fault via control: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "POST", s.URL()+"/_fake/fault?kind=nope", nil); resp.StatusCode != 400 {
		t.Errorf("bad fault kind: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "POST", s.URL()+"/_fake/down?on=1", nil); resp.StatusCode != 200 {
		t.Errorf("down: %d", resp.StatusCode)
	}
	if _, err := client.Get(s.URL() + "/api/models/org/model"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after /_fake/down?on=1: %v", err)
	}
	if resp, _ := do(t, "POST", s.ControlURL()+"/_fake/down?on=0", nil); resp.StatusCode != 200 {
		t.Errorf("up: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", s.URL()+"/api/models/org/model", nil); resp.StatusCode != 200 {
		t.Errorf("after /_fake/down?on=0: %d", resp.StatusCode)
	}
	do(t, "POST", s.ControlURL()+"/_fake/reset", nil)
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests after reset", n)
	}
}

func TestAddRepoDir(t *testing.T) {
	dir := t.TempDir()
	write := func(p, content string) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("config.json", "{}")
	write("original/model.safetensors", "weights")
	write("metal/deep/x.bin", "metal")
	write(".git/HEAD", "ref: refs/heads/main")
	if err := os.Symlink(filepath.Join(dir, "config.json"), filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{})
	commit, err := s.AddRepoDir("org/dir", dir, RepoOptions{Private: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"config.json", "original/model.safetensors", "metal/deep/x.bin", "link.json"} {
		if _, ok := s.FileInfo("org/dir", commit, p); !ok {
			t.Errorf("%s not in the repo", p)
		}
	}
	if _, ok := s.FileInfo("org/dir", "main", ".git/HEAD"); ok {
		t.Error(".git served")
	}
	if f, _ := s.FileInfo("org/dir", "main", "metal/deep/x.bin"); !f.LFS || f.ETag() != f.SHA256 {
		t.Errorf("metal/ not LFS: %+v", f)
	}
	if _, err := s.AddRepoDir("org/none", filepath.Join(dir, "missing"), RepoOptions{}); err == nil {
		t.Error("missing dir: no error")
	}
	if _, err := s.AddRepoDir("bad id", dir, RepoOptions{}); err == nil {
		t.Error("bad repo id: no error")
	}
}

// TestConcurrent downloads while faults change, for the race detector.
func TestConcurrent(t *testing.T) {
	s := start(t, Options{})
	files := testFiles(t)
	s.AddRepo("org/model", files, RepoOptions{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				resp, err := client.Get(s.URL() + "/org/model/resolve/main/model.safetensors")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if r, err := client.Get(resp.Header.Get("Location")); err == nil {
					_, _ = io.Copy(io.Discard, r.Body)
					r.Body.Close()
				}
				if i%2 == 0 {
					s.Corrupt(AllFiles, 1)
					s.Cut("model.safetensors", 10, 1)
				} else {
					s.ResetFaults()
					_ = s.Requests()
				}
			}
		}()
	}
	wg.Wait()
}
