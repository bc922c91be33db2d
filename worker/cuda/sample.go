package cuda

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/gptoss/server/worker/engine"
)

// SampleRow is one row's sampling parameters for Sample (gx_sampling),
// with worker/sample's semantics (see gx_sample in kernels/gptoss.h): greedy
// is the argmax of the penalised logits, lowest id on ties; otherwise
// temperature, top-k, min-p, then top-p.
type SampleRow struct {
	Temperature                       float32 // 0: greedy
	TopP                              float32 // in (0, 1]; 1: off
	TopK                              int     // 0: off
	MinP                              float32 // 0: off
	PresencePenalty, FrequencyPenalty float32
	// Uniform is a draw in [0, 1) from the sequence's own generator: the
	// device takes its randomness from the caller, so that a sequence's
	// stream of draws does not depend on the backend or the batch.
	Uniform float32
	// Counts are the tokens generated so far and how often, for the
	// penalties (distinct ids).
	Counts []TokenCount
	// Allow, when not nil, is the set of tokens the row may draw
	// (step.Seq.Allow: token t allowed when Allow[t/32]>>(t%32)&1 is set),
	// exactly ⌈V/32⌉ words for a vocabulary of V (bits past V are
	// ignored): a set of another size is of another vocabulary, refused
	// rather than guessed at. A caller holding a shorter contract set
	// (tokens past it denied) pads it with zero words.
	Allow []uint32
}

// TokenCount is a token and its count.
type TokenCount struct {
	ID    int
	Count float32
}

// Sampled is one row's draw: the token, its logprob and the nTop most
// likely tokens with theirs, all under the raw logits (log-softmax before
// penalties and temperature, as worker/sample reports them). For a row
// with Allow, the raw logits are the masked ones, and Top lists allowed
// tokens only (fewer than nTop when fewer are allowed), as worker/sample's
// SampleAllowed.
type Sampled struct {
	Token   int
	Logprob float32
	Top     []TokenLogprob
}

// TokenLogprob is a token and its logprob.
type TokenLogprob struct {
	ID      int
	Logprob float32
}

// Sample draws one token per row of logits [S × V] (a tensor of this
// backend, e.g. a step's logits before EndStep, or one filled by Write) on
// the device and returns the draws. Its device buffers are pieces of the
// arena, given back before it returns.
//
// The rows with an Allow are masked in place first (gx_mask_logits): their
// denied tokens' logits become −Inf in logits itself, which saves copying
// rows of 201088 floats and leaves the sampling kernel as it is; a caller
// that needs those rows' raw logits afterwards reads them before.
func (b *Backend) Sample(logits engine.Tensor, rows []SampleRow, nTop int) ([]Sampled, error) {
	x, err := asTensor(logits)
	if err != nil {
		return nil, err
	}
	S, V := x.rows, x.cols
	switch {
	case len(rows) != S:
		return nil, fmt.Errorf("cuda: sample: %d parameter rows for %d logit rows", len(rows), S)
	case nTop < 0 || nTop > V:
		return nil, fmt.Errorf("cuda: sample: %d top logprobs of %d", nTop, V)
	case b.mode != eager:
		return nil, errors.New("cuda: sample during a CUDA graph step")
	case S == 0:
		return nil, nil
	}
	params := make([]sampleParams, S)
	nPen, nMask, W := 0, 0, (V+31)/32
	var seen map[int]bool
	for i, r := range rows {
		if r.Allow != nil {
			if len(r.Allow) != W {
				return nil, fmt.Errorf("cuda: sample: row %d: a set of allowed tokens of %d words for a vocabulary of %d (%d words)",
					i, len(r.Allow), V, W)
			}
			nMask++
		}
		params[i] = sampleParams{temperature: r.Temperature, topP: r.TopP, topK: r.TopK, minP: r.MinP,
			presence: r.PresencePenalty, frequency: r.FrequencyPenalty, uniform: r.Uniform}
		if len(r.Counts) > 1 {
			if seen == nil {
				seen = make(map[int]bool, len(r.Counts))
			}
			clear(seen)
		}
		for _, c := range r.Counts {
			if c.ID < 0 || c.ID >= V {
				return nil, fmt.Errorf("cuda: sample: row %d: penalised token %d outside %d", i, c.ID, V)
			}
			if len(r.Counts) > 1 {
				// The kernel penalises each id once: a repeat would race.
				if seen[c.ID] {
					return nil, fmt.Errorf("cuda: sample: row %d: penalised token %d listed twice", i, c.ID)
				}
				seen[c.ID] = true
			}
		}
		nPen += len(r.Counts)
	}

	// The arena's pieces live for this call only.
	saved := b.arena
	defer func() { b.arena.cur, b.arena.off = saved.cur, saved.off }()
	b.arena.frozen = false

	var penOff, penIDs, penCounts uintptr
	if nPen > 0 {
		// One upload: offsets [S+1], ids [n], counts [n] (float bits).
		in := make([]uint32, 0, alignUp(S+1, metaAlign)+2*alignUp(nPen, metaAlign))
		pad := func() {
			for len(in)%metaAlign != 0 {
				in = append(in, 0)
			}
		}
		n := 0
		for _, r := range rows {
			in = append(in, uint32(n))
			n += len(r.Counts)
		}
		in = append(in, uint32(n))
		pad()
		idOff := len(in)
		for _, r := range rows {
			for _, c := range r.Counts {
				in = append(in, uint32(c.ID))
			}
		}
		pad()
		cntOff := len(in)
		for _, r := range rows {
			for _, c := range r.Counts {
				in = append(in, math.Float32bits(c.Count))
			}
		}
		p, err := b.arena.alloc(int64(len(in)) * 4)
		if err != nil {
			return nil, err
		}
		if err := b.c.upload(p, unsafe.Pointer(&in[0]), int64(len(in))*4); err != nil {
			return nil, err
		}
		penOff, penIDs, penCounts = p, p+uintptr(idOff)*4, p+uintptr(cntOff)*4
	}

	if nMask > 0 {
		// One upload: the masked rows' indices [n], then their sets [n × W].
		allowOff := alignUp(nMask, metaAlign)
		in := make([]uint32, allowOff+nMask*W)
		n := 0
		for i, r := range rows {
			if r.Allow != nil {
				in[n] = uint32(i)
				copy(in[allowOff+n*W:], r.Allow)
				n++
			}
		}
		p, err := b.arena.alloc(int64(len(in)) * 4)
		if err != nil {
			return nil, err
		}
		if err := b.c.upload(p, unsafe.Pointer(&in[0]), int64(len(in))*4); err != nil {
			return nil, err
		}
		if err := b.c.maskLogits(x.p, S, V, nMask, p, p+uintptr(allowOff)*4); err != nil {
			return nil, err
		}
	}

	// One download: token [S], logprob [S], top ids [S × nTop], top
	// logprobs [S × nTop].
	lpOff := alignUp(S, metaAlign)
	tiOff := lpOff + alignUp(S, metaAlign)
	tlOff := tiOff + alignUp(S*nTop, metaAlign)
	total := tlOff + alignUp(S*nTop, metaAlign)
	p, err := b.arena.alloc(int64(total) * 4)
	if err != nil {
		return nil, err
	}
	var topIDs, topLP uintptr
	if nTop > 0 {
		topIDs, topLP = p+uintptr(tiOff)*4, p+uintptr(tlOff)*4
	}
	if err := b.c.sample(x.p, S, V, params, penOff, penIDs, penCounts, nTop, p, p+uintptr(lpOff)*4, topIDs, topLP); err != nil {
		return nil, err
	}
	out := make([]uint32, total)
	if err := b.c.download(unsafe.Pointer(&out[0]), p, int64(total)*4); err != nil {
		return nil, err
	}
	res := make([]Sampled, S)
	for s := range S {
		r := Sampled{Token: int(int32(out[s])), Logprob: math.Float32frombits(out[lpOff+s])}
		allow := rows[s].Allow
		switch {
		case r.Token < 0 && allow != nil:
			return nil, fmt.Errorf("cuda: sample: row %d: no allowed token has a finite logit", s)
		case r.Token < 0 || r.Token >= V:
			return nil, fmt.Errorf("cuda: sample: row %d drew token %d of %d", s, r.Token, V)
		}
		for j := range nTop {
			t := TokenLogprob{ID: int(int32(out[tiOff+s*nTop+j])), Logprob: math.Float32frombits(out[tlOff+s*nTop+j])}
			if allow != nil && (t.ID < 0 || t.ID >= V || allow[t.ID/32]>>(t.ID%32)&1 == 0) {
				continue // a denied token: probability 0 under the constrained distribution
			}
			r.Top = append(r.Top, t)
		}
		res[s] = r
	}
	return res, nil
}
