// Package hub gets checkpoints from the Hugging Face Hub into the standard
// Hugging Face cache, speaking the Hub's protocol as its official client
// (huggingface_hub) does, so that a cache filled by `hf download` is used
// as it is and ours is usable by huggingface_hub and transformers:
//
//   - GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true gives the
//     commit and the files, with their sizes, git blob ids and LFS sha256;
//   - HEAD {endpoint}/{repo}/resolve/{commit}/{path} gives the file's etag
//     (X-Linked-Etag: the sha256 for LFS files; ETag: the git blob id for
//     the others), its size (X-Linked-Size) and, for LFS files, a redirect
//     to a storage host, which gets no Authorization header;
//   - GET of that location, resumed with Range after a cut connection.
//
// The cache layout is huggingface_hub's: {cache}/models--ORG--NAME/ holds
// blobs/{etag}, snapshots/{commit}/{path} (a relative symlink to the blob)
// and refs/{revision} (the commit); .locks/models--ORG--NAME/{etag}.lock is
// taken with flock, as huggingface_hub's filelock does, so two downloaders
// of one blob never write it together. Unlike huggingface_hub, every file
// is verified before it enters the cache (sha256 for LFS files, the git
// blob id for the others): nothing corrupt ever sits in a snapshot.
package hub

import (
	"os"
	"path/filepath"
	"strings"
)

// DefaultEndpoint is the public Hub.
const DefaultEndpoint = "https://huggingface.co"

// Env is where the Hub and the cache are, from the environment variables
// huggingface_hub reads.
type Env struct {
	// Endpoint is the Hub's base URL (HF_ENDPOINT), without a trailing /.
	Endpoint string
	// Token is sent as a bearer token to the Hub (HF_TOKEN, the legacy
	// HUGGING_FACE_HUB_TOKEN, or the token file `hf auth login` writes).
	Token string
	// Cache is the hub cache directory (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
	// $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub).
	Cache string
	// Offline forbids every network call (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE).
	Offline bool
}

// EnvFrom reads the environment as huggingface_hub's constants module does.
// getenv is os.Getenv in production.
func EnvFrom(getenv func(string) string) Env {
	home := getenv("HF_HOME")
	if home == "" {
		base := getenv("XDG_CACHE_HOME")
		if base == "" {
			h := getenv("HOME")
			if h == "" {
				h, _ = os.UserHomeDir()
			}
			base = filepath.Join(h, ".cache")
		}
		home = filepath.Join(base, "huggingface")
	}
	e := Env{Endpoint: strings.TrimRight(getenv("HF_ENDPOINT"), "/")}
	if e.Endpoint == "" {
		e.Endpoint = DefaultEndpoint
	}
	e.Cache = getenv("HF_HUB_CACHE")
	if e.Cache == "" {
		e.Cache = getenv("HUGGINGFACE_HUB_CACHE")
	}
	if e.Cache == "" {
		e.Cache = filepath.Join(home, "hub")
	}
	e.Offline = truthy(getenv("HF_HUB_OFFLINE")) || truthy(getenv("TRANSFORMERS_OFFLINE"))
	e.Token = strings.TrimSpace(getenv("HF_TOKEN"))
	if e.Token == "" {
		e.Token = strings.TrimSpace(getenv("HUGGING_FACE_HUB_TOKEN"))
	}
	if e.Token == "" {
		path := getenv("HF_TOKEN_PATH")
		if path == "" {
			path = filepath.Join(home, "token")
		}
		if b, err := os.ReadFile(path); err == nil {
			e.Token = strings.TrimSpace(string(b))
		}
	}
	return e
}

// truthy is huggingface_hub's reading of a boolean variable.
func truthy(v string) bool {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// IsRepoID reports whether s has the shape of a Hub repository id
// ("org/name"), as opposed to a path on this machine.
func IsRepoID(s string) bool {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") {
		return false
	}
	org, name, ok := strings.Cut(s, "/")
	return ok && validPart(org) && validPart(name)
}

// validPart is one half of a repo id: letters, digits, '-', '_', '.', not
// starting or ending with '-' or '.', at most 96 characters (the Hub's rule).
func validPart(p string) bool {
	if p == "" || len(p) > 96 || strings.Contains(p, "--") || strings.Contains(p, "..") {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return !strings.ContainsAny(p[:1], "-.") && !strings.ContainsAny(p[len(p)-1:], "-.")
}

// Wanted reports whether serving needs a file of the repository: the
// configuration, the generation defaults, the safetensors index and the
// Hugging Face layout's safetensors shards, all at the top level. The
// original/ and metal/ folders (other layouts of the same weights, each
// about as large) are never fetched.
func Wanted(path string) bool {
	if strings.Contains(path, "/") {
		return false
	}
	switch path {
	case "config.json", "generation_config.json":
		return true
	}
	return strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".safetensors.index.json")
}
