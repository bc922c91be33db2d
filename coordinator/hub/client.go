package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Errors a caller tells apart. The first three mean the weights cannot be
// had now, but may later (the coordinator's --mock=auto falls back to the
// mock only on these); the others are mistakes to fix.
var (
	// ErrOffline: HF_HUB_OFFLINE forbids the network and the cache lacks
	// the snapshot.
	ErrOffline = errors.New("offline mode")
	// ErrUnreachable: the Hub could not be reached (connection refused,
	// DNS, timeouts, 5xx) and the cache lacks the snapshot.
	ErrUnreachable = errors.New("the Hub cannot be reached")
	// ErrNotCached: no complete snapshot in the cache.
	ErrNotCached = errors.New("not in the cache")

	// ErrRepoNotFound: the Hub says the repository does not exist (or is
	// private or gated and no valid token was sent: the Hub does not say
	// which).
	ErrRepoNotFound = errors.New("repository not found")
	// ErrRevisionNotFound: the repository has no such branch, tag or commit.
	ErrRevisionNotFound = errors.New("revision not found")
	// ErrAuth: the token was refused, or the repository is gated.
	ErrAuth = errors.New("not authorized")
	// ErrChecksum: a file kept arriving with the wrong content.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrDiskFull: the cache's file system lacks the space for the download.
	ErrDiskFull = errors.New("not enough disk space")
)

// Unavailable reports whether err means only that the weights cannot be
// had now (offline, unreachable, not cached), not that something is wrong.
func Unavailable(err error) bool {
	return errors.Is(err, ErrOffline) || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNotCached)
}

// File is one file of a snapshot.
type File struct {
	Path string
	Size int64
	// BlobID is the git blob id (sha1) of a regular file; SHA256 the
	// content hash of an LFS file. Either names the blob in the cache.
	BlobID, SHA256 string
}

// Etag is the file's name under blobs/: huggingface_hub's etag.
func (f File) Etag() string {
	if f.SHA256 != "" {
		return f.SHA256
	}
	return f.BlobID
}

// Snapshot is one commit of a repository as serving needs it.
type Snapshot struct {
	Repo, Revision, Commit string
	// Dir is the snapshot folder in the cache: the checkpoint directory
	// the workers load once every file is there.
	Dir string
	// Files are the files serving needs (Wanted), sorted by path.
	Files []File
	// Remote says the listing came from the Hub (so Download can fetch);
	// false when it came from the cache.
	Remote bool
	// CacheReason says why the cache was used instead of the Hub ("" when
	// the Hub answered).
	CacheReason string
}

// Bytes is the total size of the snapshot's files.
func (s *Snapshot) Bytes() int64 {
	var n int64
	for _, f := range s.Files {
		n += f.Size
	}
	return n
}

// Missing lists the files not yet in the snapshot folder.
func (s *Snapshot) Missing() []File {
	var out []File
	for _, f := range s.Files {
		if _, err := os.Stat(filepath.Join(s.Dir, filepath.FromSlash(f.Path))); err != nil {
			out = append(out, f)
		}
	}
	return out
}

// Client downloads from the Hub into the cache. The zero value is not
// usable: build one with New.
type Client struct {
	env  Env
	http *http.Client
	log  *zap.Logger
	opts Options
}

// Options tunes a Client; zero fields take the defaults.
type Options struct {
	// Parallel is how many files download at once (4).
	Parallel int
	// Attempts bounds the tries of one request or transfer without
	// progress, and of a file whose checksum fails (5).
	Attempts int
	// Backoff is the first wait between tries, doubled each time up to 30 s (1 s).
	Backoff time.Duration
	// MetadataTimeout bounds one API or HEAD request (10 s, as
	// huggingface_hub's HF_HUB_ETAG_TIMEOUT).
	MetadataTimeout time.Duration
	// StallTimeout ends a transfer that received nothing for this long (60 s).
	StallTimeout time.Duration
	// UserAgent names us to the Hub.
	UserAgent string
	Logger    *zap.Logger
	// Progress, when set, hears every file's bytes on disk as they grow
	// (done may go back to 0 when a file restarts).
	Progress func(path string, done, total int64)
}

// New returns a client for env.
func New(env Env, o Options) *Client {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MetadataTimeout <= 0 {
		o.MetadataTimeout = 10 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = time.Minute
	}
	if o.UserAgent == "" {
		o.UserAgent = "gptoss-server"
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   o.Parallel * 2,
		IdleConnTimeout:       90 * time.Second,
		// Sizes and hashes are of the stored bytes: never let a proxy or
		// the transport decompress.
		DisableCompression: true,
	}
	return &Client{env: env, log: o.Logger, opts: o, http: &http.Client{
		Transport: tr,
		// Redirects are followed by hand: a relative one stays on the Hub
		// (with the token), an absolute one to another host is LFS storage
		// (without it).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Env is the client's environment.
func (c *Client) Env() Env { return c.env }

// hubError is a non-2xx answer of the Hub, with its X-Error-Code.
type hubError struct {
	status  int
	code    string // X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo
	message string // X-Error-Message, else the body's "error"
	url     string
}

func (e *hubError) Error() string {
	msg := e.message
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	if e.code != "" {
		return fmt.Sprintf("%s: %d %s (%s)", e.url, e.status, e.code, msg)
	}
	return fmt.Sprintf("%s: %d %s", e.url, e.status, msg)
}

// retryable: the Hub is down or busy, not saying no.
func (e *hubError) retryable() bool {
	return e.status == 408 || e.status == 429 || e.status >= 500
}

func readHubError(resp *http.Response) *hubError {
	e := &hubError{status: resp.StatusCode, code: resp.Header.Get("X-Error-Code"), message: resp.Header.Get("X-Error-Message"),
		url: resp.Request.URL.Redacted()}
	if e.message == "" {
		var body struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(b, &body) == nil {
			e.message = body.Error
		}
	}
	return e
}

// classify turns a failed Hub request into one of the package's errors.
func (c *Client) classify(repo, revision string, err error) error {
	var he *hubError
	if !errors.As(err, &he) {
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, c.env.Endpoint, err)
	}
	switch {
	case he.code == "RevisionNotFound":
		return fmt.Errorf("%w: %s has no revision %q (%w)", ErrRevisionNotFound, repo, revision, err)
	case he.code == "GatedRepo":
		return fmt.Errorf("%w: %s is gated: accept its terms on the Hub and set HF_TOKEN to a token of that account (%w)", ErrAuth, repo, err)
	case he.status == 401 && he.message == "Invalid credentials in Authorization header":
		return fmt.Errorf("%w: the Hub refused the token (HF_TOKEN or the stored token file) (%w)", ErrAuth, err)
	case he.code == "RepoNotFound" || he.status == 401 || he.status == 404:
		hint := "check the name"
		if c.env.Token == "" {
			hint = "check the name; if it is private or gated, set HF_TOKEN"
		}
		return fmt.Errorf("%w: %s does not exist on %s, or needs a token (%s) (%w)", ErrRepoNotFound, repo, c.env.Endpoint, hint, err)
	case he.status == 403:
		return fmt.Errorf("%w: %s (%w)", ErrAuth, repo, err)
	case he.retryable():
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// request builds a request to the Hub (with the token) or to another host
// (without it).
func (c *Client) request(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	req.Header.Set("Accept-Encoding", "identity")
	if c.env.Token != "" && sameHost(u, c.env.Endpoint) {
		req.Header.Set("Authorization", "Bearer "+c.env.Token)
	}
	return req, nil
}

// sameHost reports whether two URLs name the same scheme, host and port.
func sameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && ua.Host == ub.Host
}

// backoff is the wait before try n (0-based): Backoff doubled, capped,
// or the server's Retry-After.
func (c *Client) backoff(n int, retryAfter string) time.Duration {
	if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, time.Minute)
	}
	return min(c.opts.Backoff<<n, 30*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// metadata does one small request to the Hub (the revision API, a HEAD),
// retrying 408, 429 and 5xx answers with backoff; a connection failure is
// returned at once (huggingface_hub too falls back to the cache at once).
// The caller closes the body of a 2xx or 3xx answer.
func (c *Client) metadata(ctx context.Context, method, u string) (*http.Response, error) {
	for n := 0; ; n++ {
		rctx, cancel := context.WithTimeout(ctx, c.opts.MetadataTimeout)
		req, err := c.request(rctx, method, u)
		if err != nil {
			cancel()
			return nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if resp.StatusCode < 400 {
			// The body is small; cancel once it is read.
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		he := readHubError(resp)
		resp.Body.Close()
		cancel()
		if !he.retryable() || n+1 >= c.opts.Attempts {
			return nil, he
		}
		wait := c.backoff(n, resp.Header.Get("Retry-After"))
		c.log.Warn("the Hub is busy; retrying", zap.String("url", he.url), zap.Int("status", he.status), zap.Duration("wait", wait))
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// revisionInfo is the part of the revision API's answer we use.
type revisionInfo struct {
	SHA      string `json:"sha"`
	Siblings []struct {
		RFilename string `json:"rfilename"`
		Size      *int64 `json:"size"`
		BlobID    string `json:"blobId"`
		LFS       *struct {
			SHA256 string `json:"sha256"`
			Size   int64  `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// Resolve finds the commit of repo at revision and the files serving
// needs. It asks the Hub; offline, or when the Hub cannot be reached, it
// uses a complete snapshot in the cache (CacheReason says why), as
// huggingface_hub does. A repository or revision the Hub says does not
// exist is an error even when the cache has it (it was deleted or renamed).
func (c *Client) Resolve(ctx context.Context, repo, revision string) (*Snapshot, error) {
	if !IsRepoID(repo) {
		return nil, fmt.Errorf("hub: %q is not a repository id (org/name)", repo)
	}
	if revision == "" {
		revision = "main"
	}
	if c.env.Offline {
		s, err := Cached(c.env.Cache, repo, revision)
		if err != nil {
			return nil, fmt.Errorf("hub: %w (HF_HUB_OFFLINE is set): %w", ErrOffline, err)
		}
		s.CacheReason = "HF_HUB_OFFLINE is set"
		return s, nil
	}
	s, err := c.remote(ctx, repo, revision)
	if err == nil {
		return s, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	err = c.classify(repo, revision, err)
	if errors.Is(err, ErrRepoNotFound) || errors.Is(err, ErrRevisionNotFound) {
		// huggingface_hub serves a cached private repo when the Hub says
		// 401; a 404 is final. Only the 401 without a token falls back.
		var he *hubError
		if !(errors.As(err, &he) && he.status == 401 && c.env.Token == "") {
			return nil, fmt.Errorf("hub: %w", err)
		}
	}
	cached, cerr := Cached(c.env.Cache, repo, revision)
	if cerr != nil {
		// The cache's miss is told, not wrapped: the Hub's answer is the
		// cause a caller acts on.
		return nil, fmt.Errorf("hub: %w (nothing usable in the cache: %s)", err, cerr.Error())
	}
	cached.CacheReason = err.Error()
	c.log.Warn("using the cached snapshot: the Hub did not answer", zap.String("repo", repo), zap.String("commit", cached.Commit), zap.Error(err))
	return cached, nil
}

// remote asks the revision API for the commit and the files.
func (c *Client) remote(ctx context.Context, repo, revision string) (*Snapshot, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s?blobs=true", c.env.Endpoint, escapePath(repo), url.PathEscape(revision))
	resp, err := c.metadata(ctx, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info revisionInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
		return nil, fmt.Errorf("%s: decoding the revision info: %w", u, err)
	}
	if !commitRE.MatchString(info.SHA) {
		return nil, fmt.Errorf("%s: the answer has no commit hash (is HF_ENDPOINT a Hub?)", u)
	}
	s := &Snapshot{Repo: repo, Revision: revision, Commit: info.SHA, Remote: true,
		Dir: filepath.Join(RepoDir(c.env.Cache, repo), "snapshots", info.SHA)}
	for _, sib := range info.Siblings {
		if !Wanted(sib.RFilename) {
			continue
		}
		f := File{Path: sib.RFilename, BlobID: sib.BlobID, Size: -1}
		if sib.Size != nil {
			f.Size = *sib.Size
		}
		if sib.LFS != nil {
			f.SHA256, f.Size = strings.ToLower(sib.LFS.SHA256), sib.LFS.Size
		}
		if f.Size < 0 {
			return nil, fmt.Errorf("%s: the listing gives no size for %s", u, f.Path)
		}
		s.Files = append(s.Files, f)
	}
	sort.Slice(s.Files, func(i, j int) bool { return s.Files[i].Path < s.Files[j].Path })
	if err := s.listed(); err != nil {
		return nil, fmt.Errorf("hub: %s@%s is not a servable checkpoint: %w", repo, revision, err)
	}
	return s, nil
}

// listed checks a listing from the Hub the way complete checks a folder,
// without the index (not downloaded yet).
func (s *Snapshot) listed() error {
	have, shards := false, 0
	for _, f := range s.Files {
		have = have || f.Path == "config.json"
		if strings.HasSuffix(f.Path, ".safetensors") {
			shards++
		}
	}
	if !have {
		return errors.New("no config.json")
	}
	if shards == 0 {
		return errors.New("no safetensors weights at the top level")
	}
	return nil
}
