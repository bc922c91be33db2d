package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// RepoOptions are the per-repository settings of AddRepo and AddRepoDir.
type RepoOptions struct {
	// Private repositories answer only requests that carry a valid token;
	// without one they answer exactly as a repository that does not exist
	// (401 RepoNotFound), as the real Hub does so as not to leak names.
	Private bool
	// Refs are more ref names (tags, other branches, "refs/pr/1") that point
	// at the same commit as "main". A different content on another ref is
	// AddRevision's job.
	Refs []string
}

// FileInfo is what the Hub publishes about one file of one commit: what a
// client should end up with, for tests to compare against.
type FileInfo struct {
	Path string
	// Size is the size of the content (not of the LFS pointer).
	Size int64
	// BlobID is the git object id the tree lists: the git blob sha1 of the
	// content for a regular file, of the LFS pointer text for an LFS file.
	BlobID string
	// LFS tells whether the file is stored with Git LFS, that is served from
	// the CDN host behind a redirect.
	LFS bool
	// SHA256 is the hex sha256 of the content (the LFS oid; set for every
	// file, so tests can check a download either way).
	SHA256 string
	// PointerSize is the length of the LFS pointer text (LFS files only).
	PointerSize int
}

// ETag is the entity tag a client keys its cache on: the sha256 for an LFS
// file (X-Linked-Etag), the git blob sha1 for a regular one (ETag). It is
// also the blob's file name in a huggingface_hub cache.
func (f FileInfo) ETag() string {
	if f.LFS {
		return f.SHA256
	}
	return f.BlobID
}

// file is one file of a snapshot, with the content it serves.
type file struct {
	FileInfo
	data []byte
}

// snapshot is the content of one commit.
type snapshot struct {
	commit string
	files  map[string]*file
	paths  []string          // sorted file paths
	dirs   map[string]string // directory path ("" is the root) → git tree id
}

// repo is one model repository: refs pointing at commits.
type repo struct {
	id      string
	private bool
	refs    map[string]string // ref name → commit
	commits map[string]*snapshot
}

// lookup resolves a revision, as the Hub does: a ref name or a full commit
// id of this repository.
func (r *repo) lookup(rev string) (*snapshot, bool) {
	if c, ok := r.refs[rev]; ok {
		return r.commits[c], true
	}
	for _, prefix := range []string{"refs/heads/", "refs/tags/"} {
		if name, ok := strings.CutPrefix(rev, prefix); ok {
			if c, ok := r.refs[name]; ok {
				return r.commits[c], true
			}
		}
	}
	if s, ok := r.commits[rev]; ok {
		return s, true
	}
	return nil, false
}

// lfsPointerPrefix starts every Git LFS pointer file.
const lfsPointerPrefix = "version https://git-lfs.github.com/spec/v1\n"

// LFSPointer returns the text of the Git LFS pointer file of a content with
// this sha256 and size: what git itself stores for an LFS file, and so what
// the tree's oid and the resolve ETag of an LFS file are computed from.
func LFSPointer(sha256Hex string, size int64) string {
	return lfsPointerPrefix + "oid sha256:" + sha256Hex + "\nsize " + strconv.FormatInt(size, 10) + "\n"
}

// GitBlobSHA1 returns the git object id of a blob with this content:
// sha1("blob <len>\x00" + content), the id `git hash-object` prints.
func GitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256Hex returns the hex sha256 of data (an LFS oid).
func SHA256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// isLFS tells whether the Hub would store this file with LFS: weights by
// extension, everything under original/ and metal/ (gpt-oss keeps its
// checkpoints there), and anything big. The real rule is the repository's
// .gitattributes; this one matches what gpt-oss repositories hold.
func (s *Server) isLFS(p string, size int64) bool {
	switch {
	case strings.HasSuffix(p, ".safetensors"), strings.HasSuffix(p, ".bin"):
		return true
	case strings.HasPrefix(p, "original/"), strings.HasPrefix(p, "metal/"):
		return true
	}
	return size > s.opts.LFSThreshold
}

var repoIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// checkRepoID accepts "org/name" ids only: the tests' client builds URLs
// from them, and a malformed one is a bug in the test.
func checkRepoID(id string) error {
	if !repoIDRe.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("hubtest: repo id %q is not org/name", id)
	}
	return nil
}

// checkRef rejects ref names the URL scheme could not carry.
func checkRef(ref string) error {
	if ref == "" || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.Contains(ref, "//") {
		return fmt.Errorf("hubtest: invalid ref name %q", ref)
	}
	return nil
}

// checkPath accepts clean relative slash paths, as a git tree holds.
func checkPath(p string) error {
	if p == "" || p != path.Clean(p) || strings.HasPrefix(p, "/") || p == "." ||
		strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("hubtest: invalid file path %q in repo", p)
	}
	return nil
}

// newSnapshot hashes the files and derives the trees and the commit id.
func (s *Server) newSnapshot(repoID string, files map[string][]byte) (*snapshot, error) {
	snap := &snapshot{files: make(map[string]*file, len(files))}
	for p, data := range files {
		if err := checkPath(p); err != nil {
			return nil, err
		}
		f := &file{data: data, FileInfo: FileInfo{Path: p, Size: int64(len(data)), SHA256: SHA256Hex(data)}}
		if s.isLFS(p, f.Size) {
			ptr := LFSPointer(f.SHA256, f.Size)
			f.LFS = true
			f.PointerSize = len(ptr)
			f.BlobID = GitBlobSHA1([]byte(ptr))
		} else {
			f.BlobID = GitBlobSHA1(data)
		}
		snap.files[p] = f
		snap.paths = append(snap.paths, p)
	}
	sort.Strings(snap.paths)
	// A file may not also be a directory ("a" and "a/b").
	for _, p := range snap.paths {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, clash := snap.files[d]; clash {
				return nil, fmt.Errorf("hubtest: %q is both a file and a directory", d)
			}
		}
	}
	root := snap.buildTrees()
	snap.commit = commitID(root, repoID)
	return snap, nil
}

// buildTrees computes the git tree id of every directory, so that the tree
// API lists the same oids git would (clients may key on them).
func (snap *snapshot) buildTrees() string {
	children := map[string]map[string]bool{"": {}} // dir → child names (dirs end in "/")
	add := func(dir, name string) {
		if children[dir] == nil {
			children[dir] = map[string]bool{}
		}
		children[dir][name] = true
	}
	for _, p := range snap.paths {
		dir, name := parent(p)
		add(dir, name)
		for dir != "" {
			d, n := parent(dir)
			add(d, n+"/")
			dir = d
		}
	}
	snap.dirs = map[string]string{}
	var tree func(dir string) string
	tree = func(dir string) string {
		names := make([]string, 0, len(children[dir]))
		for n := range children[dir] {
			names = append(names, n)
		}
		// git orders tree entries by name, a directory's name taken with a
		// trailing slash: exactly the byte order of the names as kept here.
		sort.Strings(names)
		var body []byte
		for _, n := range names {
			var mode, id string
			if strings.HasSuffix(n, "/") {
				n = strings.TrimSuffix(n, "/")
				mode, id = "40000", tree(join(dir, n))
			} else {
				mode, id = "100644", snap.files[join(dir, n)].BlobID
			}
			raw, _ := hex.DecodeString(id)
			body = append(body, mode+" "+n+"\x00"...)
			body = append(body, raw...)
		}
		h := sha1.New()
		fmt.Fprintf(h, "tree %d\x00", len(body))
		h.Write(body)
		id := hex.EncodeToString(h.Sum(nil))
		snap.dirs[dir] = id
		return id
	}
	return tree("")
}

// commitID is the id of a git commit object of this tree with a fixed
// author and date, so equal content gives an equal commit across runs; the
// repository id in the message keeps two repositories' commits apart.
func commitID(tree, repoID string) string {
	const who = "hubtest <hubtest@example.invalid> 1754352000 +0000"
	body := "tree " + tree + "\nauthor " + who + "\ncommitter " + who + "\n\n" + repoID + "\n"
	h := sha1.New()
	fmt.Fprintf(h, "commit %d\x00", len(body))
	h.Write([]byte(body))
	return hex.EncodeToString(h.Sum(nil))
}

func parent(p string) (dir, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// AddRepo creates (or replaces) a model repository whose "main" branch, and
// opts.Refs, point at a commit holding these files (paths with "/", at any
// depth), and returns that commit id. The files are not copied: do not
// change them afterwards. An invalid repo id, path or ref is a bug in the
// test and panics; AddRepoDir returns errors instead.
func (s *Server) AddRepo(repoID string, files map[string][]byte, opts RepoOptions) string {
	commit, err := s.addRepo(repoID, files, opts)
	if err != nil {
		panic(err)
	}
	return commit
}

func (s *Server) addRepo(repoID string, files map[string][]byte, opts RepoOptions) (string, error) {
	if err := checkRepoID(repoID); err != nil {
		return "", err
	}
	for _, ref := range opts.Refs {
		if err := checkRef(ref); err != nil {
			return "", err
		}
	}
	snap, err := s.newSnapshot(repoID, files)
	if err != nil {
		return "", fmt.Errorf("repo %s: %w", repoID, err)
	}
	r := &repo{id: repoID, private: opts.Private, refs: map[string]string{"main": snap.commit},
		commits: map[string]*snapshot{snap.commit: snap}}
	for _, ref := range opts.Refs {
		r.refs[ref] = snap.commit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[repoID] = r
	s.indexBlobs(snap)
	return snap.commit, nil
}

// indexBlobs makes the snapshot's LFS contents downloadable from the CDN.
// Called with s.mu held.
func (s *Server) indexBlobs(snap *snapshot) {
	for _, p := range snap.paths {
		f := snap.files[p]
		b := s.blobs[f.SHA256]
		if b == nil {
			b = &blob{data: f.data, paths: map[string]bool{}}
			s.blobs[f.SHA256] = b
		}
		b.paths[p] = true
	}
}

// AddRevision adds a commit with these files to an existing repository and
// points ref at it (a new branch or tag, or a moved "main": what a push
// does), returning the commit id.
func (s *Server) AddRevision(repoID, ref string, files map[string][]byte) (string, error) {
	if err := checkRef(ref); err != nil {
		return "", err
	}
	snap, err := s.newSnapshot(repoID, files)
	if err != nil {
		return "", fmt.Errorf("repo %s: %w", repoID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return "", fmt.Errorf("hubtest: add revision %s: no repo %s", ref, repoID)
	}
	if _, ok := r.commits[snap.commit]; !ok {
		r.commits[snap.commit] = snap
	}
	r.refs[ref] = snap.commit
	s.indexBlobs(snap)
	return snap.commit, nil
}

// SetRef points a ref of a repository at one of its existing commits (an
// empty commit deletes the ref).
func (s *Server) SetRef(repoID, ref, commit string) error {
	if err := checkRef(ref); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return fmt.Errorf("hubtest: set ref %s: no repo %s", ref, repoID)
	}
	if commit == "" {
		delete(r.refs, ref)
		return nil
	}
	if _, ok := r.commits[commit]; !ok {
		return fmt.Errorf("hubtest: set ref %s of %s: no commit %s", ref, repoID, commit)
	}
	r.refs[ref] = commit
	return nil
}

// SetPrivate changes whether a repository needs a token.
func (s *Server) SetPrivate(repoID string, private bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return fmt.Errorf("hubtest: set private: no repo %s", repoID)
	}
	r.private = private
	return nil
}

// maxDirDepth bounds AddRepoDir's walk, which follows symbolic links (a
// huggingface_hub snapshot is all links into blobs/), against link loops.
const maxDirDepth = 32

// AddRepoDir is AddRepo with the files of a directory, read recursively
// (symbolic links followed, .git directories skipped); paths in the repo
// are the paths relative to dir with "/" separators.
func (s *Server) AddRepoDir(repoID, dir string, opts RepoOptions) (string, error) {
	files := map[string][]byte{}
	if err := readTree(dir, "", files, 0); err != nil {
		return "", fmt.Errorf("hubtest: read repo %s from %s: %w", repoID, dir, err)
	}
	if len(files) == 0 {
		return "", fmt.Errorf("hubtest: repo %s: no files under %s", repoID, dir)
	}
	return s.addRepo(repoID, files, opts)
}

func readTree(dir, rel string, files map[string][]byte, depth int) error {
	if depth > maxDirDepth {
		return fmt.Errorf("%s: directories nested too deep (a symbolic link loop?)", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		full := filepath.Join(dir, e.Name())
		st, err := os.Stat(full) // follows links
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // dangling link
			}
			return err
		}
		p := join(rel, e.Name())
		switch {
		case st.IsDir():
			if e.Name() == ".git" {
				continue
			}
			if err := readTree(full, p, files, depth+1); err != nil {
				return err
			}
		case st.Mode().IsRegular():
			data, err := os.ReadFile(full)
			if err != nil {
				return err
			}
			files[p] = data
		}
	}
	return nil
}

// FileInfo returns what the Hub publishes about a file of a repository at
// a revision (a ref or a commit id).
func (s *Server) FileInfo(repoID, rev, p string) (FileInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return FileInfo{}, false
	}
	snap, ok := r.lookup(rev)
	if !ok {
		return FileInfo{}, false
	}
	f, ok := snap.files[p]
	if !ok {
		return FileInfo{}, false
	}
	return f.FileInfo, true
}

// Commit returns the commit a ref (or commit id) of a repository names.
func (s *Server) Commit(repoID, rev string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return "", false
	}
	snap, ok := r.lookup(rev)
	if !ok {
		return "", false
	}
	return snap.commit, true
}
