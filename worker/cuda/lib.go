package cuda

/*
#cgo CFLAGS: -I${SRCDIR}/../../kernels
#cgo LDFLAGS: -ldl
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"
)

// ABIVersion is the kernels ABI this package was compiled against
// (GX_ABI_VERSION of kernels/gptoss.h); Open refuses any other.
const ABIVersion = int(C.GX_ABI_VERSION)

// NCCLIDBytes is the size of an NCCL unique id (GX_NCCL_ID_BYTES).
const NCCLIDBytes = int(C.GX_NCCL_ID_BYTES)

// ErrLibraryNotFound is returned (wrapped, with the places looked at and
// the fix) when the kernels library is nowhere to be found.
var ErrLibraryNotFound = errors.New("cuda: " + LibraryName + " not found")

// Status is a gx_status: the class of a failure in the kernels library.
type Status int

// The gx_status values of kernels/gptoss.h.
const (
	StatusCUDA   Status = C.GX_ERR_CUDA
	StatusCUBLAS Status = C.GX_ERR_CUBLAS
	StatusNCCL   Status = C.GX_ERR_NCCL
	StatusArg    Status = C.GX_ERR_ARG
	StatusState  Status = C.GX_ERR_STATE
)

func (s Status) String() string {
	switch s {
	case StatusCUDA:
		return "CUDA error"
	case StatusCUBLAS:
		return "cuBLAS error"
	case StatusNCCL:
		return "NCCL error"
	case StatusArg:
		return "bad argument"
	case StatusState:
		return "bad state"
	}
	return fmt.Sprintf("gx_status %d", int(s))
}

// Error is a failed call into the kernels library: the entry point, its
// status and the message gx_last_error gave on the failing thread.
type Error struct {
	Op     string
	Status Status
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: %s (%s)", e.Op, e.Msg, e.Status) }

// Lib is an opened libgptoss_kernels.so. It stays loaded for the life of
// the process (unloading a library that links cudart statically is not
// safe while contexts may exist), so it has no Close.
type Lib struct {
	path string
	l    *C.gxs_lib
	// Preloaded lists the CUDA libraries made visible before opening;
	// PreloadErrors those that failed to load (not fatal: the kernels
	// library may find them by its own search path).
	Preloaded, PreloadErrors []string
}

var (
	libsMu sync.Mutex
	libs   = map[string]*Lib{} // by absolute path: Open twice returns the same Lib
)

// Open loads the kernels library. path "" searches $GPTOSS_KERNELS alone
// when it is set, else build/, bin/ and the directory itself next to the
// executable, its parent, the working directory and the module root above
// it. Before opening, the CUDA libraries of the pip wheels (under .cuda/
// next to those places) and $GPTOSS_CUDA_LIBS are loaded with RTLD_GLOBAL so
// that the kernels library's own dlopen of cuBLAS and NCCL finds them.
//
// A missing library is ErrLibraryNotFound with the fix; a library without
// every entry point, or of another ABI version, is a clear error too.
func Open(path string) (*Lib, error) {
	exe, _ := os.Executable()
	cwd, _ := os.Getwd()
	var cands []string
	explicit := path != ""
	if explicit {
		cands = []string{path}
	} else {
		cands, explicit = candidates(os.Getenv, exe, cwd)
	}
	found := ""
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			found = c
			break
		}
	}
	if found == "" {
		where := strings.Join(cands, ", ")
		if explicit && path == "" {
			where = EnvKernels + "=" + where
		}
		return nil, fmt.Errorf("%w (looked for %s): %s", ErrLibraryNotFound, where, fixHint)
	}
	if abs, err := filepath.Abs(found); err == nil {
		found = abs
	}
	libsMu.Lock()
	defer libsMu.Unlock()
	if l := libs[found]; l != nil {
		return l, nil
	}
	dirs, files := cudaLibDirs(os.Getenv, exe, cwd)
	lib := &Lib{path: found}
	for _, p := range preloadList(dirs, files) {
		if err := preload(p); err != nil {
			lib.PreloadErrors = append(lib.PreloadErrors, err.Error())
		} else {
			lib.Preloaded = append(lib.Preloaded, p)
		}
	}
	if loaded, err := lib.open(); err != nil {
		if !loaded && len(lib.Preloaded) == 0 {
			err = fmt.Errorf("%w (no CUDA libraries found under .cuda/ or in %s: scripts/install-cuda.sh installs them)", err, EnvCUDALibs)
		}
		return nil, err
	}
	libs[found] = lib
	return lib, nil
}

// errBuf is a C buffer for one failure message.
func errBuf() *C.char { return (*C.char)(C.calloc(C.GXS_ERRN, 1)) }

func preload(path string) error {
	cp, e := C.CString(path), errBuf()
	defer C.free(unsafe.Pointer(cp))
	defer C.free(unsafe.Pointer(e))
	if C.gxs_preload(cp, e) != 0 {
		return fmt.Errorf("preloading %s: %s", path, C.GoString(e))
	}
	return nil
}

// open resolves the library's entry points; loaded reports that dlopen
// itself succeeded (the failure is then the library's, not its
// dependencies').
func (l *Lib) open() (loaded bool, err error) {
	cp, e := C.CString(l.path), errBuf()
	defer C.free(unsafe.Pointer(cp))
	defer C.free(unsafe.Pointer(e))
	var t *C.gxs_lib
	switch C.gxs_open(cp, &t, e) {
	case 0:
	case 2:
		return true, fmt.Errorf("cuda: %s lacks entry points %s: it is not a libgptoss_kernels built from this checkout's kernels/gptoss.h; run make kernels",
			l.path, C.GoString(e))
	default:
		return false, fmt.Errorf("cuda: opening %s: %s", l.path, C.GoString(e))
	}
	if v := int(C.gxs_abi_version(t)); v != ABIVersion {
		// The table is leaked with its handle: a library of another ABI
		// is not used, and not unloaded (see Lib).
		return true, fmt.Errorf("cuda: %s has ABI version %d, this worker was built for %d: rebuild it with make kernels (or rebuild the worker)",
			l.path, v, ABIVersion)
	}
	l.l = t
	return true, nil
}

// Path is the file the library was loaded from.
func (l *Lib) Path() string { return l.path }

// call runs f with a fresh message buffer and turns its status into an
// Error (for library-level calls; contexts keep their own buffer).
func (l *Lib) call(op string, f func(e *C.char) C.int) error {
	e := errBuf()
	defer C.free(unsafe.Pointer(e))
	if st := f(e); st != 0 {
		return &Error{Op: op, Status: Status(st), Msg: C.GoString(e)}
	}
	return nil
}

// DeviceCount is the number of CUDA devices visible to the process.
func (l *Lib) DeviceCount() (int, error) {
	var n C.int
	err := l.call("gx_device_count", func(e *C.char) C.int { return C.gxs_device_count(l.l, e, &n) })
	return int(n), err
}

// NCCLUniqueID makes the id rank 0 hands to every rank of a new NCCL
// communicator.
func (l *Lib) NCCLUniqueID() ([]byte, error) {
	id := (*C.uint8_t)(C.calloc(C.GX_NCCL_ID_BYTES, 1))
	defer C.free(unsafe.Pointer(id))
	if err := l.call("gx_nccl_unique_id", func(e *C.char) C.int { return C.gxs_nccl_unique_id(l.l, e, id) }); err != nil {
		return nil, err
	}
	return C.GoBytes(unsafe.Pointer(id), C.GX_NCCL_ID_BYTES), nil
}

// ctx is one device context of the library: every op goes through it.
// Its methods are thin: Go types in, an *Error out. A ctx is used by one
// goroutine at a time (its message buffer is shared by its calls).
type ctx struct {
	lib *Lib
	L   *C.gxs_lib
	c   *C.gx_ctx
	e   *C.char
}

func (l *Lib) newCtx(device int) (*ctx, error) {
	c := &ctx{lib: l, L: l.l, e: errBuf()}
	if st := C.gxs_ctx_create(c.L, c.e, C.int(device), &c.c); st != 0 {
		err := c.err("gx_ctx_create", st)
		C.free(unsafe.Pointer(c.e))
		return nil, err
	}
	return c, nil
}

func (c *ctx) err(op string, st C.int) error {
	if st == 0 {
		return nil
	}
	return &Error{Op: op, Status: Status(st), Msg: C.GoString(c.e)}
}

func (c *ctx) destroy() {
	if c.c != nil {
		C.gxs_ctx_destroy(c.L, c.c)
		c.c = nil
	}
	if c.e != nil {
		C.free(unsafe.Pointer(c.e))
		c.e = nil
	}
}

type cptr = C.uintptr_t

func dp(p uintptr) cptr { return cptr(p) }

func (c *ctx) deviceInfo() (name string, major, minor, sms int, err error) {
	buf := (*C.char)(C.calloc(256, 1))
	defer C.free(unsafe.Pointer(buf))
	var ma, mi, s C.int
	if err = c.err("gx_device_info", C.gxs_device_info(c.L, c.e, c.c, buf, 256, &ma, &mi, &s)); err != nil {
		return "", 0, 0, 0, err
	}
	return C.GoString(buf), int(ma), int(mi), int(s), nil
}

func (c *ctx) memInfo() (free, total int64, err error) {
	var f, t C.int64_t
	err = c.err("gx_mem_info", C.gxs_mem_info(c.L, c.e, c.c, &f, &t))
	return int64(f), int64(t), err
}

func (c *ctx) malloc(bytes int64) (uintptr, error) {
	var p cptr
	if err := c.err("gx_malloc", C.gxs_malloc(c.L, c.e, c.c, C.int64_t(bytes), &p)); err != nil {
		return 0, fmt.Errorf("%w (allocating %d bytes)", err, bytes)
	}
	return uintptr(p), nil
}

func (c *ctx) free(p uintptr) error { return c.err("gx_free", C.gxs_free(c.L, c.e, c.c, dp(p))) }

// upload copies n bytes from host memory at src (Go or mapped memory; the
// call waits, so it may move after) to the device.
func (c *ctx) upload(dst uintptr, src unsafe.Pointer, n int64) error {
	if n == 0 {
		return nil
	}
	return c.err("gx_upload", C.gxs_upload(c.L, c.e, c.c, dp(dst), src, C.int64_t(n)))
}

func (c *ctx) download(dst unsafe.Pointer, src uintptr, n int64) error {
	if n == 0 {
		return nil
	}
	return c.err("gx_download", C.gxs_download(c.L, c.e, c.c, dst, dp(src), C.int64_t(n)))
}

func (c *ctx) copy(dst, src uintptr, n int64) error {
	return c.err("gx_copy", C.gxs_copy(c.L, c.e, c.c, dp(dst), dp(src), C.int64_t(n)))
}

func (c *ctx) memset(dst uintptr, v int, n int64) error {
	return c.err("gx_memset", C.gxs_memset(c.L, c.e, c.c, dp(dst), C.int(v), C.int64_t(n)))
}

func (c *ctx) sync() error { return c.err("gx_sync", C.gxs_sync(c.L, c.e, c.c)) }

func (c *ctx) scratchReserve(n int64) error {
	return c.err("gx_scratch_reserve", C.gxs_scratch_reserve(c.L, c.e, c.c, C.int64_t(n)))
}

func (c *ctx) copyBench(dst, src uintptr, n int64, iters int) (float32, error) {
	var ms C.float
	err := c.err("gx_copy_bench", C.gxs_copy_bench(c.L, c.e, c.c, dp(dst), dp(src), C.int64_t(n), C.int(iters), &ms))
	return float32(ms), err
}

// graph is an instantiated CUDA graph of the library.
type graph = C.gx_graph

func (c *ctx) graphBegin() error { return c.err("gx_graph_begin", C.gxs_graph_begin(c.L, c.e, c.c)) }

func (c *ctx) graphEnd() (*graph, error) {
	var g *C.gx_graph
	if err := c.err("gx_graph_end", C.gxs_graph_end(c.L, c.e, c.c, &g)); err != nil {
		return nil, err
	}
	return g, nil
}

func (c *ctx) graphLaunch(g *graph) error {
	return c.err("gx_graph_launch", C.gxs_graph_launch(c.L, c.e, c.c, g))
}

func (c *ctx) graphDestroy(g *graph) {
	if g != nil {
		C.gxs_graph_destroy(c.L, g)
	}
}

func (c *ctx) embed(table, ids uintptr, T, H int, x uintptr) error {
	return c.err("gx_embed", C.gxs_embed(c.L, c.e, c.c, dp(table), dp(ids), C.int(T), C.int(H), dp(x)))
}

func (c *ctx) rmsnorm(x, gain uintptr, T, H int, eps float32, out uintptr) error {
	return c.err("gx_rmsnorm", C.gxs_rmsnorm(c.L, c.e, c.c, dp(x), dp(gain), C.int(T), C.int(H), C.float(eps), dp(out)))
}

func (c *ctx) addRMSNorm(x, delta, bias, gain uintptr, T, H int, eps float32, out uintptr) error {
	return c.err("gx_add_rmsnorm", C.gxs_add_rmsnorm(c.L, c.e, c.c, dp(x), dp(delta), dp(bias), dp(gain),
		C.int(T), C.int(H), C.float(eps), dp(out)))
}

func (c *ctx) gatherRows(x, rows uintptr, n, H int, out uintptr) error {
	return c.err("gx_gather_rows", C.gxs_gather_rows(c.L, c.e, c.c, dp(x), dp(rows), C.int(n), C.int(H), dp(out)))
}

func (c *ctx) linear(x, w uintptr, ldw int, bias uintptr, T, N, K int, out uintptr) error {
	return c.err("gx_linear", C.gxs_linear(c.L, c.e, c.c, dp(x), dp(w), C.int64_t(ldw), dp(bias),
		C.int(T), C.int(N), C.int(K), dp(out)))
}

func (c *ctx) rope(q, k, pos, invFreq uintptr, scale float32, T, heads, kvHeads, D int) error {
	return c.err("gx_rope", C.gxs_rope(c.L, c.e, c.c, dp(q), dp(k), dp(pos), dp(invFreq), C.float(scale),
		C.int(T), C.int(heads), C.int(kvHeads), C.int(D)))
}

func (c *ctx) kvWrite(k, v, slot uintptr, T, kvdim int, kc, vc uintptr) error {
	return c.err("gx_kv_write", C.gxs_kv_write(c.L, c.e, c.c, dp(k), dp(v), dp(slot), C.int(T), C.int(kvdim), dp(kc), dp(vc)))
}

// attnLayout mirrors gx_attn_layout with device pointers.
type attnLayout struct {
	seq, pos, tables                       uintptr
	T, nSeqs, maxBlocks, maxPos, blockSize int
}

func (c *ctx) attention(l *attnLayout, q, kc, vc, sinks uintptr, heads, kvHeads, D, window int, scale float32, out uintptr) error {
	return c.err("gx_attention", C.gxs_attention(c.L, c.e, c.c, dp(l.seq), dp(l.pos), dp(l.tables), C.int(l.T),
		C.int(l.nSeqs), C.int(l.maxBlocks), C.int(l.maxPos), C.int(l.blockSize), dp(q), dp(kc), dp(vc), dp(sinks),
		C.int(heads), C.int(kvHeads), C.int(D), C.int(window), C.float(scale), dp(out)))
}

func (c *ctx) routerTopK(logits uintptr, T, E, k int, idx, weight uintptr) error {
	return c.err("gx_router_topk", C.gxs_router_topk(c.L, c.e, c.c, dp(logits), C.int(T), C.int(E), C.int(k), dp(idx), dp(weight)))
}

func (c *ctx) moeWorkspace(T, k, H, I int) int64 {
	return int64(C.gxs_moe_workspace(c.L, C.int(T), C.int(k), C.int(H), C.int(I)))
}

// experts mirrors gx_experts with device pointers.
type experts struct {
	guBlocks, guScales, guBias, dnBlocks, dnScales, dnBias uintptr
	n, lo, H, I                                            int
	limit                                                  float32
}

func (c *ctx) moe(ex *experts, x, idx, weight uintptr, T, k int, ws uintptr, wsBytes int64, out uintptr) error {
	return c.err("gx_moe", C.gxs_moe(c.L, c.e, c.c, dp(ex.guBlocks), dp(ex.guScales), dp(ex.guBias), dp(ex.dnBlocks),
		dp(ex.dnScales), dp(ex.dnBias), C.int(ex.n), C.int(ex.lo), C.int(ex.H), C.int(ex.I), C.float(ex.limit),
		dp(x), dp(idx), dp(weight), C.int(T), C.int(k), dp(ws), C.int64_t(wsBytes), dp(out)))
}

// sampleParams is one row's gx_sampling.
type sampleParams struct {
	temperature, topP   float32
	topK                int
	minP                float32
	presence, frequency float32
	uniform             float32
}

func (c *ctx) sample(logits uintptr, S, V int, params []sampleParams, penOff, penIDs, penCounts uintptr, nTop int,
	token, logprob, topIDs, topLP uintptr) error {
	// The parameters are host memory copied by the call: a C array, so no
	// Go pointer rules apply to its layout.
	ps := (*C.gx_sampling)(C.calloc(C.size_t(max(S, 1)), C.size_t(unsafe.Sizeof(C.gx_sampling{}))))
	defer C.free(unsafe.Pointer(ps))
	arr := unsafe.Slice(ps, max(S, 1))
	for i, p := range params {
		arr[i] = C.gx_sampling{temperature: C.float(p.temperature), top_p: C.float(p.topP), top_k: C.int(p.topK),
			min_p: C.float(p.minP), presence_penalty: C.float(p.presence), frequency_penalty: C.float(p.frequency),
			uniform: C.float(p.uniform)}
	}
	return c.err("gx_sample", C.gxs_sample(c.L, c.e, c.c, dp(logits), C.int(S), C.int(V), ps, dp(penOff), dp(penIDs),
		dp(penCounts), C.int(nTop), dp(token), dp(logprob), dp(topIDs), dp(topLP)))
}

// maskLogits sets to −Inf the tokens of n rows of logits [S × V] that
// their bitsets deny (rows int32 [n], allow uint32 [n × ⌈V/32⌉], device).
func (c *ctx) maskLogits(logits uintptr, S, V, n int, rows, allow uintptr) error {
	return c.err("gx_mask_logits", C.gxs_mask_logits(c.L, c.e, c.c, dp(logits), C.int(S), C.int(V), C.int(n), dp(rows), dp(allow)))
}

func (c *ctx) ncclInit(id []byte, nranks, rank int) error {
	if len(id) != NCCLIDBytes {
		return fmt.Errorf("cuda: an NCCL id has %d bytes, not %d", NCCLIDBytes, len(id))
	}
	cid := C.CBytes(id)
	defer C.free(cid)
	return c.err("gx_nccl_init", C.gxs_nccl_init(c.L, c.e, c.c, (*C.uint8_t)(cid), C.int(nranks), C.int(rank)))
}

func (c *ctx) allReduce(buf uintptr, n int64) error {
	return c.err("gx_all_reduce", C.gxs_all_reduce(c.L, c.e, c.c, dp(buf), C.int64_t(n)))
}

func (c *ctx) allGather(in, out uintptr, n int64) error {
	return c.err("gx_all_gather", C.gxs_all_gather(c.L, c.e, c.c, dp(in), dp(out), C.int64_t(n)))
}
