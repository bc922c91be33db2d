package collective

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
)

func conns(t *testing.T, n int) []*nats.Conn {
	t.Helper()
	srv := testkit.NATS(t)
	var out []*nats.Conn
	for range n {
		out = append(out, testkit.Connect(t, srv))
	}
	return out
}

// Ranks 1 and 2 ask before rank 0 is there; all end with rank 0's id, which
// it made once.
func TestShareID(t *testing.T) {
	const world = 3
	nc := conns(t, world)
	subj, _ := wire.NewSubjects("share")
	subject := subj.NCCL(7)
	id := []byte("the-unique-id-of-the-communicator")
	made := 0
	mk := func() ([]byte, error) { made++; return id, nil }
	got := make([][]byte, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 1; r < world; r++ {
		wg.Go(func() { got[r], errs[r] = ShareID(nc[r], subject, r, world, 5*time.Second, nil) })
	}
	time.Sleep(100 * time.Millisecond) // the others are asking already
	got[0], errs[0] = ShareID(nc[0], subject, 0, world, 5*time.Second, mk)
	wg.Wait()
	for r := range world {
		if errs[r] != nil || !bytes.Equal(got[r], id) {
			t.Fatalf("rank %d: %q, %v", r, got[r], errs[r])
		}
	}
	if made != 1 {
		t.Fatalf("the id was made %d times", made)
	}

	// One rank: no NATS traffic at all.
	one, err := ShareID(nil, subject, 0, 1, time.Second, mk)
	if err != nil || !bytes.Equal(one, id) {
		t.Fatalf("world of one: %q, %v", one, err)
	}
	// Rank 0's failure to make the id is its error.
	if _, err := ShareID(nil, subject, 0, 1, time.Second, func() ([]byte, error) { return nil, errors.New("no NCCL") }); err == nil ||
		err.Error() != "no NCCL" {
		t.Fatalf("mk error: %v", err)
	}
}

func TestShareIDFailures(t *testing.T) {
	nc := conns(t, 2)
	subj, _ := wire.NewSubjects("share")
	mk := func() ([]byte, error) { return []byte{1, 2, 3}, nil }
	// Nobody answers rank 1; nobody asks rank 0.
	if _, err := ShareID(nc[1], subj.NCCL(1), 1, 2, 300*time.Millisecond, nil); err == nil ||
		!strings.Contains(err.Error(), "rank 0 did not answer") {
		t.Fatalf("rank 1 alone: %v", err)
	}
	if _, err := ShareID(nc[0], subj.NCCL(2), 0, 2, 300*time.Millisecond, mk); err == nil ||
		!strings.Contains(err.Error(), "0 of the 1 other ranks asked") {
		t.Fatalf("rank 0 alone: %v", err)
	}
	// Rank 1 of a world of 3 asking a rank 0 of a world of 2.
	done := make(chan error, 1)
	go func() {
		_, err := ShareID(nc[0], subj.NCCL(3), 0, 2, time.Second, mk)
		done <- err
	}()
	_, err := ShareID(nc[1], subj.NCCL(3), 1, 3, time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "rank 0 has a world of 2, rank 1 of 3") {
		t.Fatalf("mismatched worlds: %v", err)
	}
	<-done
	if _, err := ShareID(nc[0], subj.NCCL(4), 2, 2, time.Second, mk); err == nil {
		t.Fatal("rank 2 of 2 accepted")
	}
}
