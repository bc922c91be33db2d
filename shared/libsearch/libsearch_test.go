package libsearch

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gptoss/server/shared/testkit"
)

func TestCandidates(t *testing.T) {
	root := t.TempDir()
	testkit.Touch(t, filepath.Join(root, "go.mod"))
	exe := filepath.Join(root, "bin", "coordinator")
	cwd := filepath.Join(root, "coordinator", "guide")
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	got, explicit := Candidates(noEnv, "LIB", "lib.so", exe, cwd)
	if explicit {
		t.Fatal("explicit without the variable")
	}
	want := []string{
		filepath.Join(root, "bin", "lib.so"),   // beside the executable
		filepath.Join(root, "build", "lib.so"), // the executable's parent: the checkout
		// root/bin/lib.so is already listed
		filepath.Join(cwd, "build", "lib.so"), // the working directory
		filepath.Join(cwd, "bin", "lib.so"),
		// the module root above cwd is the checkout, already listed
	}
	if !slices.Equal(got, want) {
		t.Fatalf("candidates\n got %q\nwant %q", got, want)
	}
	// A subdirectory of build/ and bin/.
	got, _ = Candidates(noEnv, "LIB", "lib.so", "", root, "sub")
	if want := []string{filepath.Join(root, "build", "sub", "lib.so"), filepath.Join(root, "bin", "sub", "lib.so")}; !slices.Equal(got, want) {
		t.Fatalf("sub: %q, want %q", got, want)
	}

	// The variable: a file as is, a directory with the name appended.
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "LIB" {
				return v
			}
			return ""
		}
	}
	if got, explicit := Candidates(env("/x/y.so"), "LIB", "lib.so", exe, cwd); !explicit || !slices.Equal(got, []string{"/x/y.so"}) {
		t.Fatalf("file: %v %v", got, explicit)
	}
	if got, _ := Candidates(env(root), "LIB", "lib.so", exe, cwd); !slices.Equal(got, []string{filepath.Join(root, "lib.so")}) {
		t.Fatalf("directory: %v", got)
	}
	testkit.Touch(t, filepath.Join(cwd, "bin", "lib.so"))
	if f := Find(want); f != filepath.Join(cwd, "bin", "lib.so") {
		t.Fatalf("Find: %q", f)
	}
}
