package cuda

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func wantErr(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

func TestOpenNotFound(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nowhere", LibraryName)
	_, err := Open(missing)
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("Open(%s): %v, want ErrLibraryNotFound", missing, err)
	}
	wantErr(t, err, missing, "run make kernels", "scripts/install-cuda.sh installs nvcc")

	// $GPTOSS_KERNELS is the only place looked at when set.
	t.Setenv(EnvKernels, missing)
	_, err = Open("")
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("Open with %s=%s: %v", EnvKernels, missing, err)
	}
	wantErr(t, err, EnvKernels+"="+missing, "make kernels")
}

func TestOpenBadLibraries(t *testing.T) {
	// Not a shared object: dlopen's own message.
	junk := filepath.Join(t.TempDir(), LibraryName)
	if err := os.WriteFile(junk, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(junk)
	wantErr(t, err, "cuda: opening "+junk)
	if errors.Is(err, ErrLibraryNotFound) {
		t.Fatal("a library that exists but does not load is not 'not found'")
	}

	// A library without every entry point names what it lacks.
	_, err = Open(fakeKernels(t, "FAKE_OMIT_MOE"))
	wantErr(t, err, "lacks entry points gx_moe", "make kernels")

	// Another ABI version.
	_, err = Open(fakeKernels(t, "FAKE_ABI=999"))
	wantErr(t, err, "ABI version 999", "built for 1", "make kernels")
}

func TestOpenOnce(t *testing.T) {
	a, b := fakeLib(t), fakeLib(t)
	if a != b {
		t.Fatal("opening one path twice gave two libraries")
	}
	if a.Path() != fakeKernels(t) {
		t.Fatalf("path %s", a.Path())
	}
	// A directory in $GPTOSS_KERNELS means the library inside it.
	t.Setenv(EnvKernels, filepath.Dir(fakeKernels(t)))
	c, err := Open("")
	if err != nil || c != a {
		t.Fatalf("Open via %s: %v", EnvKernels, err)
	}
}

func TestStatusIsError(t *testing.T) {
	l := fakeLib(t)
	if n, err := l.DeviceCount(); err != nil || n != 1 {
		t.Fatalf("device count %d, %v", n, err)
	}
	t.Setenv("FAKE_GX_FAIL", "gx_device_count")
	_, err := l.DeviceCount()
	var e *Error
	if !errors.As(err, &e) || e.Op != "gx_device_count" || e.Status != StatusCUDA ||
		!strings.Contains(e.Msg, "injected failure in gx_device_count") {
		t.Fatalf("error %#v", err)
	}
	wantErr(t, err, "cuda: gx_device_count: injected failure", "CUDA error")

	t.Setenv("FAKE_GX_FAIL", "")
	id, err := l.NCCLUniqueID()
	if err != nil || len(id) != NCCLIDBytes || id[0] != 1 || id[1] != 8 {
		t.Fatalf("nccl id %v, %v", id, err)
	}
}

func TestPreload(t *testing.T) {
	// A copy of the fake under another name stands for cuBLAS, a broken
	// file for NCCL: the first is loaded, the second reported, and the
	// kernels open anyway.
	dir := t.TempDir()
	src, err := os.ReadFile(fakeKernels(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "libcublas.so.13"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "libnccl.so.2"), []byte("broken"), 0o755); err != nil {
		t.Fatal(err)
	}
	kdir := t.TempDir() // a path no other test opened, so Open does not reuse a Lib
	kpath := filepath.Join(kdir, LibraryName)
	if err := os.WriteFile(kpath, src, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvCUDALibs, dir)
	l, err := Open(kpath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(l.Preloaded, filepath.Join(dir, "libcublas.so.13")) {
		t.Fatalf("preloaded %v", l.Preloaded)
	}
	if len(l.PreloadErrors) != 1 || !strings.Contains(l.PreloadErrors[0], "libnccl.so.2") {
		t.Fatalf("preload errors %v", l.PreloadErrors)
	}
}

func TestMain_NoCUDAInBuild(t *testing.T) {
	// The package links no CUDA library: its test binary runs on this
	// machine. Belt and braces: nothing CUDA in its dynamic dependencies.
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	out, err := exec.Command("ldd", exe).CombinedOutput()
	if err != nil {
		t.Skipf("ldd: %v", err)
	}
	for _, bad := range []string{"libcuda", "libcudart", "libcublas", "libnccl", "gptoss_kernels"} {
		if strings.Contains(string(out), bad) {
			t.Fatalf("the binary links %s:\n%s", bad, out)
		}
	}
}

// The checkout's real library, when `make kernels` has built it: every
// entry point resolves and the ABI matches (so the shim and kernels/*.cu
// agree on the header); without a GPU its calls fail with a message.
func TestRealLibrary(t *testing.T) {
	path := filepath.Join("..", "..", "build", LibraryName)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not built (make kernels)", path)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.DeviceCount()
	var e *Error
	if err != nil && (!errors.As(err, &e) || e.Msg == "") {
		t.Fatalf("device count: %v", err)
	}
	t.Logf("%s: %d devices (%v)", l.Path(), n, err)
}
