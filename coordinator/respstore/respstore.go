// Package respstore keeps the stored responses of the Responses API
// (POST /v1/responses with store:true, GET and DELETE /v1/responses/{id})
// as opaque bytes in a NATS JetStream key-value bucket.
//
// JetStream rather than the coordinator's memory, because a stored
// response is a promise to the client: with the embedded server
// (shared/natsd with a StoreDir) the bucket lives in JetStream's file
// store, so responses survive a coordinator restart; with an external NATS
// server every coordinator connected to it sees the same responses.
//
// The bucket is bounded twice, and neither bound ever refuses a write:
//
//   - by size: a KV bucket's stream is created by nats.go with
//     Discard: DiscardNew, under which a full bucket refuses every Put.
//     nats-server lets a stream's discard policy change on update (its
//     update check forbids changing storage, retention to or from work
//     queue, and undoing Sealed, DenyDelete, DenyPurge, message TTLs or
//     counters, but not Discard; nats.go's CreateKeyValue itself updates
//     the discard policy of buckets made before it switched to DiscardNew),
//     so Open switches the stream to DiscardOld: when a write would exceed
//     MaxBytes, the server drops the oldest messages, that is the responses
//     stored longest ago (history is 1, so a key has one message at most).
//   - by age: entries older than TTL expire through the stream's MaxAge.
//     The server checks ages on a timer no more often than every 250 ms
//     (and its clock ticks every 100 ms), so an entry may outlive TTL by a
//     fraction of a second; Get compares the entry's time with TTL itself,
//     so that an expired entry is never returned.
//
// Delete purges the key's messages from the stream instead of writing the
// KV delete marker: the bucket's stream denies message deletes but allows
// purges, and a purge leaves no marker behind, so the bucket's entries and
// bytes (Status, the size bound) count live responses only.
package respstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	// DefaultBucket is the KV bucket's name (its stream is KV_gptoss_responses).
	DefaultBucket = "gptoss_responses"
	// DefaultMaxBytes bounds the bucket at 1 GiB.
	DefaultMaxBytes = 1 << 30
	// DefaultTTL is OpenAI's retention of stored responses.
	DefaultTTL = 30 * 24 * time.Hour
)

// MaxValueSize is the largest value the bucket's stream accepts: a long
// conversation with its reasoning fits, and JetStream stores a value as one
// message. A value must also fit the server's max payload (8 MiB for
// shared/natsd, 1 MiB for a default nats-server) and the bucket (MaxBytes);
// Put names the limit it hit.
const MaxValueSize = 32 << 20

// maxKeyLen bounds an id. Response ids are "resp_" and 32 to 64 hex
// digits; the bound only keeps client-supplied junk from becoming a long
// NATS subject.
const maxKeyLen = 256

// duplicatesWindow is the window nats.go gives KV buckets (2 minutes,
// or the TTL when shorter: nats-server refuses a window longer than MaxAge).
const duplicatesWindow = 2 * time.Minute

// msgOverhead is a generous bound on what the file store counts for a
// message besides its value (its subject, its header, its record framing),
// so that a value that passes Put's check fits the bucket with room left.
const msgOverhead = 1 << 10

var (
	// ErrNotFound is returned for an id that is not stored: never put,
	// deleted, expired, dropped to make room, or not a valid id at all.
	ErrNotFound = errors.New("respstore: response not found")
	// ErrInvalidID is returned by Put for an id that is not a NATS KV key.
	ErrInvalidID = errors.New("respstore: invalid response id")
	// ErrTooLarge is returned by Put for a value over the size limit.
	ErrTooLarge = errors.New("respstore: value too large")
)

// Options configures Open.
type Options struct {
	// Conn is the connection to NATS, with JetStream (required). The store
	// does not close it.
	Conn *nats.Conn
	// Bucket is the KV bucket's name; "" means DefaultBucket.
	Bucket string
	// MaxBytes bounds the bucket's size; the oldest entries are dropped
	// to make room. 0 means DefaultMaxBytes. The whole bound is reserved
	// against the server's JetStream storage when the bucket is created or
	// grown (natsd.Options.JetStreamMaxStore).
	MaxBytes int64
	// TTL is how long an entry is kept; 0 means DefaultTTL. JetStream
	// refuses ages under 100 ms.
	TTL time.Duration
	// Logger receives the store's logs; nil discards them.
	Logger *zap.Logger
}

// Status is the bucket's state, for /health.
type Status struct {
	Bucket string `json:"bucket"`
	// Entries is the number of stored responses.
	Entries uint64 `json:"entries"`
	// Bytes is what they take in the stream (values and per-message
	// overhead).
	Bytes uint64 `json:"bytes"`
	// MaxBytes is the bound past which the oldest entries are dropped.
	MaxBytes int64 `json:"max_bytes"`
	// TTL is how long an entry is kept.
	TTL time.Duration `json:"ttl"`
	// MaxValueSize is the largest value Put accepts now (it depends on the
	// server's max payload).
	MaxValueSize int `json:"max_value_size"`
}

// Store is a bucket of stored responses. It is safe for concurrent use,
// and by several coordinators on one bucket.
type Store struct {
	nc       *nats.Conn
	kv       jetstream.KeyValue
	stream   jetstream.Stream
	bucket   string
	subjPre  string // "$KV.<bucket>."
	ttl      time.Duration
	maxValue int // MaxValueSize, or less for a small bucket
}

// Open creates the bucket, or adopts an existing one and applies the
// options' bounds to it, and switches its stream to DiscardOld. It is
// idempotent: any number of coordinators may open the same bucket, and
// the last to open it sets its bounds.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Conn == nil {
		return nil, errors.New("respstore: no NATS connection")
	}
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("respstore: negative max bytes %d", o.MaxBytes)
	}
	if o.MaxBytes <= 2*msgOverhead {
		return nil, fmt.Errorf("respstore: max bytes %d leaves no room for a value", o.MaxBytes)
	}
	if o.TTL < 100*time.Millisecond {
		// Negative, or under JetStream's smallest MaxAge.
		return nil, fmt.Errorf("respstore: TTL %s is under JetStream's 100ms minimum", o.TTL)
	}
	if !validBucket(o.Bucket) {
		return nil, fmt.Errorf("respstore: invalid bucket name %q (letters, digits, '-' and '_')", o.Bucket)
	}
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("respstore: jetstream: %w", err)
	}
	// The stream's MaxMsgSize counts a message's header too, and a value
	// must leave room in the bucket: a message larger than MaxBytes would
	// be stored and then dropped with everything else.
	maxValue := int(min(int64(MaxValueSize), o.MaxBytes-msgOverhead))
	maxMsgSize := int32(maxValue + msgOverhead) // at most MaxValueSize + 1 KiB
	streamName := "KV_" + o.Bucket
	stream, err := js.Stream(ctx, streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:       o.Bucket,
			Description:  "gptoss stored responses (/v1/responses)",
			History:      1,
			MaxBytes:     o.MaxBytes,
			TTL:          o.TTL,
			MaxValueSize: maxMsgSize,
			Storage:      jetstream.FileStorage,
		})
		// Another coordinator may have created it in between: adopt it.
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("respstore: create bucket %s: %w", o.Bucket, err)
		}
		stream, err = js.Stream(ctx, streamName)
	}
	if err != nil {
		return nil, fmt.Errorf("respstore: bucket %s: %w", o.Bucket, err)
	}
	cur := stream.CachedInfo().Config
	if cur.MaxMsgsPerSubject < 1 || len(cur.Subjects) != 1 || cur.Subjects[0] != "$KV."+o.Bucket+".>" {
		return nil, fmt.Errorf("respstore: stream %s is not a KV bucket", streamName)
	}
	want := cur
	want.MaxBytes = o.MaxBytes
	want.MaxAge = o.TTL
	want.Duplicates = min(duplicatesWindow, o.TTL)
	want.MaxMsgSize = maxMsgSize
	want.Discard = jetstream.DiscardOld
	if want.MaxBytes != cur.MaxBytes || want.MaxAge != cur.MaxAge || want.Duplicates != cur.Duplicates ||
		want.MaxMsgSize != cur.MaxMsgSize || want.Discard != cur.Discard {
		// Lowering MaxBytes drops the oldest entries at once; lowering
		// MaxAge expires them at the server's next age check.
		if stream, err = js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("respstore: update bucket %s (max bytes %d, TTL %s, discard old): %w", o.Bucket, o.MaxBytes, o.TTL, err)
		}
		o.Logger.Info("response store bucket configured",
			zap.String("bucket", o.Bucket), zap.Int64("max_bytes", o.MaxBytes), zap.Duration("ttl", o.TTL),
			zap.Int64("was_max_bytes", cur.MaxBytes), zap.Duration("was_ttl", cur.MaxAge), zap.Stringer("was_discard", cur.Discard))
	}
	kv, err := js.KeyValue(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("respstore: bucket %s: %w", o.Bucket, err)
	}
	s := &Store{
		nc:       o.Conn,
		kv:       kv,
		stream:   stream,
		bucket:   o.Bucket,
		subjPre:  "$KV." + o.Bucket + ".",
		ttl:      o.TTL,
		maxValue: maxValue,
	}
	st := stream.CachedInfo().State
	o.Logger.Info("response store open",
		zap.String("bucket", o.Bucket), zap.Uint64("entries", st.Msgs), zap.Uint64("bytes", st.Bytes),
		zap.Int64("max_bytes", o.MaxBytes), zap.Duration("ttl", o.TTL))
	return s, nil
}

// Put stores value under id, replacing what was there. It fails only for
// an invalid id (ErrInvalidID), a value over the limit (ErrTooLarge) or
// NATS itself; a full bucket drops its oldest entries instead.
func (s *Store) Put(ctx context.Context, id string, value []byte) error {
	if !validKey(id) {
		return fmt.Errorf("respstore: put %q: %w", clip(id), ErrInvalidID)
	}
	if limit := s.valueLimit(); len(value) > limit {
		return fmt.Errorf("respstore: put %s: %w: %d bytes, the limit is %d bytes", id, ErrTooLarge, len(value), limit)
	}
	if _, err := s.kv.Put(ctx, id, value); err != nil {
		return fmt.Errorf("respstore: put %s (%d bytes): %w", id, len(value), err)
	}
	return nil
}

// Get returns the value stored under id: ErrNotFound when there is none,
// including for an id that could not have been stored.
func (s *Store) Get(ctx context.Context, id string) ([]byte, error) {
	if !validKey(id) {
		return nil, ErrNotFound
	}
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("respstore: get %s: %w", id, err)
	}
	// The server expires entries on a timer: one past its TTL may still
	// be there for a moment. Created is the server's clock, so with an
	// external server this is off by the clocks' skew, which only a TTL
	// of seconds would notice.
	if time.Since(e.Created()) >= s.ttl {
		return nil, ErrNotFound
	}
	return e.Value(), nil
}

// Delete removes the value stored under id: ErrNotFound when there is
// none. Two concurrent Deletes of one id may both succeed.
func (s *Store) Delete(ctx context.Context, id string) error {
	if _, err := s.Get(ctx, id); err != nil {
		return err // ErrNotFound, or already wrapped
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(s.subjPre+id)); err != nil {
		return fmt.Errorf("respstore: delete %s: %w", id, err)
	}
	return nil
}

// Status reports the bucket's entries, bytes and bounds, as the server
// has them now (another coordinator may have changed the bounds).
func (s *Store) Status(ctx context.Context) (Status, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("respstore: status of %s: %w", s.bucket, err)
	}
	return Status{
		Bucket:       s.bucket,
		Entries:      info.State.Msgs,
		Bytes:        info.State.Bytes,
		MaxBytes:     info.Config.MaxBytes,
		TTL:          info.Config.MaxAge,
		MaxValueSize: s.valueLimit(),
	}, nil
}

// valueLimit is the largest value Put sends: the bucket's limit, or less
// when the server's max payload is smaller (a value travels as one
// message, and its publish carries no header).
func (s *Store) valueLimit() int {
	limit := s.maxValue
	if mp := s.nc.MaxPayload(); mp > 0 && int(mp) < limit {
		limit = int(mp)
	}
	return limit
}

// validKey reports whether id is a NATS KV key: letters, digits and
// "-/_=.", no empty subject token (a leading, trailing or doubled dot),
// at most maxKeyLen bytes. Client-supplied ids reach Get and Delete, so
// anything else must never reach NATS.
func validKey(id string) bool {
	if id == "" || len(id) > maxKeyLen || id[0] == '.' || id[len(id)-1] == '.' || strings.Contains(id, "..") {
		return false
	}
	for i := range len(id) {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '/', c == '_', c == '=', c == '.':
		default:
			return false
		}
	}
	return true
}

// validBucket reports whether name is a KV bucket name.
func validBucket(name string) bool {
	if name == "" {
		return false
	}
	for i := range len(name) {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// clip shortens an id for an error message.
func clip(id string) string {
	if len(id) > 64 {
		return id[:64] + "..."
	}
	return id
}
