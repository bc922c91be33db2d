package respstore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/gptoss/server/shared/natsd"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
)

// server starts the embedded server with JetStream under dir, as the
// coordinator runs it.
func server(t *testing.T, dir string) *natsd.Server {
	t.Helper()
	srv, err := natsd.Start(natsd.Options{StoreDir: dir, JetStreamMaxStore: 4 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func open(t *testing.T, nc *nats.Conn, o Options) *Store {
	t.Helper()
	o.Conn = nc
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	s, err := Open(testkit.Context(t, 10*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newStore(t *testing.T, o Options) (*Store, *nats.Conn) {
	t.Helper()
	nc := testkit.Connect(t, server(t, t.TempDir()))
	return open(t, nc, o), nc
}

func id(i int) string { return fmt.Sprintf("resp_%032x", i) }

func mustGet(t *testing.T, s *Store, id string, want []byte) {
	t.Helper()
	got, err := s.Get(testkit.Context(t, 5*time.Second), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: %d bytes %.40q, want %d bytes %.40q", id, len(got), got, len(want), want)
	}
}

func mustNotFound(t *testing.T, s *Store, id string) {
	t.Helper()
	if v, err := s.Get(testkit.Context(t, 5*time.Second), id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get %.80q: %d bytes, %v; want ErrNotFound", id, len(v), err)
	}
}

func TestPutGetDelete(t *testing.T) {
	s, _ := newStore(t, Options{})
	ctx := testkit.Context(t, 10*time.Second)
	mustNotFound(t, s, id(1))
	if err := s.Delete(ctx, id(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing id: %v", err)
	}
	if err := s.Put(ctx, id(1), []byte(`{"id":"one"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, id(2), []byte(`{"id":"two"}`)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id(1), []byte(`{"id":"one"}`))
	// A Put replaces.
	if err := s.Put(ctx, id(1), []byte(`{"id":"one","v":2}`)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id(1), []byte(`{"id":"one","v":2}`))
	// An empty value is a value.
	if err := s.Put(ctx, id(3), nil); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id(3), []byte{})
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 3 || st.Bytes == 0 || st.Bucket != DefaultBucket || st.MaxBytes != DefaultMaxBytes || st.TTL != DefaultTTL {
		t.Fatalf("status %+v", st)
	}
	if st.MaxValueSize != wire.MaxMessage {
		t.Fatalf("max value size %d, want the server's max payload %d", st.MaxValueSize, wire.MaxMessage)
	}

	for _, i := range []int{1, 2, 3} {
		if err := s.Delete(ctx, id(i)); err != nil {
			t.Fatal(err)
		}
		mustNotFound(t, s, id(i))
		if err := s.Delete(ctx, id(i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	}
	// Deleting leaves nothing behind (no delete markers).
	st, err = s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("status after deleting everything %+v", st)
	}
	// A deleted id can be stored again.
	if err := s.Put(ctx, id(1), []byte("again")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id(1), []byte("again"))
}

func TestInvalidIDs(t *testing.T) {
	s, _ := newStore(t, Options{})
	ctx := testkit.Context(t, 10*time.Second)
	bad := []string{
		"", ".", "a.", ".a", "a..b", "a b", "a*", "*", ">", "a.>", "resp_\x00", "résumé", "resp_1\n",
		"$KV.gptoss_responses.x", "a\tb", "a:b", "a%2e", strings.Repeat("a", maxKeyLen+1),
		strings.Repeat("\xff", 10),
	}
	for _, b := range bad {
		// Exactly ErrNotFound: nothing from NATS wrapped in it.
		if v, err := s.Get(ctx, b); !errors.Is(err, ErrNotFound) || errors.Unwrap(err) != nil {
			t.Errorf("get %.40q: %v %v; want ErrNotFound", b, v, err)
		}
		if err := s.Delete(ctx, b); !errors.Is(err, ErrNotFound) || errors.Unwrap(err) != nil {
			t.Errorf("delete %.40q: %v; want ErrNotFound", b, err)
		}
		if err := s.Put(ctx, b, []byte("x")); !errors.Is(err, ErrInvalidID) {
			t.Errorf("put %.40q: %v; want ErrInvalidID", b, err)
		}
	}
	// Everything a NATS KV key may hold is an id.
	for _, good := range []string{"resp_0123abcdef", "a", "a.b", "A-Z_0=9/x", strings.Repeat("a", maxKeyLen)} {
		if err := s.Put(ctx, good, []byte(good)); err != nil {
			t.Errorf("put %.40q: %v", good, err)
			continue
		}
		mustGet(t, s, good, []byte(good))
	}
}

func TestTooLarge(t *testing.T) {
	s, _ := newStore(t, Options{})
	ctx := testkit.Context(t, 30*time.Second)
	// The embedded server's max payload (8 MiB) is the limit here, under
	// MaxValueSize.
	limit := wire.MaxMessage
	if err := s.Put(ctx, id(1), make([]byte, limit)); err != nil {
		t.Fatalf("put of %d bytes: %v", limit, err)
	}
	mustGet(t, s, id(1), make([]byte, limit))
	err := s.Put(ctx, id(2), make([]byte, limit+1))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit+1)) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Fatalf("put over the limit: %v", err)
	}
	mustNotFound(t, s, id(2))

	// A small bucket bounds values by its own size.
	small := open(t, s.nc, Options{Bucket: "small", MaxBytes: 64 << 10})
	st, err := small.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxValueSize != 63<<10 {
		t.Fatalf("small bucket's max value %d", st.MaxValueSize)
	}
	if err := small.Put(ctx, id(1), make([]byte, st.MaxValueSize)); err != nil {
		t.Fatal(err)
	}
	mustGet(t, small, id(1), make([]byte, st.MaxValueSize))
	if err := small.Put(ctx, id(2), make([]byte, st.MaxValueSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("put over a small bucket's limit: %v", err)
	}
}

// TestSizeBoundDropsOldest writes four times what the bucket holds: no Put
// fails, the newest entries stay, the oldest go.
func TestSizeBoundDropsOldest(t *testing.T) {
	const maxBytes = 256 << 10
	const size = 10 << 10
	s, nc := newStore(t, Options{Bucket: "bounded", MaxBytes: maxBytes})
	ctx := testkit.Context(t, 30*time.Second)
	const n = 4 * maxBytes / size
	for i := range n {
		v := bytes.Repeat([]byte{byte(i)}, size)
		if err := s.Put(ctx, id(i), v); err != nil {
			t.Fatalf("put %d of %d into a full bucket: %v", i, n, err)
		}
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes > maxBytes || st.Entries == 0 || st.Entries > maxBytes/size {
		t.Fatalf("status %+v", st)
	}
	// Exactly the newest Entries are there.
	kept := int(st.Entries)
	for i := range n {
		if i >= n-kept {
			mustGet(t, s, id(i), bytes.Repeat([]byte{byte(i)}, size))
		} else {
			mustNotFound(t, s, id(i))
		}
	}
	t.Logf("kept %d of %d entries, %d bytes of %d", kept, n, st.Bytes, maxBytes)
	if kept < maxBytes/size-2 {
		t.Fatalf("kept %d entries of %d bytes in %d bytes", kept, size, maxBytes)
	}
	// The stream is DiscardOld.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	str, err := js.Stream(ctx, "KV_bounded")
	if err != nil {
		t.Fatal(err)
	}
	if d := str.CachedInfo().Config.Discard; d != jetstream.DiscardOld {
		t.Fatalf("discard policy %v", d)
	}
}

func TestTTL(t *testing.T) {
	const ttl = 2 * time.Second
	s, _ := newStore(t, Options{TTL: ttl})
	ctx := testkit.Context(t, 30*time.Second)
	if err := s.Put(ctx, id(1), []byte("short-lived")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, id(1), []byte("short-lived"))
	time.Sleep(ttl / 2)
	if err := s.Put(ctx, id(2), []byte("younger")); err != nil {
		t.Fatal(err)
	}
	// Get never returns an entry past its TTL, whether or not the server
	// has removed it yet; the younger one has 0.8 s to go.
	time.Sleep(ttl/2 + 200*time.Millisecond)
	mustNotFound(t, s, id(1))
	mustGet(t, s, id(2), []byte("younger"))
	// The server removes expired entries within a fraction of a second
	// (its age check runs at most every 250 ms).
	testkit.Eventually(t, ttl+2*time.Second, "the server to expire both entries", func() bool {
		st, err := s.Status(ctx)
		return err == nil && st.Entries == 0 && st.Bytes == 0
	})
	mustNotFound(t, s, id(2))
}

func TestSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := server(t, dir)
	s := open(t, testkit.Connect(t, srv), Options{})
	ctx := testkit.Context(t, 30*time.Second)
	for i := range 10 {
		if err := s.Put(ctx, id(i), []byte(id(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, id(3)); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()

	srv = server(t, dir)
	s = open(t, testkit.Connect(t, srv), Options{})
	for i := range 10 {
		if i == 3 {
			mustNotFound(t, s, id(i))
			continue
		}
		mustGet(t, s, id(i), []byte(id(i)))
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 9 {
		t.Fatalf("status after restart %+v", st)
	}
}

func TestTwoStoresOneBucket(t *testing.T) {
	srv := server(t, t.TempDir())
	a := open(t, testkit.Connect(t, srv), Options{})
	b := open(t, testkit.Connect(t, srv), Options{})
	ctx := testkit.Context(t, 10*time.Second)
	if err := a.Put(ctx, id(1), []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, id(2), []byte("from b")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, b, id(1), []byte("from a"))
	mustGet(t, a, id(2), []byte("from b"))
	if err := b.Delete(ctx, id(1)); err != nil {
		t.Fatal(err)
	}
	mustNotFound(t, a, id(1))
	if err := a.Delete(ctx, id(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of what the other deleted: %v", err)
	}
}

// TestReopenAppliesBounds: a coordinator opening the bucket with other
// bounds changes them, and a bucket made by plain nats.go (DiscardNew)
// becomes DiscardOld.
func TestReopenAppliesBounds(t *testing.T) {
	srv := server(t, t.TempDir())
	nc := testkit.Connect(t, srv)
	ctx := testkit.Context(t, 10*time.Second)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "pre", MaxBytes: 1 << 20, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	s := open(t, nc, Options{Bucket: "pre", MaxBytes: 2 << 20, TTL: time.Hour})
	if err := s.Put(ctx, id(1), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	check := func(maxBytes int64, ttl time.Duration) {
		t.Helper()
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.MaxBytes != maxBytes || st.TTL != ttl {
			t.Fatalf("status %+v, want max bytes %d, TTL %s", st, maxBytes, ttl)
		}
		str, err := js.Stream(ctx, "KV_pre")
		if err != nil {
			t.Fatal(err)
		}
		if c := str.CachedInfo().Config; c.Discard != jetstream.DiscardOld || c.Duplicates > ttl || c.MaxAge != ttl {
			t.Fatalf("stream config %+v", c)
		}
	}
	check(2<<20, time.Hour)
	// The same options again change nothing; others are applied.
	open(t, nc, Options{Bucket: "pre", MaxBytes: 2 << 20, TTL: time.Hour})
	check(2<<20, time.Hour)
	open(t, nc, Options{Bucket: "pre", MaxBytes: 3 << 20, TTL: time.Minute})
	check(3<<20, time.Minute)
	mustGet(t, s, id(1), []byte("kept"))
}

func TestConcurrentPuts(t *testing.T) {
	srv := server(t, t.TempDir())
	stores := []*Store{
		open(t, testkit.Connect(t, srv), Options{}),
		open(t, testkit.Connect(t, srv), Options{}),
	}
	ctx := testkit.Context(t, 60*time.Second)
	const workers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			for i := range each {
				k := id(w*each + i)
				if err := s.Put(ctx, k, []byte(k)); err != nil {
					errs <- err
					return
				}
				if i%4 == 0 {
					if _, err := s.Get(ctx, k); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range workers * each {
		mustGet(t, stores[i%2], id(i), []byte(id(i)))
	}
	st, err := stores[0].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != workers*each {
		t.Fatalf("status %+v, want %d entries", st, workers*each)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := testkit.Context(t, 10*time.Second)
	if _, err := Open(ctx, Options{}); err == nil {
		t.Fatal("opened without a connection")
	}
	nc := testkit.Connect(t, server(t, t.TempDir()))
	for _, o := range []Options{
		{Bucket: "a.b"},
		{Bucket: "a b"},
		{TTL: 50 * time.Millisecond},
		{TTL: -time.Second},
		{MaxBytes: -1},
		{MaxBytes: 100},
	} {
		o.Conn = nc
		if _, err := Open(ctx, o); err == nil {
			t.Errorf("opened with %+v", o)
		}
	}
	// A server without JetStream.
	plain := testkit.Connect(t, testkit.NATS(t))
	if _, err := Open(ctx, Options{Conn: plain}); err == nil || !strings.Contains(err.Error(), "respstore") {
		t.Fatalf("open without JetStream: %v", err)
	}
}
