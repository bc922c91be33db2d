// Package libsearch finds the shared libraries the commands open at run time
// rather than link (the CUDA kernels in the worker, llguidance in the
// coordinator), so that `go build ./...` works on a machine that has
// neither and a checkout finds what `make` built without configuration.
package libsearch

import (
	"os"
	"path/filepath"
	"slices"
)

// Bases are the directories whose build/ and bin/ are looked in: the
// executable's parent (bin/coordinator → the checkout), the working
// directory, and the module root above the working directory (so that `go
// test` in a subpackage finds the checkout's build/).
func Bases(exe, cwd string) []string {
	var out []string
	add := func(d string) {
		if d == "" {
			return
		}
		d = filepath.Clean(d)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if exe != "" {
		add(filepath.Dir(filepath.Dir(exe)))
	}
	add(cwd)
	if cwd != "" {
		for d, i := filepath.Clean(cwd), 0; i < 8; d, i = filepath.Dir(d), i+1 {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				add(d)
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return out
}

// Candidates lists, in order, where a library named name is looked for.
// When the environment variable env is set, its value alone (a file, or a
// directory holding name) is, and explicit is true. Otherwise: next to the
// executable, then each base's build/SUB and bin/SUB for every sub in subs
// ("" for build/ and bin/ themselves).
func Candidates(getenv func(string) string, env, name, exe, cwd string, subs ...string) (paths []string, explicit bool) {
	if p := getenv(env); p != "" {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			p = filepath.Join(p, name)
		}
		return []string{p}, true
	}
	add := func(p string) {
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	if exe != "" {
		add(filepath.Join(filepath.Dir(exe), name))
	}
	if len(subs) == 0 {
		subs = []string{""}
	}
	for _, b := range Bases(exe, cwd) {
		for _, s := range subs {
			add(filepath.Join(b, "build", s, name))
			add(filepath.Join(b, "bin", s, name))
		}
	}
	return paths, false
}

// Find returns the first candidate that is a regular file, or "".
func Find(cands []string) string {
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	return ""
}
