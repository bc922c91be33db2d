package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// commitRE is a full commit hash: a revision that names one needs no
// lookup, online or not.
var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// RepoDir is the repository's folder in the cache: models--ORG--NAME.
func RepoDir(cache, repo string) string {
	return filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

// lockPath is the flock file of one blob, where huggingface_hub puts it.
func lockPath(cache, repo, etag string) string {
	return filepath.Join(cache, ".locks", "models--"+strings.ReplaceAll(repo, "/", "--"), etag+".lock")
}

// cachedCommit is the commit a revision names in the cache: the revision
// itself when it is a commit hash, else refs/{revision}.
func cachedCommit(cache, repo, revision string) (string, error) {
	if commitRE.MatchString(revision) {
		return revision, nil
	}
	b, err := os.ReadFile(filepath.Join(RepoDir(cache, repo), "refs", filepath.FromSlash(revision)))
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(string(b))
	if !commitRE.MatchString(c) {
		return "", fmt.Errorf("refs/%s holds %q, not a commit hash", revision, c)
	}
	return c, nil
}

// Cached finds a complete snapshot of repo at revision in the cache,
// without any network call: the commit from refs/{revision} (or the
// revision itself), and in snapshots/{commit} a config.json and the
// safetensors shards, every shard the index names present. Its Files
// carry the sizes on disk and no hashes.
func Cached(cache, repo, revision string) (*Snapshot, error) {
	commit, err := cachedCommit(cache, repo, revision)
	if err != nil {
		return nil, fmt.Errorf("%w: %s@%s is not in the cache %s", ErrNotCached, repo, revision, cache)
	}
	s := &Snapshot{Repo: repo, Revision: revision, Commit: commit, Dir: filepath.Join(RepoDir(cache, repo), "snapshots", commit)}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s@%s (commit %s) has no snapshot in %s", ErrNotCached, repo, revision, commit, cache)
	}
	for _, e := range entries {
		if !Wanted(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(s.Dir, e.Name())) // follows the symlink: a dangling one is missing
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		s.Files = append(s.Files, File{Path: e.Name(), Size: fi.Size()})
	}
	if err := s.complete(); err != nil {
		return nil, fmt.Errorf("%w: %s@%s in %s: %w", ErrNotCached, repo, revision, s.Dir, err)
	}
	return s, nil
}

// complete checks that the files serving needs are all there: a
// config.json, at least one shard, and every shard the index names.
func (s *Snapshot) complete() error {
	have := map[string]bool{}
	shards := 0
	for _, f := range s.Files {
		have[f.Path] = true
		if strings.HasSuffix(f.Path, ".safetensors") {
			shards++
		}
	}
	if !have["config.json"] {
		return errors.New("no config.json")
	}
	if shards == 0 {
		return errors.New("no safetensors weights")
	}
	for _, f := range s.Files {
		if !strings.HasSuffix(f.Path, ".safetensors.index.json") {
			continue
		}
		need, err := indexShards(filepath.Join(s.Dir, f.Path))
		if err != nil {
			return err
		}
		for _, n := range need {
			if !have[n] {
				return fmt.Errorf("%s names %s, which is missing", f.Path, n)
			}
		}
	}
	return nil
}

// indexShards lists the shard files a safetensors index's weight_map names.
func indexShards(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range idx.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}

// writeRef records that revision names commit (refs/{revision}), written
// whole or not at all. A commit hash needs no ref.
func writeRef(cache, repo, revision, commit string) error {
	if revision == commit {
		return nil
	}
	p := filepath.Join(RepoDir(cache, repo), "refs", filepath.FromSlash(revision))
	if b, err := os.ReadFile(p); err == nil && string(b) == commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// A temporary file of our own, renamed over the ref: readers see the
	// old commit or the new one, never a half-written file.
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(commit)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

// link points snapshots/{commit}/{path} at blobs/{etag} with a relative
// symlink, as huggingface_hub does (a cache moved as a whole stays valid).
func link(blob, pointer string) error {
	if err := os.MkdirAll(filepath.Dir(pointer), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(pointer), blob)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(pointer); err == nil && cur == rel {
		return nil
	}
	_ = os.Remove(pointer) // a dangling or foreign link
	if err := os.Symlink(rel, pointer); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// lockFile takes the exclusive flock of path, waiting (polling, so ctx can
// end the wait) while another process holds it. The lock goes with the
// returned file's Close.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freeBytes is the space available to us on the file system holding dir
// (or its nearest existing parent).
func freeBytes(dir string) (int64, error) {
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return int64(st.Bavail) * int64(st.Bsize), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir || !errors.Is(err, syscall.ENOENT) {
			return 0, err
		}
		dir = parent
	}
}
