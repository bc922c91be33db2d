package hubtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Error messages and codes as the Hub sends them; huggingface_hub's
// hf_raise_for_status classifies errors by these (utils/_http.py).
const (
	msgRepoNotFound  = "Repository not found"
	msgNoAuth        = "Invalid username or password."
	msgBadToken      = "Invalid credentials in Authorization header"
	msgEntryNotFound = "Entry not found"
)

// hubRoute is a parsed Hub URL.
type hubRoute struct {
	kind   string   // routeInfo, routeTree, routeResolve, "" for an unknown page
	repoID string   // org/name
	rest   []string // decoded segments after "revision", "tree" or "resolve"
}

const (
	routeInfo    = "info"
	routeTree    = "tree"
	routeResolve = "resolve"
)

// parseHubPath routes on the escaped path, segment by segment, so that an
// encoded slash in a revision (refs%2Fpr%2F1) or a tree path stays inside
// its segment.
func parseHubPath(escaped string) (hubRoute, error) {
	raw := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	if len(raw) > 1 && raw[len(raw)-1] == "" {
		raw = raw[:len(raw)-1] // trailing slash
	}
	segs := make([]string, len(raw))
	for i, r := range raw {
		s, err := url.PathUnescape(r)
		if err != nil {
			return hubRoute{}, fmt.Errorf("bad path segment %q: %w", r, err)
		}
		segs[i] = s
	}
	if len(segs) >= 4 && segs[0] == "api" && segs[1] == "models" {
		rt := hubRoute{repoID: segs[2] + "/" + segs[3]}
		switch {
		case len(segs) == 4:
			rt.kind = routeInfo
		case len(segs) > 5 && segs[4] == "revision":
			rt.kind, rt.rest = routeInfo, segs[5:]
		case len(segs) > 5 && segs[4] == "tree":
			rt.kind, rt.rest = routeTree, segs[5:]
		}
		return rt, nil
	}
	if len(segs) >= 5 && segs[0] != "api" && segs[2] == "resolve" {
		return hubRoute{kind: routeResolve, repoID: segs[0] + "/" + segs[1], rest: segs[3:]}, nil
	}
	return hubRoute{}, nil
}

// split separates the revision from the in-repo path: a revision may hold
// slashes, sent encoded or not, so the shortest prefix that names a
// revision wins. Without a match the first segment is the revision (for
// the RevisionNotFound message). Called with s.mu held.
func (r *repo) split(rest []string, needPath bool) (rev, p string, snap *snapshot) {
	last := len(rest)
	if needPath {
		last--
	}
	for k := 1; k <= last; k++ {
		rev = strings.Join(rest[:k], "/")
		if snap, ok := r.lookup(rev); ok {
			return rev, strings.Join(rest[k:], "/"), snap
		}
	}
	if len(rest) == 0 {
		return "", "", nil
	}
	return rest[0], strings.Join(rest[1:], "/"), nil
}

type authState int

const (
	authNone authState = iota
	authValid
	authInvalid
)

// checkAuth reads "Authorization: Bearer <token>" (the scheme is
// case-insensitive, as huggingface_hub and curl users vary).
func (s *Server) checkAuth(r *http.Request) authState {
	h := r.Header.Get("Authorization")
	if h == "" {
		return authNone
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return authInvalid
	}
	if s.opts.Token == "" || tok == s.opts.Token {
		return authValid
	}
	return authInvalid
}

// writeError answers an error as the Hub does: X-Error-Code (when the
// error has one), X-Error-Message and a JSON {"error": ...} body.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	h := w.Header()
	if code != "" {
		h.Set("X-Error-Code", code)
	}
	h.Set("X-Error-Message", msg)
	writeJSON(w, r, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// writeFail answers an injected failure.
func writeFail(w *recWriter, r *http.Request, f *failRule) {
	w.note(func(rec *Request) { rec.Fault = "fail" })
	for k, vs := range f.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	writeError(w, r, f.status, "", failText(f.status))
}

// serveHub is the Hub listener's handler.
func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	if s.opts.Control && strings.HasPrefix(r.URL.Path, "/_fake/") {
		s.serveControl(w, r)
		return
	}
	rw, done := s.begin(HostHub, w, r)
	defer done()
	s.hubRequest(rw, r)
}

func (s *Server) hubRequest(w *recWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	rt, err := parseHubPath(r.URL.EscapedPath())
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "", err.Error())
		return
	}

	// Everything the answer depends on is read under the lock; snapshots
	// are immutable, so they are served after it is released.
	s.mu.Lock()
	rp := s.repos[rt.repoID]
	var rev, p string
	var snap *snapshot
	if rp != nil {
		switch rt.kind {
		case routeInfo:
			rev = "main"
			if len(rt.rest) > 0 {
				rev = strings.Join(rt.rest, "/")
			}
			snap, _ = rp.lookup(rev)
		case routeTree:
			rev, p, snap = rp.split(rt.rest, false)
		case routeResolve:
			rev, p, snap = rp.split(rt.rest, true)
		}
	} else if rt.kind == routeResolve {
		p = strings.Join(rt.rest[1:], "/")
	}
	var paths []string
	if rt.kind == routeResolve {
		paths = []string{p}
	}
	fail, failed := s.takeFail(failScopes(HostHub, strings.HasPrefix(r.URL.Path, "/api/"), paths))
	private := rp != nil && rp.private
	s.mu.Unlock()
	if rt.kind == routeResolve {
		w.note(func(rec *Request) { rec.File = p })
	}

	if failed {
		writeFail(w, r, fail)
		return
	}
	if rt.kind == "" {
		writeError(w, r, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
		return
	}
	auth := s.checkAuth(r)
	switch {
	case auth == authInvalid:
		// The Hub rejects a bad token before looking at the repository.
		writeError(w, r, http.StatusUnauthorized, "", msgBadToken)
		return
	case rp == nil || private && auth != authValid:
		// Without a valid token the Hub does not tell a private repository
		// from a missing one: 401 for both, 404 once authenticated.
		if auth == authValid {
			writeError(w, r, http.StatusNotFound, "RepoNotFound", msgRepoNotFound)
		} else {
			writeError(w, r, http.StatusUnauthorized, "RepoNotFound", msgNoAuth)
		}
		return
	case snap == nil:
		writeError(w, r, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	switch rt.kind {
	case routeInfo:
		s.writeInfo(w, r, rt.repoID, private, snap)
	case routeTree:
		s.writeTree(w, r, snap, p)
	case routeResolve:
		s.writeResolve(w, r, snap, p)
	}
}

type siblingLFS struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type sibling struct {
	RFilename string      `json:"rfilename"`
	Size      *int64      `json:"size,omitempty"`
	BlobID    string      `json:"blobId,omitempty"`
	LFS       *siblingLFS `json:"lfs,omitempty"`
}

// hubTime is a fixed date in the Hub's format ('%Y-%m-%dT%H:%M:%S.%fZ').
const hubTime = "2025-08-05T00:00:00.000Z"

// writeInfo answers GET /api/models/{repo}[/revision/{rev}]: the commit
// and the file list, with sizes and blob ids when blobs=true (what
// huggingface_hub's model_info(files_metadata=True) asks).
func (s *Server) writeInfo(w *recWriter, r *http.Request, repoID string, private bool, snap *snapshot) {
	blobs, _ := strconv.ParseBool(r.URL.Query().Get("blobs"))
	siblings := make([]sibling, 0, len(snap.paths))
	for _, p := range snap.paths {
		sb := sibling{RFilename: p}
		if blobs {
			f := snap.files[p]
			size := f.Size
			sb.Size, sb.BlobID = &size, f.BlobID
			if f.LFS {
				sb.LFS = &siblingLFS{SHA256: f.SHA256, Size: f.Size, PointerSize: f.PointerSize}
			}
		}
		siblings = append(siblings, sb)
	}
	org, _, _ := strings.Cut(repoID, "/")
	writeJSON(w, r, http.StatusOK, map[string]any{
		"_id":          SHA256Hex([]byte(repoID))[:24],
		"id":           repoID,
		"modelId":      repoID,
		"author":       org,
		"sha":          snap.commit,
		"lastModified": hubTime,
		"createdAt":    hubTime,
		"private":      private,
		"disabled":     false,
		"gated":        false,
		"downloads":    0,
		"likes":        0,
		"tags":         []string{},
		"siblings":     siblings,
	})
}

type treeLFS struct {
	OID         string `json:"oid"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type treeEntry struct {
	Type string   `json:"type"`
	OID  string   `json:"oid"`
	Size int64    `json:"size"`
	Path string   `json:"path"`
	LFS  *treeLFS `json:"lfs,omitempty"`
}

// list returns the tree entries under dir ("" for the root): its direct
// children, or with recursive everything below it, sorted by path.
func (snap *snapshot) list(dir string, recursive bool) []treeEntry {
	under := func(p string) bool {
		if dir != "" && !strings.HasPrefix(p, dir+"/") {
			return false
		}
		return recursive || parentDir(p) == dir
	}
	var out []treeEntry
	for d, id := range snap.dirs {
		if d != "" && under(d) {
			out = append(out, treeEntry{Type: "directory", OID: id, Path: d})
		}
	}
	for _, p := range snap.paths {
		if under(p) {
			f := snap.files[p]
			e := treeEntry{Type: "file", OID: f.BlobID, Size: f.Size, Path: p}
			if f.LFS {
				e.LFS = &treeLFS{OID: f.SHA256, Size: f.Size, PointerSize: f.PointerSize}
			}
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func parentDir(p string) string {
	d, _ := parent(p)
	return d
}

// treeCursor is the opaque pagination cursor: the offset of the page.
type treeCursor struct {
	Offset int `json:"offset"`
}

// writeTree answers GET /api/models/{repo}/tree/{rev}[/{path}]. Pages hold
// Options.TreePageSize entries; a next page is announced, as on the Hub
// (and GitHub), by `Link: <absolute url with cursor>; rel="next"`.
func (s *Server) writeTree(w *recWriter, r *http.Request, snap *snapshot, dir string) {
	dir = strings.Trim(dir, "/")
	if _, ok := snap.dirs[dir]; !ok {
		w.Header().Set("X-Repo-Commit", snap.commit)
		writeError(w, r, http.StatusNotFound, "EntryNotFound", msgEntryNotFound)
		return
	}
	q := r.URL.Query()
	recursive, _ := strconv.ParseBool(q.Get("recursive"))
	entries := snap.list(dir, recursive)
	offset := 0
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		var cur treeCursor
		if err == nil {
			err = json.Unmarshal(raw, &cur)
		}
		if err != nil || cur.Offset < 0 || cur.Offset > len(entries) {
			writeError(w, r, http.StatusBadRequest, "", "Invalid cursor")
			return
		}
		offset = cur.Offset
	}
	end := min(offset+s.opts.TreePageSize, len(entries))
	if end < len(entries) {
		raw, _ := json.Marshal(treeCursor{Offset: end})
		q.Set("cursor", base64.RawURLEncoding.EncodeToString(raw))
		next := "http://" + r.Host + r.URL.EscapedPath() + "?" + q.Encode()
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	writeJSON(w, r, http.StatusOK, entries[offset:end])
}

// contentDisposition is the header the Hub and its CDN send with a file;
// huggingface_hub reads the file name from `filename="...";`.
func contentDisposition(name string) string {
	name = strings.NewReplacer(`"`, "_", "\\", "_", "\n", "_", "\r", "_").Replace(name)
	return fmt.Sprintf(`inline; filename*=UTF-8''%s; filename="%s";`, url.PathEscape(name), name)
}

// writeResolve answers HEAD and GET /{repo}/resolve/{rev}/{path}: a regular
// file's content, or for an LFS file a redirect to the CDN with the LFS
// metadata in X-Linked-Etag / X-Linked-Size (the ETag is then the pointer's
// blob id, as on the Hub; clients key on X-Linked-Etag first).
func (s *Server) writeResolve(w *recWriter, r *http.Request, snap *snapshot, p string) {
	h := w.Header()
	h.Set("X-Repo-Commit", snap.commit)
	f := snap.files[p]
	if f == nil {
		writeError(w, r, http.StatusNotFound, "EntryNotFound", msgEntryNotFound)
		return
	}
	h.Set("ETag", `"`+f.BlobID+`"`)
	if f.LFS {
		loc := s.signedBlobURL(f.SHA256, path.Base(p))
		body := "Found. Redirecting to " + loc
		h.Set("Location", loc)
		h.Set("X-Linked-Etag", `"`+f.SHA256+`"`)
		h.Set("X-Linked-Size", strconv.FormatInt(f.Size, 10))
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusFound)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(body))
		}
		return
	}
	h.Set("Content-Disposition", contentDisposition(path.Base(p)))
	h.Set("Content-Type", contentType(p))
	s.serveContent(w, r, HostHub, f.data, []string{p})
}

// contentType is a plausible type for a regular file (the Hub sends
// text/plain for text, which is all a regular file usually is).
func contentType(p string) string {
	switch path.Ext(p) {
	case ".json":
		return "application/json; charset=utf-8"
	case ".txt", ".md", ".py", ".gitattributes", "":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
