package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gptoss/server/shared/libsearch"
)

// LibraryName is the file `make kernels` builds (kernels/Makefile rules, or
// the top Makefile's kernels target, put it in build/).
const LibraryName = "libgptoss_kernels.so"

// Environment variables Open reads.
const (
	// EnvKernels names the kernels library (a file, or a directory holding
	// LibraryName). When set, it is the only place looked at.
	EnvKernels = "GPTOSS_KERNELS"
	// EnvCUDALibs lists (colon-separated) directories or files of CUDA
	// libraries (cuBLAS, NCCL) to make visible to the kernels library
	// before it is opened, ahead of those found under .cuda/.
	EnvCUDALibs = "GPTOSS_CUDA_LIBS"
)

// fixHint is what to do when the library is missing.
const fixHint = "run make kernels (scripts/install-cuda.sh installs nvcc), or set " + EnvKernels + " to its path"

// candidates lists, in order, where Open("") looks for the kernels
// library (shared/libsearch: $GPTOSS_KERNELS alone when set, else beside
// the executable and in the checkout's build/ and bin/).
func candidates(getenv func(string) string, exe, cwd string) (paths []string, explicit bool) {
	return libsearch.Candidates(getenv, EnvKernels, LibraryName, exe, cwd)
}

// preloadPatterns are the CUDA libraries the kernels library dlopens by
// soname, in dependency order (cuBLAS needs cublasLt). cudart is linked
// statically into the kernels and the driver (libcuda) comes with the
// driver install, so neither is here.
var preloadPatterns = []string{"libcublasLt.so*", "libcublas.so*", "libnccl.so*"}

// cudaLibDirs lists the directories that may hold the pip wheels' CUDA
// libraries: $GPTOSS_CUDA_LIBS first, then every nvidia/*/lib (cu13/lib,
// nccl/lib, cublas/lib …) of a .cuda environment next to the bases, as a
// virtual environment (lib/python3*/site-packages/nvidia) or a pip
// --target tree (nvidia/ directly).
func cudaLibDirs(getenv func(string) string, exe, cwd string) (dirs, files []string) {
	add := func(list *[]string, p string) {
		p = filepath.Clean(p)
		if !slices.Contains(*list, p) {
			*list = append(*list, p)
		}
	}
	for _, p := range filepath.SplitList(getenv(EnvCUDALibs)) {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		switch {
		case err != nil:
		case st.IsDir():
			add(&dirs, p)
		default:
			add(&files, p)
		}
	}
	for _, b := range libsearch.Bases(exe, cwd) {
		root := filepath.Join(b, ".cuda")
		for _, pat := range []string{
			"nvidia/*/lib",
			"lib/python3*/site-packages/nvidia/*/lib",
			"lib64/python3*/site-packages/nvidia/*/lib",
			"site-packages/nvidia/*/lib",
		} {
			m, _ := filepath.Glob(filepath.Join(root, pat))
			slices.Sort(m)
			for _, d := range m {
				add(&dirs, d)
			}
		}
	}
	return dirs, files
}

// preloadList picks the files to preload: the explicit files, then for each
// pattern the first directory that has a match (the shortest name there,
// usually the soname link), so each library is loaded once.
func preloadList(dirs, files []string) []string {
	out := slices.Clone(files)
	for _, pat := range preloadPatterns {
		for _, d := range dirs {
			m, _ := filepath.Glob(filepath.Join(d, pat))
			if len(m) == 0 {
				continue
			}
			slices.SortFunc(m, func(a, b string) int {
				if len(a) != len(b) {
					return len(a) - len(b)
				}
				return strings.Compare(a, b)
			})
			if !slices.Contains(out, m[0]) {
				out = append(out, m[0])
			}
			break
		}
	}
	return out
}
