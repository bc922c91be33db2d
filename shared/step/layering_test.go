package step_test

import (
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
			if ee, ok := err.(*exec.ExitError); ok {
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
