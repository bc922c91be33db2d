// Package cuda is the worker's CUDA backend: engine.Backend on one GPU
// through libgptoss_kernels.so (kernels/gptoss.h), which it opens with
// dlopen at run time so that nothing here needs CUDA to build or test.
//
// Open finds and loads the library (and makes the pip wheels' cuBLAS and
// NCCL visible to it); New uploads a weight set, allocates the KV pools,
// the activation arena and the workspaces, and joins an NCCL communicator
// when asked; GraphModel replays CUDA graphs for decode steps. Every
// failure of the library is an *Error carrying its gx_last_error message.
// See docs/cuda.md.
package cuda
