package sched

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
)

// listGuide forces a fixed run of tokens, then leaves the sequence free.
type listGuide struct {
	want     []int
	pos      int
	mask     []uint32
	accepted []int
	closed   atomic.Int32
	failMask bool
}

func (g *listGuide) Mask() ([]uint32, error) {
	if g.failMask {
		return nil, errors.New("grammar gave up")
	}
	if g.pos >= len(g.want) {
		return nil, nil
	}
	g.mask = make([]uint32, 2048/32)
	t := g.want[g.pos]
	g.mask[t/32] |= 1 << (t % 32)
	return g.mask, nil
}

func (g *listGuide) Accept(tok int) error {
	if g.pos < len(g.want) && tok != g.want[g.pos] {
		return errors.New("token outside the mask")
	}
	g.pos++
	g.accepted = append(g.accepted, tok)
	return nil
}

func (g *listGuide) Close() { g.closed.Add(1) }

// maskExec draws the lowest allowed token when a mask is given, as a
// sampler restricted to the mask would at greedy, and 1000+position
// otherwise; it counts the masks it saw.
type maskExec struct {
	*fakeExec
	masks atomic.Int32
}

func (m *maskExec) Step(ctx context.Context, b *step.Batch) error {
	if err := m.fakeExec.Step(ctx, b); err != nil {
		return err
	}
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if !st.Sample || st.Allow == nil {
			continue
		}
		m.masks.Add(1)
		for t := range len(st.Allow) * 32 {
			if step.Allowed(st.Allow, t) {
				st.Out = step.Token{ID: t}
				m.mu.Lock()
				m.last[st.ID] = [2]int{t, m.last[st.ID][1]} // the draw the next step feeds
				m.mu.Unlock()
				break
			}
		}
	}
	return nil
}

func TestGuideMasksEverySampledToken(t *testing.T) {
	f := &maskExec{fakeExec: newFake()}
	p := testProfile("p", 4, 3, 10)
	var observed atomic.Int32
	s := newSched(t, f, profiles.Set{"p": p}, Options{OnGuide: func(n int, _ time.Duration) { observed.Add(int32(n)) }})
	defer s.Close()
	g := &listGuide{want: []int{5, 9, 11}}
	st, err := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(7), MaxTokens: 5, Guide: g})
	if err != nil {
		t.Fatal(err)
	}
	toks, fin := collect(t, st)
	if fin.Reason != FinishLength || len(toks) != 5 {
		t.Fatalf("final %+v, %d tokens", fin, len(toks))
	}
	// The forced run, then the executor's own tokens (1000 + position).
	want := []int{5, 9, 11, 1010, 1011}
	for i, tk := range toks {
		if tk.ID != want[i] {
			t.Fatalf("tokens %v, want %v", toks, want)
		}
	}
	if f.masks.Load() != 3 || observed.Load() != 3 {
		t.Fatalf("%d masks applied, %d observed, want 3", f.masks.Load(), observed.Load())
	}
	if len(g.accepted) != 5 {
		t.Fatalf("the guide accepted %v", g.accepted)
	}
	testkit.Eventually(t, time.Second, "the guide closed", func() bool { return g.closed.Load() == 1 })
}

// A Guide that fails, or a token the executor drew outside the mask, ends
// that sequence with ErrGuide; its companions finish.
func TestGuideFailureEndsTheSequenceAlone(t *testing.T) {
	f := newFake() // ignores masks: its tokens break the listGuide
	p := testProfile("p", 4, 8, 10)
	s := newSched(t, f, profiles.Set{"p": p}, Options{})
	defer s.Close()
	bad := &listGuide{want: []int{5}}
	failing := &listGuide{failMask: true}
	ok, _ := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(3), MaxTokens: 4})
	st1, _ := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(3), MaxTokens: 4, Guide: bad})
	st2, _ := s.Submit(context.Background(), &Request{Profile: p, Prompt: prompt(3), MaxTokens: 4, Guide: failing})
	for _, st := range []*Stream{st1, st2} {
		toks, fin := collect(t, st)
		if fin.Reason != FinishError || !errors.Is(fin.Err, ErrGuide) || len(toks) != 0 {
			t.Fatalf("final %+v, tokens %v: want ErrGuide before any token", fin, toks)
		}
	}
	if _, fin := collect(t, ok); fin.Reason != FinishLength {
		t.Fatalf("the unguided companion: %+v", fin)
	}
	testkit.Eventually(t, time.Second, "guides closed", func() bool { return bad.closed.Load() == 1 && failing.closed.Load() == 1 })
}
