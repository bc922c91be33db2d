package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// diskMargin is left free beyond the download's size: a full disk breaks
// more than the download.
const diskMargin = 1 << 30

// Download fetches files of the snapshot into the cache (nil: every
// missing one), Parallel at a time, and records refs/{revision}. Each file
// goes to blobs/{etag}.incomplete (resumed from its size with Range after
// a cut), is verified (size, and sha256 or git blob id), renamed to
// blobs/{etag} and linked from the snapshot folder. A file whose content
// is wrong is fetched again from the start, up to Attempts times, then
// fails with ErrChecksum. Free disk space is checked before anything
// starts.
func (c *Client) Download(ctx context.Context, s *Snapshot, files []File) error {
	missing := s.Missing()
	if files != nil {
		want := map[string]bool{}
		for _, f := range files {
			want[f.Path] = true
		}
		missing = slices.DeleteFunc(missing, func(f File) bool { return !want[f.Path] })
	}
	if len(missing) > 0 && !s.Remote {
		return fmt.Errorf("hub: %s@%s: %d file(s) missing from %s and the Hub was not asked (%s)", s.Repo, s.Revision, len(missing), s.Dir, s.CacheReason)
	}
	if err := c.checkSpace(s, missing); err != nil {
		return err
	}
	if s.Remote {
		if err := writeRef(c.env.Cache, s.Repo, s.Revision, s.Commit); err != nil {
			return fmt.Errorf("hub: recording refs/%s: %w", s.Revision, err)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, c.opts.Parallel)
	)
	for _, f := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if err := c.file(ctx, s, f); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("hub: %s@%s: %s: %w", s.Repo, s.Commit[:12], f.Path, err)
					cancel() // one failure ends the download
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// CheckSpace refuses a download of the snapshot's missing files that the
// cache's file system cannot hold (with ErrDiskFull).
func (c *Client) CheckSpace(s *Snapshot) error { return c.checkSpace(s, s.Missing()) }

func (c *Client) checkSpace(s *Snapshot, missing []File) error {
	repoDir := RepoDir(c.env.Cache, s.Repo)
	var need int64
	for _, f := range missing {
		if _, err := os.Stat(filepath.Join(repoDir, "blobs", f.Etag())); err == nil {
			continue // the blob is there (another revision): only a link is missing
		}
		have := int64(0)
		if fi, err := os.Stat(filepath.Join(repoDir, "blobs", f.Etag()+".incomplete")); err == nil {
			have = fi.Size()
		}
		need += max(f.Size-have, 0)
	}
	if need == 0 {
		return nil
	}
	free, err := freeBytes(repoDir)
	if err != nil {
		return fmt.Errorf("hub: checking free space in %s: %w", repoDir, err)
	}
	if need+diskMargin > free {
		return fmt.Errorf("hub: %w in %s: the download needs %s (plus %s to spare), %s is free; free some space or point HF_HUB_CACHE elsewhere",
			ErrDiskFull, repoDir, humanBytes(need), humanBytes(diskMargin), humanBytes(free))
	}
	return nil
}

// file brings one file into the snapshot.
func (c *Client) file(ctx context.Context, s *Snapshot, f File) error {
	repoDir := RepoDir(c.env.Cache, s.Repo)
	pointer := filepath.Join(s.Dir, filepath.FromSlash(f.Path))
	blob := filepath.Join(repoDir, "blobs", f.Etag())
	if f.Etag() == "" {
		return errors.New("the Hub's listing gives no blob id or sha256")
	}
	lock, err := lockFile(ctx, lockPath(c.env.Cache, s.Repo, f.Etag()))
	if err != nil {
		return err
	}
	defer lock.Close()
	if _, err := os.Stat(blob); err == nil {
		// Fetched by someone else meanwhile, or shared with another revision.
		c.progress(f.Path, f.Size, f.Size)
		return link(blob, pointer)
	}
	loc, err := c.locate(ctx, s, f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	part := blob + ".incomplete"
	for bad := 0; ; bad++ {
		err := c.transfer(ctx, loc, part, f)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrChecksum) || bad+1 >= c.opts.Attempts {
			if errors.Is(err, ErrChecksum) {
				err = fmt.Errorf("%w after %d attempts: the Hub or the network keeps delivering wrong bytes", err, bad+1)
			}
			return err
		}
		c.log.Warn("a downloaded file failed its checksum; fetching it again", zap.String("file", f.Path), zap.Error(err))
		if err := sleep(ctx, c.backoff(bad, "")); err != nil {
			return err
		}
	}
	if err := os.Chmod(part, 0o644); err != nil {
		return err
	}
	if err := os.Rename(part, blob); err != nil {
		return err
	}
	return link(blob, pointer)
}

// locate asks resolve/{commit}/{path} where the file's bytes are: the Hub
// itself for a regular file, a storage host for an LFS one. The etag and
// size it gives must agree with the listing.
func (c *Client) locate(ctx context.Context, s *Snapshot, f File) (string, error) {
	u := fmt.Sprintf("%s/%s/resolve/%s/%s", c.env.Endpoint, escapePath(s.Repo), s.Commit, escapePath(f.Path))
	for hops := 0; ; hops++ {
		resp, err := c.metadata(ctx, http.MethodHead, u)
		if err != nil {
			return "", c.classify(s.Repo, s.Commit, err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			next, err := resp.Request.URL.Parse(loc)
			if err != nil {
				return "", fmt.Errorf("resolve: bad Location %q: %w", loc, err)
			}
			// A relative redirect (a renamed repository) stays on the Hub:
			// follow it. An absolute one is the file's storage.
			if sameHost(next.String(), c.env.Endpoint) && !strings.Contains(loc, "://") && hops < 5 {
				u = next.String()
				continue
			}
			if err := checkMeta(resp, f); err != nil {
				return "", err
			}
			return next.String(), nil
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("resolve %s: unexpected %s", u, resp.Status)
		}
		if err := checkMeta(resp, f); err != nil {
			return "", err
		}
		return u, nil
	}
}

// checkMeta compares resolve's headers with the listing: a mismatch means
// the listing and the file are of different commits, or a Hub we do not
// understand.
func checkMeta(resp *http.Response, f File) error {
	etag := resp.Header.Get("X-Linked-Etag")
	if etag == "" {
		etag = resp.Header.Get("ETag")
	}
	etag = strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
	if etag != "" && !strings.EqualFold(etag, f.Etag()) {
		return fmt.Errorf("resolve: the Hub gives etag %s, its listing %s", etag, f.Etag())
	}
	size := resp.Header.Get("X-Linked-Size")
	if size == "" && (resp.StatusCode < 300 || resp.StatusCode >= 400) {
		size = resp.Header.Get("Content-Length")
	}
	if n, err := strconv.ParseInt(size, 10, 64); err == nil && f.Size >= 0 && n != f.Size {
		return fmt.Errorf("resolve: the Hub gives size %d, its listing %d", n, f.Size)
	}
	return nil
}

// transfer downloads loc into part, resuming from part's size, and
// verifies the whole. Cut connections and busy servers are retried
// (resuming) until a run of Attempts tries brings no new byte; a wrong
// size or hash removes part and returns ErrChecksum.
func (c *Client) transfer(ctx context.Context, loc, part string, f File) error {
	out, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	h := newHasher(f)
	// The bytes already there are hashed first: the hash covers the file.
	have, err := io.Copy(h, out)
	if err != nil {
		return fmt.Errorf("reading %s: %w", part, err)
	}
	if have > f.Size { // not ours to trust
		if have, h, err = 0, newHasher(f), out.Truncate(0); err != nil {
			return err
		}
	}
	c.progress(f.Path, have, f.Size)
	for fails := 0; have < f.Size; {
		n, _, err := c.get(ctx, loc, have, f, func(whole bool) (io.Writer, error) {
			if !whole {
				return io.MultiWriter(out, h), nil
			}
			// The server ignored the Range and sends the whole file:
			// start over with it.
			have, h = 0, newHasher(f)
			if _, err := out.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
			return io.MultiWriter(out, h), out.Truncate(0)
		})
		have += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var he *hubError
		if errors.As(err, &he) && !he.retryable() {
			return err
		}
		if n > 0 {
			fails = 0 // progress made: the budget starts over, as in huggingface_hub
		}
		fails++
		if fails >= c.opts.Attempts {
			return fmt.Errorf("giving up after %d tries without progress: %w", fails, err)
		}
		wait := c.backoff(fails-1, "")
		c.log.Warn("download interrupted; resuming", zap.String("file", f.Path), zap.Int64("at", have), zap.Duration("wait", wait), zap.Error(err))
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if have != f.Size || !strings.EqualFold(got, f.Etag()) {
		out.Close()
		_ = os.Remove(part)
		c.progress(f.Path, 0, f.Size)
		return fmt.Errorf("%w: got %d bytes hashing to %s, want %d bytes hashing to %s", ErrChecksum, have, got, f.Size, f.Etag())
	}
	return nil
}

// get asks for loc from byte at on and copies the answer into the writer
// sink gives: sink(true) when the server ignored the Range and sends the
// whole file (the caller starts over). It returns the bytes copied.
func (c *Client) get(ctx context.Context, loc string, at int64, f File, sink func(whole bool) (io.Writer, error)) (int64, bool, error) {
	req, err := c.request(ctx, http.MethodGet, loc)
	if err != nil {
		return 0, false, err
	}
	if at > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", at))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	whole := false
	switch {
	case at > 0 && resp.StatusCode == http.StatusPartialContent:
		if start := contentRangeStart(resp.Header.Get("Content-Range")); start != at {
			return 0, false, fmt.Errorf("asked for bytes from %d, got Content-Range %q", at, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		whole = at > 0
	default:
		return 0, false, readHubError(resp)
	}
	w, err := sink(whole)
	if err != nil {
		return 0, whole, err
	}
	if whole {
		at = 0
	}
	n, err := c.copyBody(ctx, resp, w, f, at)
	return n, whole, err
}

// copyBody streams a body into out and h, reporting progress, and ends a
// transfer that stalls for StallTimeout.
func (c *Client) copyBody(ctx context.Context, resp *http.Response, out io.Writer, f File, at int64) (int64, error) {
	stall := time.AfterFunc(c.opts.StallTimeout, func() { resp.Body.Close() })
	defer stall.Stop()
	buf := make([]byte, 1<<20)
	var n int64
	last := time.Now()
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			stall.Reset(c.opts.StallTimeout)
			if _, werr := out.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
			if time.Since(last) > 100*time.Millisecond {
				c.progress(f.Path, at+n, f.Size)
				last = time.Now()
			}
		}
		if errors.Is(err, io.EOF) {
			c.progress(f.Path, at+n, f.Size)
			if resp.ContentLength >= 0 && n < resp.ContentLength {
				return n, io.ErrUnexpectedEOF
			}
			return n, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			return n, err
		}
	}
}

// contentRangeStart is the first byte of "bytes START-END/TOTAL" (-1 if
// unreadable).
func contentRangeStart(v string) int64 {
	v = strings.TrimPrefix(v, "bytes ")
	s, _, ok := strings.Cut(v, "-")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// newHasher hashes a file as its etag was made: sha256 of the content for
// LFS files, the git blob id (sha1 of "blob SIZE\0" and the content) for
// the others.
func newHasher(f File) hash.Hash {
	if f.SHA256 != "" {
		return sha256.New()
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", max(f.Size, 0))
	return h
}

func (c *Client) progress(path string, done, total int64) {
	if c.opts.Progress != nil {
		c.opts.Progress(path, done, total)
	}
}

// humanBytes prints a size in GB or MB, as a progress bar does.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// HumanBytes prints a size for people: "13.76 GB", "512.0 MB".
func HumanBytes(n int64) string { return humanBytes(n) }
