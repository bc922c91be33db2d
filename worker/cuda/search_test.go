package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gptoss/server/shared/testkit"
)

// The kernels library is looked for where shared/libsearch says, under
// its own name and variable.
func TestCandidates(t *testing.T) {
	root := t.TempDir()
	testkit.Touch(t, filepath.Join(root, "go.mod"))
	exe := filepath.Join(root, "bin", "worker")
	got, explicit := candidates(func(string) string { return "" }, exe, root)
	if explicit || len(got) == 0 || got[0] != filepath.Join(root, "bin", LibraryName) {
		t.Fatalf("candidates %q", got)
	}
	env := func(k string) string {
		if k == EnvKernels {
			return "/x/y.so"
		}
		return ""
	}
	if got, explicit := candidates(env, exe, root); !explicit || !slices.Equal(got, []string{"/x/y.so"}) {
		t.Fatalf("file: %v %v", got, explicit)
	}
}

func TestCUDALibDirs(t *testing.T) {
	root := t.TempDir()
	// A pip --target tree (scripts/install-cuda.sh) and a virtualenv.
	for _, f := range []string{
		".cuda/nvidia/cu13/lib/libcublasLt.so.13",
		".cuda/nvidia/cu13/lib/libcublas.so.13",
		".cuda/nvidia/cu13/lib/libcublas.so.13.0.2",
		".cuda/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2",
	} {
		testkit.Touch(t, filepath.Join(root, f))
	}
	extra := t.TempDir()
	testkit.Touch(t, filepath.Join(extra, "libnccl.so.2"))
	single := filepath.Join(t.TempDir(), "libsomething.so")
	testkit.Touch(t, single)
	env := func(k string) string {
		if k == EnvCUDALibs {
			return extra + string(os.PathListSeparator) + single + string(os.PathListSeparator) + "/does/not/exist"
		}
		return ""
	}
	dirs, files := cudaLibDirs(env, "", root)
	wantDirs := []string{extra, filepath.Join(root, ".cuda/nvidia/cu13/lib"),
		filepath.Join(root, ".cuda/lib/python3.12/site-packages/nvidia/nccl/lib")}
	if !slices.Equal(dirs, wantDirs) || !slices.Equal(files, []string{single}) {
		t.Fatalf("dirs %q files %q", dirs, files)
	}
	// cuBLASLt before cuBLAS, the soname link (shortest name), and NCCL
	// from $GPTOSS_CUDA_LIBS, which comes first.
	got := preloadList(dirs, files)
	want := []string{single, filepath.Join(root, ".cuda/nvidia/cu13/lib/libcublasLt.so.13"),
		filepath.Join(root, ".cuda/nvidia/cu13/lib/libcublas.so.13"), filepath.Join(extra, "libnccl.so.2")}
	if !slices.Equal(got, want) {
		t.Fatalf("preload\n got %q\nwant %q", got, want)
	}
}
