package sched

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
)

// kvFake is a fakeExec that reports a KV geometry and checks the block
// tables the scheduler sends: every position a step writes or reads is
// mapped, sliding entries inside the window are live, and no block is held
// by two live sequences at once.
type kvFake struct {
	*fakeExec
	geo    step.KVGeometry
	mu     sync.Mutex
	tables map[uint64][2][]int // live sequences' tables
	kv     map[[2]int]int      // (full block, offset) → token written there
	bad    atomic.Value
}

func newKVFake(g step.KVGeometry) *kvFake {
	return &kvFake{fakeExec: newFake(), geo: g, tables: map[uint64][2][]int{}, kv: map[[2]int]int{}}
}

func (f *kvFake) Capabilities() step.Capabilities {
	return step.Capabilities{KVTokens: f.geo.MaxTokens(), KV: &f.geo}
}

func (f *kvFake) fail(format string, a ...any) {
	if f.bad.Load() == nil {
		f.bad.Store(fmt.Sprintf(format, a...))
	}
}

func (f *kvFake) Step(ctx context.Context, b *step.Batch) error {
	f.mu.Lock()
	bs, w := f.geo.BlockSize, f.geo.SlidingWindow
	for _, st := range b.Seqs {
		end := st.Pos + len(st.Tokens)
		if len(st.Blocks)*bs < end || len(st.SlidingBlocks)*bs < end {
			f.fail("seq %d: tables %v/%v do not cover %d positions", st.ID, st.Blocks, st.SlidingBlocks, end)
			continue
		}
		for _, blk := range st.Blocks {
			if blk < 0 || blk >= f.geo.Blocks {
				f.fail("seq %d: full block %d out of range", st.ID, blk)
			}
		}
		for i, blk := range st.SlidingBlocks {
			visible := (i+1)*bs > st.Pos-w // overlaps the window of the step's first token
			if blk < 0 && visible {
				f.fail("seq %d: sliding block %d released but in the window (pos %d)", st.ID, i, st.Pos)
			}
			if blk >= f.geo.SlidingBlocks {
				f.fail("seq %d: sliding block %d out of range", st.ID, blk)
			}
		}
		if _, known := f.tables[st.ID]; !known && st.Pos > 0 {
			// A sequence that starts past 0 maps cached blocks: every
			// position before it must have been written.
			for p := range st.Pos {
				if _, ok := f.kv[[2]int{st.Blocks[p/bs], p % bs}]; !ok {
					f.fail("seq %d starts at %d but position %d of its table was never written", st.ID, st.Pos, p)
					break
				}
			}
			f.fakeExec.mu.Lock()
			f.state[st.ID] = st.Pos
			f.fakeExec.mu.Unlock()
		}
		f.tables[st.ID] = [2][]int{append([]int(nil), st.Blocks...), append([]int(nil), st.SlidingBlocks...)}
	}
	// The blocks a sequence writes must be its alone among the step's
	// sequences (whose tables are current; the scheduler's own invariant
	// check covers the rest).
	for _, st := range b.Seqs {
		f.fakeExec.mu.Lock()
		input, ok := f.input(&st)
		f.fakeExec.mu.Unlock()
		if !ok {
			continue // the fake's Step refuses it
		}
		for p := st.Pos; p < st.Pos+len(st.Tokens) && len(st.Blocks)*bs > p; p++ {
			for _, key := range []string{fmt.Sprint("f", st.Blocks[p/bs]), fmt.Sprint("s", st.SlidingBlocks[p/bs])} {
				for _, o := range b.Seqs {
					if o.ID != st.ID && holds(f.tables[o.ID], key) {
						f.fail("seq %d writes block %s that sequence %d holds", st.ID, key, o.ID)
					}
				}
			}
			f.kv[[2]int{st.Blocks[p/bs], p % bs}] = input[p-st.Pos]
		}
	}
	f.mu.Unlock()
	return f.fakeExec.Step(ctx, b)
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
	g := step.KVGeometry{BlockSize: 4, Blocks: 24, SlidingBlocks: 12, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 16, 6, 100)
	var preemptions atomic.Int64
	s := newSched(t, f, profiles.Set{"p": p}, Options{OnPreempt: func(string) { preemptions.Add(1) }, checkKV: true})
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
	testkit.Eventually(t, time.Second, "the condition", func() bool {
		u := s.KV()
		return u != nil && u.UsedBlocks == 0 && u.SlidingUsed == 0 && u.Sequences == 0 &&
			u.FreeBlocks+u.CachedBlocks == g.Blocks && u.SlidingFree+u.SlidingCached == g.SlidingBlocks
	})
	t.Logf("%d preemptions", preemptions.Load())
}

// Long sequences keep a bounded number of sliding blocks: the ones behind
// the window go back to the pool as the sequence advances.
func TestSlidingBlocksTrimmed(t *testing.T) {
	g := step.KVGeometry{BlockSize: 4, Blocks: 64, SlidingBlocks: 4, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 4, 8, 10)
	s := newSched(t, f, profiles.Set{"p": p}, Options{checkKV: true})
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

// Requests that share a prompt prefix map its cached blocks instead of
// computing them again; when the pools are tight, cached blocks nobody
// uses are evicted rather than preempting anyone; the accounting holds
// after every step (checkKV).
func TestPrefixCache(t *testing.T) {
	g := step.KVGeometry{BlockSize: 4, Blocks: 40, SlidingBlocks: 20, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 8, 64, 100)
	s := newSched(t, f, profiles.Set{"p": p}, Options{checkKV: true})
	defer s.Close()
	shared := prompt(18) // 4 full blocks shared, the rest computed
	run := func(prompts [][]int) {
		t.Helper()
		var streams []*Stream
		for _, pr := range prompts {
			st, err := s.Submit(context.Background(), &Request{Profile: p, Prompt: pr, MaxTokens: 6})
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, st)
		}
		for i, st := range streams {
			toks, fin := collect(t, st)
			if fin.Reason != FinishLength || len(toks) != 6 || toks[0].ID != 1000+len(prompts[i]) {
				t.Fatalf("request %d: %+v, tokens %v", i, fin, toks)
			}
		}
	}
	run([][]int{shared}) // fills the cache
	var same [][]int
	for range 3 {
		same = append(same, shared)
	}
	run(same)
	// The pools' figures are published between steps and when idle: the
	// streams can end before the last publication.
	var u *KVUsage
	if !testkit.Within(2*time.Second, func() bool { u = s.KV(); return u.PrefixHits >= 3*4 }) {
		t.Fatalf("prefix hits %d of %d lookups, want at least 12", u.PrefixHits, u.PrefixLookups)
	}
	if bad := f.bad.Load(); bad != nil {
		t.Fatal(bad)
	}
	// Many different prompts: the cache must give its blocks back.
	var many [][]int
	for i := range 12 {
		pr := prompt(30)
		pr[0] = 500 + i
		many = append(many, pr)
	}
	run(many)
	if bad := f.bad.Load(); bad != nil {
		t.Fatal(bad)
	}
	testkit.Eventually(t, time.Second, "the condition", func() bool {
		u := s.KV()
		return u.UsedBlocks == 0 && u.CachedBlocks > 0 && u.FreeBlocks+u.CachedBlocks == g.Blocks
	})
}

// With the cache off nothing is shared.
func TestPrefixCacheOff(t *testing.T) {
	g := step.KVGeometry{BlockSize: 4, Blocks: 40, SlidingBlocks: 20, SlidingWindow: 8}
	f := newKVFake(g)
	p := testProfile("p", 8, 64, 100)
	s := newSched(t, f, profiles.Set{"p": p}, Options{checkKV: true, NoPrefixCache: true})
	defer s.Close()
	for range 2 {
		st, _ := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(18), MaxTokens: 3})
		if _, fin := collect(t, st); fin.Reason != FinishLength {
			t.Fatalf("%+v", fin)
		}
	}
	if u := s.KV(); u.PrefixHits != 0 || u.CachedBlocks != 0 {
		t.Fatalf("cache off: %+v", u)
	}
}

// FuzzKVManager drives the block manager through random sequences of what
// the scheduler does (admit with a prefix match, reserve chunks, remember
// filled blocks, preempt, finish) over a few shared prompts, checking the
// accounting after every operation and that a sequence's tables always
// cover what it reserved, with -1 only behind the window.
func FuzzKVManager(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{3, 3, 3, 200, 7, 7, 7, 100, 9, 9, 250, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		g := step.KVGeometry{BlockSize: 4, Blocks: 24, SlidingBlocks: 10, SlidingWindow: 8}
		m := newKVManager(g, true)
		prompts := [][]int{prompt(13), prompt(21), append(prompt(9), 77, 78, 79, 80), prompt(5)}
		var live []*sequence
		for i, op := range ops {
			switch {
			case op < 64 || len(live) == 0: // admit a sequence
				q := &sequence{tokens: slices.Clone(prompts[int(op)%len(prompts)])}
				q.prefilled = m.match(q)
				if q.prefilled >= len(q.tokens) {
					t.Fatalf("op %d: matched %d of %d tokens: nothing left to compute", i, q.prefilled, len(q.tokens))
				}
				live = append(live, q)
			case op < 200: // a step for one sequence: a chunk or a decode
				q := live[int(op)%len(live)]
				n := 1 + int(op)%5
				if q.prefilled >= len(q.tokens) {
					q.tokens = append(q.tokens, 1000+len(q.tokens)) // a generated token
					n = 1
				}
				n = min(n, len(q.tokens)-q.prefilled)
				if !m.reserve(q, q.prefilled, q.prefilled+n) {
					// No room: preempt it, as the scheduler would.
					m.release(q)
					q.prefilled = 0
					break
				}
				end := q.prefilled + n
				if len(q.blocks)*g.BlockSize < end || len(q.sliding)*g.BlockSize < end {
					t.Fatalf("op %d: tables %v / %v do not cover %d", i, q.blocks, q.sliding, end)
				}
				for b, id := range q.sliding {
					if id < 0 && (b+1)*g.BlockSize > q.prefilled-g.SlidingWindow {
						t.Fatalf("op %d: sliding block %d released inside the window of %d", i, b, q.prefilled)
					}
				}
				q.prefilled = end
				m.remember(q, q.prefilled)
			default: // finish one
				k := int(op) % len(live)
				m.release(live[k])
				live = slices.Delete(live, k, k+1)
			}
			if err := m.check(live); err != nil {
				t.Fatalf("op %d (%d): %v", i, op, err)
			}
		}
		for _, q := range live {
			m.release(q)
		}
		if err := m.check(nil); err != nil {
			t.Fatal(err)
		}
		if u := m.usage(); u.UsedBlocks != 0 || u.SlidingUsed != 0 {
			t.Fatalf("after releasing everything: %+v", u)
		}
	})
}
