package sched

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/profiles"
)

// kvFake is a fakeExec that reports a KV geometry and checks the block
// tables the scheduler sends: every position a step writes or reads is
// mapped, sliding entries inside the window are live, and no block is held
// by two live sequences at once.
type kvFake struct {
	*fakeExec
	geo    KVGeometry
	mu     sync.Mutex
	owner  map[string]uint64 // "f12" / "s3" → sequence id
	tables map[uint64][2][]int
	bad    atomic.Value
}

func newKVFake(g KVGeometry) *kvFake {
	return &kvFake{fakeExec: newFake(), geo: g, owner: map[string]uint64{}, tables: map[uint64][2][]int{}}
}

func (f *kvFake) Capabilities() Capabilities {
	return Capabilities{KVTokens: f.geo.MaxTokens(), KV: &f.geo}
}

func (f *kvFake) fail(format string, a ...any) {
	if f.bad.Load() == nil {
		f.bad.Store(fmt.Sprintf(format, a...))
	}
}

func (f *kvFake) Step(ctx context.Context, b *Batch) error {
	f.mu.Lock()
	bs, w := f.geo.BlockSize, f.geo.SlidingWindow
	for _, st := range b.Seqs {
		end := st.Pos + len(st.Tokens)
		if len(st.Blocks)*bs < end || len(st.SlidingBlocks)*bs < end {
			f.fail("seq %d: tables %v/%v do not cover %d positions", st.ID, st.Blocks, st.SlidingBlocks, end)
		}
		for _, blk := range st.Blocks {
			if blk < 0 || blk >= f.geo.Blocks {
				f.fail("seq %d: full block %d out of range", st.ID, blk)
			}
			f.claim(fmt.Sprint("f", blk), st.ID)
		}
		for i, blk := range st.SlidingBlocks {
			visible := (i+1)*bs > st.Pos-w // overlaps the window of the step's first token
			if blk < 0 {
				if visible {
					f.fail("seq %d: sliding block %d released but in the window (pos %d)", st.ID, i, st.Pos)
				}
				continue
			}
			if blk >= f.geo.SlidingBlocks {
				f.fail("seq %d: sliding block %d out of range", st.ID, blk)
			}
			f.claim(fmt.Sprint("s", blk), st.ID)
		}
		f.tables[st.ID] = [2][]int{append([]int(nil), st.Blocks...), append([]int(nil), st.SlidingBlocks...)}
	}
	f.mu.Unlock()
	return f.fakeExec.Step(ctx, b)
}

// claim records that seq holds blk; a block still held by another live
// sequence is a double allocation.
func (f *kvFake) claim(blk string, seq uint64) {
	if o, ok := f.owner[blk]; ok && o != seq {
		if _, live := f.tables[o]; live && holds(f.tables[o], blk) {
			f.fail("block %s given to %d while %d holds it", blk, seq, o)
		}
	}
	f.owner[blk] = seq
}

func holds(t [2][]int, blk string) bool {
	for _, b := range t[0] {
		if fmt.Sprint("f", b) == blk {
			return true
		}
	}
	for _, b := range t[1] {
		if b >= 0 && fmt.Sprint("s", b) == blk {
			return true
		}
	}
	return false
}

func (f *kvFake) Release(ids []uint64) {
	f.mu.Lock()
	for _, id := range ids {
		delete(f.tables, id)
	}
	f.mu.Unlock()
	f.fakeExec.Release(ids)
}

// A cache too small for every request at once: the scheduler's tables are
// always consistent, it preempts and recomputes, every request completes
// with the right tokens, and all blocks are free at the end.
func TestSchedulerOwnsBlockTables(t *testing.T) {
	g := KVGeometry{BlockSize: 4, Blocks: 24, SlidingBlocks: 12, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 16, 6, 100)
	var preemptions atomic.Int64
	s := New(f, profiles.Set{"p": p}, Options{OnPreempt: func(string) { preemptions.Add(1) }})
	defer s.Close()
	var streams []*Stream
	for i := range 10 {
		st, err := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(5 + i), MaxTokens: 30})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	for i, st := range streams {
		toks, fin := collect(t, st)
		if fin.Reason != FinishLength || len(toks) != 30 {
			t.Fatalf("request %d: %+v after %d tokens", i, fin, len(toks))
		}
		for j, tk := range toks {
			if tk.ID != 1000+5+i+j {
				t.Fatalf("request %d token %d = %d", i, j, tk.ID)
			}
		}
	}
	if bad := f.bad.Load(); bad != nil {
		t.Fatal(bad)
	}
	if preemptions.Load() == 0 {
		t.Fatal("the cache never ran out: the test does not exercise preemption")
	}
	checkFor(t, time.Second, func() bool {
		u := s.KV()
		return u != nil && u.FreeBlocks == g.Blocks && u.SlidingFree == g.SlidingBlocks && u.Sequences == 0
	})
	t.Logf("%d preemptions", preemptions.Load())
}

// Long sequences keep a bounded number of sliding blocks: the ones behind
// the window go back to the pool as the sequence advances.
func TestSlidingBlocksTrimmed(t *testing.T) {
	g := KVGeometry{BlockSize: 4, Blocks: 64, SlidingBlocks: 4, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 4, 8, 10)
	s := New(f, profiles.Set{"p": p}, Options{})
	defer s.Close()
	st, _ := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(20), MaxTokens: 100})
	toks, fin := collect(t, st)
	if fin.Reason != FinishLength || len(toks) != 100 {
		t.Fatalf("%+v after %d tokens", fin, len(toks))
	}
	if bad := f.bad.Load(); bad != nil {
		t.Fatal(bad)
	}
}
