package step_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "github.com/gptoss/server"

// TestLayering holds the design's dependency rule, which this package
// exists to make possible: coordinator/... and worker/... import shared/...
// and never each other, and shared/... imports neither. A breach would
// link the coordinator's scheduler, profiles and configuration into the
// worker binary (or the engine into the coordinator).
func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	for _, c := range []struct {
		pkgs      string
		forbidden []string
	}{
		{"./worker/...", []string{module + "/coordinator"}},
		{"./coordinator/...", []string{module + "/worker"}},
		{"./shared/...", []string{module + "/coordinator", module + "/worker"}},
	} {
		// -test: test files count too (a test helper importing the other
		// side is the first step of a breach).
		cmd := exec.Command("go", "list", "-deps", "-test", "-f", `{{.ImportPath}}`, c.pkgs)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			msg := ""
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				msg = string(ee.Stderr)
			}
			t.Fatalf("go list %s: %v\n%s", c.pkgs, err, msg)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list %s listed only %v", c.pkgs, deps)
		}
		for _, d := range deps {
			for _, f := range c.forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s (design.md: coordinator/ and worker/ depend only on shared/)", c.pkgs, d)
				}
			}
		}
	}
}

// TestPackageMap holds docs/packages.md to the tree: its table names
// every package of the module, and nothing that is not one.
func TestPackageMap(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	cmd := exec.Command("go", "list", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		p = strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
		if p == "" {
			continue
		}
		pkgs[p] = true
	}
	doc, err := os.ReadFile("../../docs/packages.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		// Table rows: | `path` | what it owns |
		if cell, ok := strings.CutPrefix(line, "| `"); ok {
			if path, _, ok := strings.Cut(cell, "`"); ok {
				listed[path] = true
			}
		}
	}
	for p := range pkgs {
		if !listed[p] {
			t.Errorf("docs/packages.md does not list package %s", p)
		}
	}
	for p := range listed {
		if !pkgs[p] {
			t.Errorf("docs/packages.md lists %s, which is not a package of the module", p)
		}
	}
}
