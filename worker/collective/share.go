package collective

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ShareID hands an id made by rank 0 (an NCCL communicator's unique id) to
// every rank of a world of world ranks, over NATS on subject (one per load:
// wire.Subjects.NCCL(epoch)). Rank 0 calls mk, answers the others'
// requests with the id until each has asked, and returns it; the other
// ranks ask until rank 0 answers (it may subscribe after they start). A
// rank that does not ask within timeout, or a rank 0 that does not answer,
// is an error rather than an NCCL init that never returns.
//
// Request: asker rank, world size (uint32 little-endian each). Reply: 0 and
// the id, or 1 and a message (a world size that does not match).
func ShareID(nc *nats.Conn, subject string, rank, world int, timeout time.Duration, mk func() ([]byte, error)) ([]byte, error) {
	if rank < 0 || rank >= world {
		return nil, fmt.Errorf("collective: share id: rank %d of %d", rank, world)
	}
	if rank == 0 {
		id, err := mk()
		if err != nil {
			return nil, err
		}
		if world == 1 {
			return id, nil
		}
		return serveID(nc, subject, world, timeout, id)
	}
	return askID(nc, subject, rank, world, timeout)
}

func serveID(nc *nats.Conn, subject string, world int, timeout time.Duration, id []byte) ([]byte, error) {
	var mu sync.Mutex
	asked := map[int]bool{}
	done := make(chan struct{})
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if len(m.Data) != 8 {
			return
		}
		r := int(binary.LittleEndian.Uint32(m.Data))
		w := int(binary.LittleEndian.Uint32(m.Data[4:]))
		if w != world {
			_ = m.Respond(append([]byte{1}, fmt.Sprintf("rank 0 has a world of %d, rank %d of %d", world, r, w)...))
			return
		}
		_ = m.Respond(append([]byte{0}, id...))
		mu.Lock()
		defer mu.Unlock()
		if r > 0 && r < world && !asked[r] {
			asked[r] = true
			if len(asked) == world-1 {
				close(done)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("collective: share id: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("collective: share id: %w", err)
	}
	select {
	case <-done:
		return id, nil
	case <-time.After(timeout):
		mu.Lock()
		n := len(asked)
		mu.Unlock()
		return nil, fmt.Errorf("collective: share id: %d of the %d other ranks asked for the id within %s", n, world-1, timeout)
	}
}

func askID(nc *nats.Conn, subject string, rank, world int, timeout time.Duration) ([]byte, error) {
	req := make([]byte, 8)
	binary.LittleEndian.PutUint32(req, uint32(rank))
	binary.LittleEndian.PutUint32(req[4:], uint32(world))
	deadline := time.Now().Add(timeout)
	for {
		wait := min(250*time.Millisecond, time.Until(deadline))
		if wait <= 0 {
			return nil, fmt.Errorf("collective: share id: rank 0 did not answer on %s within %s", subject, timeout)
		}
		m, err := nc.Request(subject, req, wait)
		switch {
		case err == nil && len(m.Data) > 1 && m.Data[0] == 0:
			return m.Data[1:], nil
		case err == nil && len(m.Data) > 0 && m.Data[0] == 1:
			return nil, fmt.Errorf("collective: share id: %s", m.Data[1:])
		case err == nil:
			return nil, errors.New("collective: share id: an empty reply")
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout):
			// Rank 0 is not there yet.
			time.Sleep(min(20*time.Millisecond, max(time.Until(deadline), 0)))
		default:
			return nil, fmt.Errorf("collective: share id: %w", err)
		}
	}
}
