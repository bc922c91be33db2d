package cuda

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The tests run the real cgo shim against testdata/fakekernels.c, the
// kernels ABI implemented on the host, compiled here with the C compiler
// cgo uses. GPU-only behaviour (the real kernels) is checked by the GPU
// check (worker/gpucheck), not here.

var (
	fakeDir  string
	fakeMu   sync.Mutex
	fakeLibs = map[string]string{} // variant → path
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gptoss-cuda-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cc is the C compiler cgo uses.
func cc() string {
	if c := os.Getenv("CC"); c != "" {
		return c
	}
	out, err := exec.Command("go", "env", "CC").Output()
	if err == nil && strings.TrimSpace(string(out)) != "" {
		return strings.Fields(string(out))[0]
	}
	return "cc"
}

// fakeKernels builds (once) the fake kernels library with the given
// preprocessor defines (a variant) and returns its path.
func fakeKernels(t *testing.T, defines ...string) string {
	t.Helper()
	key := strings.Join(defines, " ")
	fakeMu.Lock()
	defer fakeMu.Unlock()
	if p, ok := fakeLibs[key]; ok {
		return p
	}
	name := "libgptoss_kernels.so"
	if key != "" {
		name = fmt.Sprintf("libfake%d.so", len(fakeLibs))
	}
	out := filepath.Join(fakeDir, fmt.Sprintf("v%d", len(fakeLibs)), name)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"-shared", "-fPIC", "-O1", "-I", "../../kernels", "-o", out, "testdata/fakekernels.c", "-lm"}
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	cmd := exec.Command(cc(), args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath(cc()); lerr != nil {
			t.Skipf("no C compiler (%s) to build the fake kernels library: %v", cc(), lerr)
		}
		t.Fatalf("building the fake kernels: %v\n%s", err, b)
	}
	fakeLibs[key] = out
	return out
}

// fakeLib opens the default fake library.
func fakeLib(t *testing.T) *Lib {
	t.Helper()
	l, err := Open(fakeKernels(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
