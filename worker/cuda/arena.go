package cuda

import "fmt"

// arena hands out the activation tensors of a step: a bump allocator over
// device chunks that reset rewinds at the end of every step. The same
// sequence of requests after a reset gets the same addresses, which is what
// lets a CUDA graph captured over one step replay over another. It grows
// (one more chunk) when a step needs more than the chunks hold, except while
// frozen (during graph capture and replay, where allocating is not allowed
// and the warm-up step has already grown it).
type arena struct {
	chunks []chunk
	cur    int   // chunk in use
	off    int64 // bytes used of it
	grow   func(bytes int64) (uintptr, error)
	min    int64 // smallest chunk to add
	frozen bool
}

type chunk struct {
	p    uintptr
	size int64
}

// arenaAlign is the alignment of every piece: cuBLAS and vector loads want
// at least 16 bytes; 256 matches cudaMalloc's.
const arenaAlign = 256

func (a *arena) alloc(bytes int64) (uintptr, error) {
	if bytes < 0 {
		return 0, fmt.Errorf("cuda: allocating %d bytes", bytes)
	}
	n := (bytes + arenaAlign - 1) / arenaAlign * arenaAlign
	for {
		if a.cur < len(a.chunks) {
			c := a.chunks[a.cur]
			if a.off+n <= c.size {
				p := c.p + uintptr(a.off)
				a.off += n
				return p, nil
			}
			a.cur, a.off = a.cur+1, 0
			continue
		}
		if a.frozen {
			return 0, fmt.Errorf("cuda: the activation arena is full (%d bytes more) while a CUDA graph is captured or replayed", n)
		}
		size := max(n, a.min)
		p, err := a.grow(size)
		if err != nil {
			return 0, fmt.Errorf("cuda: growing the activation arena by %d bytes: %w", size, err)
		}
		a.chunks = append(a.chunks, chunk{p: p, size: size})
	}
}

// reset makes every chunk free again.
func (a *arena) reset() { a.cur, a.off = 0, 0 }

// size is the device memory the arena holds.
func (a *arena) size() int64 {
	var n int64
	for _, c := range a.chunks {
		n += c.size
	}
	return n
}
