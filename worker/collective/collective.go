// Package collective joins the tensor-parallel ranks of one model running
// in separate worker processes on CPUs: an engine.Collective over NATS.
// Each rank publishes its part; every rank sums (or concatenates) the
// world's parts in rank order, so all ranks hold bit-identical results.
// It is the development and CI path; GPUs use NCCL.
//
// Operations are numbered within a step (Begin): the ranks run the same
// forward pass, so the n-th operation of step s is the same on every rank.
// Numbering per step, not per life, means a step that failed on one rank
// halfway cannot shift the pairing of every later step's operations, and
// parts of an abandoned step are dropped when the next begins. A rank whose
// step fails aborts it (Abort): the other ranks' waits in that step end at
// once instead of at the timeout.
package collective

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/gptoss/server/shared/wire"
)

// header: step (8), operation in the step (4), sender rank (4), offset in
// elements (4), total elements (4); then float32 little-endian data. A
// total of abortTotal (and no data) is an abort of the step by the sender.
const headerSize = 24

const abortTotal = math.MaxUint32

// chunkElems keeps every message under the protocol's size limit (a
// variable so tests can exercise chunking).
var chunkElems = (wire.MaxMessage - headerSize) / 4

// NATS is a collective over NATS subjects.
type NATS struct {
	nc          *nats.Conn
	subject     string
	rank, world int
	timeout     time.Duration
	sub         *nats.Subscription

	mu      sync.Mutex
	cond    *sync.Cond
	parts   map[key]*part  // contributions received, by step, op and sender
	aborted map[int]uint64 // by rank: 1 + the last step it aborted (0: none)
	step    uint64         // the step being run (Begin)
	op      uint32         // operations issued by this rank in the step
	closed  bool
}

type key struct {
	step uint64
	op   uint32
	rank int
}

type part struct {
	data []float32
	got  int
}

// New joins the collective of one load (epoch) as rank of world. timeout
// bounds the wait for the other ranks' parts.
func New(nc *nats.Conn, subjects wire.Subjects, epoch uint64, rank, world int, timeout time.Duration) (*NATS, error) {
	if rank < 0 || rank >= world {
		return nil, fmt.Errorf("collective: rank %d of %d", rank, world)
	}
	c := &NATS{nc: nc, subject: subjects.Collective(epoch), rank: rank, world: world, timeout: timeout,
		parts: map[key]*part{}, aborted: map[int]uint64{}}
	c.cond = sync.NewCond(&c.mu)
	sub, err := nc.Subscribe(c.subject, c.receive)
	if err != nil {
		return nil, fmt.Errorf("collective: subscribe: %w", err)
	}
	// Large activations arrive faster than a slow rank reads them.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("collective: %w", err)
	}
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("collective: %w", err)
	}
	c.sub = sub
	return c, nil
}

// Close leaves the collective and wakes any waiter with an error.
func (c *NATS) Close() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}

// Begin starts step: operations are numbered from 0 again, and whatever
// arrived for earlier steps is dropped. Every rank begins the same steps
// in the same order (the coordinator's step ids).
func (c *NATS) Begin(step uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.step, c.op = step, 0
	for k := range c.parts {
		if k.step < step {
			delete(c.parts, k)
		}
	}
}

// Abort tells the other ranks that this rank gives step up (its part of
// the step failed): their operations in it fail at once with ErrAborted.
func (c *NATS) Abort(step uint64) error {
	b := make([]byte, headerSize)
	binary.LittleEndian.PutUint64(b, step)
	binary.LittleEndian.PutUint32(b[12:], uint32(c.rank))
	binary.LittleEndian.PutUint32(b[20:], abortTotal)
	if err := c.nc.Publish(c.subject, b); err != nil {
		return fmt.Errorf("collective: abort: %w", err)
	}
	return nil
}

func (c *NATS) receive(m *nats.Msg) {
	b := m.Data
	if len(b) < headerSize || (len(b)-headerSize)%4 != 0 {
		return
	}
	step := binary.LittleEndian.Uint64(b)
	op := binary.LittleEndian.Uint32(b[8:])
	from := int(binary.LittleEndian.Uint32(b[12:]))
	off := int(binary.LittleEndian.Uint32(b[16:]))
	total32 := binary.LittleEndian.Uint32(b[20:])
	n := (len(b) - headerSize) / 4
	if from == c.rank || from >= c.world {
		return // our own echo, or garbage
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if total32 == abortTotal {
		if step+1 > c.aborted[from] {
			c.aborted[from] = step + 1
			c.cond.Broadcast()
		}
		return
	}
	total := int(total32)
	if off+n > total || step < c.step {
		return // garbage, or a part of a step given up
	}
	k := key{step, op, from}
	p := c.parts[k]
	if p == nil {
		p = &part{data: make([]float32, total)}
		c.parts[k] = p
	}
	if len(p.data) != total {
		return
	}
	getFloats(p.data[off:off+n], b[headerSize:])
	p.got += n
	if p.got >= total {
		c.cond.Broadcast()
	}
}

// publish sends this rank's part of operation op of step.
func (c *NATS) publish(step uint64, op uint32, data []float32) error {
	for off := 0; off < len(data) || off == 0; off += chunkElems {
		end := min(off+chunkElems, len(data))
		b := make([]byte, headerSize+4*(end-off))
		binary.LittleEndian.PutUint64(b, step)
		binary.LittleEndian.PutUint32(b[8:], op)
		binary.LittleEndian.PutUint32(b[12:], uint32(c.rank))
		binary.LittleEndian.PutUint32(b[16:], uint32(off))
		binary.LittleEndian.PutUint32(b[20:], uint32(len(data)))
		putFloats(b[headerSize:], data[off:end])
		if err := c.nc.Publish(c.subject, b); err != nil {
			return fmt.Errorf("collective: publish: %w", err)
		}
		if end == len(data) {
			break
		}
	}
	return nil
}

// Errors of a collective operation.
var (
	// ErrTimeout: another rank's part did not arrive in time.
	ErrTimeout = errors.New("collective: timed out waiting for another rank")
	// ErrAborted: another rank gave the step up.
	ErrAborted = errors.New("collective: another rank aborted the step")
)

// gather publishes data as the next operation of the step and returns
// every rank's part, in rank order (this rank's is data itself).
func (c *NATS) gather(data []float32) ([][]float32, error) {
	c.mu.Lock()
	step, op := c.step, c.op
	c.op++
	c.mu.Unlock()
	if err := c.publish(step, op, data); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.timeout)
	timer := time.AfterFunc(c.timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]float32, c.world)
	for r := range c.world {
		if r == c.rank {
			out[r] = data
			continue
		}
		k := key{step, op, r}
		for {
			p := c.parts[k]
			if p != nil && p.got >= len(p.data) {
				if len(p.data) != len(data) {
					return nil, fmt.Errorf("collective: rank %d sent %d elements, rank %d has %d", r, len(p.data), c.rank, len(data))
				}
				out[r] = p.data
				delete(c.parts, k)
				break
			}
			switch {
			case c.closed:
				return nil, errors.New("collective: closed")
			case c.aborted[r] > step:
				return nil, fmt.Errorf("%w: rank %d, step %d", ErrAborted, r, step)
			case time.Now().After(deadline):
				return nil, fmt.Errorf("%w %d (step %d, operation %d, %s)", ErrTimeout, r, step, op, c.timeout)
			}
			c.cond.Wait()
		}
	}
	return out, nil
}

// AllReduce replaces buf with the sum over all ranks, added in rank order.
func (c *NATS) AllReduce(buf []float32) error {
	parts, err := c.gather(buf)
	if err != nil {
		return err
	}
	sum := make([]float32, len(buf))
	copy(sum, parts[0])
	for _, p := range parts[1:] {
		for i, v := range p {
			sum[i] += v
		}
	}
	copy(buf, sum)
	return nil
}

// AllGather writes every rank's local part into out, in rank order.
func (c *NATS) AllGather(local, out []float32) error {
	if len(out) != len(local)*c.world {
		return fmt.Errorf("collective: all-gather of %d elements into %d", len(local), len(out))
	}
	parts, err := c.gather(local)
	if err != nil {
		return err
	}
	for r, p := range parts {
		copy(out[r*len(local):], p)
	}
	return nil
}

// littleEndian: the machine stores float32 as the wire does, so parts are
// copied as bytes (a step's logits are tens of MB; converting them one
// value at a time cost more than moving them).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// putFloats writes src into dst as little-endian float32s.
func putFloats(dst []byte, src []float32) {
	if littleEndian && len(src) > 0 {
		copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// getFloats reads len(dst) little-endian float32s from src.
func getFloats(dst []float32, src []byte) {
	if littleEndian && len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
