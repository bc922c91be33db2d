// Package collective joins the tensor-parallel ranks of one model running
// in separate worker processes on CPUs: an engine.Collective over NATS.
// Each rank publishes its part; every rank sums (or concatenates) the
// world's parts in rank order, so all ranks hold bit-identical results.
// It is the development and CI path; GPUs use NCCL.
package collective

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gptoss/server/shared/wire"
)

// header: op sequence (8), sender rank (4), offset in elements (4), total
// elements (4); then float32 little-endian data.
const headerSize = 20

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

	mu     sync.Mutex
	cond   *sync.Cond
	parts  map[key]*part // contributions received, by op and sender
	seq    uint64        // ops issued by this rank
	closed bool
}

type key struct {
	seq  uint64
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
	c := &NATS{nc: nc, subject: subjects.Collective(epoch), rank: rank, world: world, timeout: timeout, parts: map[key]*part{}}
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

func (c *NATS) receive(m *nats.Msg) {
	b := m.Data
	if len(b) < headerSize || (len(b)-headerSize)%4 != 0 {
		return
	}
	seq := binary.LittleEndian.Uint64(b)
	from := int(binary.LittleEndian.Uint32(b[8:]))
	off := int(binary.LittleEndian.Uint32(b[12:]))
	total := int(binary.LittleEndian.Uint32(b[16:]))
	n := (len(b) - headerSize) / 4
	if from == c.rank || from >= c.world || off+n > total {
		return // our own echo, or garbage
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{seq, from}
	p := c.parts[k]
	if p == nil {
		p = &part{data: make([]float32, total)}
		c.parts[k] = p
	}
	if len(p.data) != total {
		return
	}
	for i := range n {
		p.data[off+i] = math.Float32frombits(binary.LittleEndian.Uint32(b[headerSize+4*i:]))
	}
	p.got += n
	if p.got >= total {
		c.cond.Broadcast()
	}
}

// publish sends this rank's part of op seq.
func (c *NATS) publish(seq uint64, data []float32) error {
	for off := 0; off < len(data) || off == 0; off += chunkElems {
		end := min(off+chunkElems, len(data))
		b := make([]byte, headerSize+4*(end-off))
		binary.LittleEndian.PutUint64(b, seq)
		binary.LittleEndian.PutUint32(b[8:], uint32(c.rank))
		binary.LittleEndian.PutUint32(b[12:], uint32(off))
		binary.LittleEndian.PutUint32(b[16:], uint32(len(data)))
		for i, v := range data[off:end] {
			binary.LittleEndian.PutUint32(b[headerSize+4*i:], math.Float32bits(v))
		}
		if err := c.nc.Publish(c.subject, b); err != nil {
			return fmt.Errorf("collective: publish: %w", err)
		}
		if end == len(data) {
			break
		}
	}
	return nil
}

// ErrTimeout is returned when another rank's part does not arrive in time.
var ErrTimeout = errors.New("collective: timed out waiting for another rank")

// gather publishes data as op seq and returns every rank's part, in rank
// order (this rank's is data itself).
func (c *NATS) gather(data []float32) ([][]float32, uint64, error) {
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	if err := c.publish(seq, data); err != nil {
		return nil, seq, err
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
		for {
			p := c.parts[key{seq, r}]
			if p != nil && p.got >= len(p.data) {
				if len(p.data) != len(data) {
					return nil, seq, fmt.Errorf("collective: rank %d sent %d elements, rank %d has %d", r, len(p.data), c.rank, len(data))
				}
				out[r] = p.data
				delete(c.parts, key{seq, r})
				break
			}
			if c.closed {
				return nil, seq, errors.New("collective: closed")
			}
			if time.Now().After(deadline) {
				return nil, seq, fmt.Errorf("%w %d (op %d, %s)", ErrTimeout, r, seq, c.timeout)
			}
			c.cond.Wait()
		}
	}
	return out, seq, nil
}

// AllReduce replaces buf with the sum over all ranks, added in rank order.
func (c *NATS) AllReduce(buf []float32) error {
	parts, _, err := c.gather(buf)
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
	parts, _, err := c.gather(local)
	if err != nil {
		return err
	}
	for r, p := range parts {
		copy(out[r*len(local):], p)
	}
	return nil
}
