package sample

import (
	"errors"
	"math"
)

// ErrNoneAllowed is SampleAllowed's error when the logits have finite
// values but none at an allowed token (or nothing is allowed). Unlike
// logits with no finite value at all, it does not mean a broken forward
// pass but a set of allowed tokens the model cannot follow: the fault of
// that one sequence, which an executor refuses alone.
var ErrNoneAllowed = errors.New("sample: no allowed token has a finite logit")

// ninfBits is −Inf as float32 bits, and ninfWord 32 of them, copied over a
// word of denied tokens.
const ninfBits = 0xff800000

var ninfWord = func() (w [32]float32) {
	for i := range w {
		w[i] = float32(math.Inf(-1))
	}
	return w
}()

// SampleAllowed is Sample restricted to the tokens of allow (structured
// output: a grammar's next legal tokens), a bitset over the vocabulary:
// token t is allowed when allow[t/32]>>(t%32)&1 is set, and tokens past
// len(allow)*32 are not (shared/step's Seq.Allow). A nil allow is Sample
// itself, bit for bit.
//
// Every other token's logit counts as −Inf from the start, before the
// penalties, the temperature and the truncations, so they see only the
// allowed tokens: greedy takes the best allowed token, top-k keeps the k
// best allowed ones, min-p and top-p measure against the allowed mass. The
// logprobs are those of the constrained distribution (log_softmax over the
// allowed tokens' raw logits, so they sum to 1 over the allowed set), since
// that is the distribution the token was drawn from: an unconstrained
// logprob would report a forced token as unlikely when it was certain.
// Result.Top lists allowed tokens only (fewer than TopLogprobs when fewer
// are allowed); the constrained distribution gives the others nothing.
//
// The masked logits are a copy in the sampler's scratch (the caller's
// slice is never written), made a 32-token word at a time (with AVX2, a
// blend per eight tokens whatever the bits; otherwise an all-allowed word
// is a copy, an all-denied one a fill): the cost over Sample is that one
// pass, about 18 µs over 201088 logits on one core. It errors as Sample does, and with ErrNoneAllowed when logits
// has finite values but no allowed token has one (an empty set included);
// it does not allocate once the scratch has grown.
func (s *Sampler) SampleAllowed(logits []float32, allow []uint32) (Result, error) {
	if allow == nil {
		return s.Sample(logits)
	}
	n := len(logits)
	if n == 0 {
		return Result{}, errEmpty
	}
	s.m = grow(s.m, n)
	maskLogits(s.m, logits, allow)
	res, err := s.Sample(s.m)
	if err != nil {
		if errors.Is(err, errNoFinite) && hasFinite(logits) {
			err = ErrNoneAllowed
		}
		return Result{}, err
	}
	if len(res.Top) > 0 {
		top := res.Top[:0]
		for _, t := range res.Top {
			if allowed(allow, t.ID) {
				top = append(top, t)
			}
		}
		res.Top = top
	}
	return res, nil
}

// allowed reports whether bitset allow admits token t (t ≥ 0).
func allowed(allow []uint32, t int) bool {
	return t/32 < len(allow) && allow[t/32]>>(uint(t)%32)&1 == 1
}

// maskLogits writes src to dst (of the same length) with the logits of the
// tokens allow denies replaced by −Inf.
func maskLogits(dst, src []float32, allow []uint32) {
	n := len(src)
	whole := min(n/32, len(allow)) // words wholly inside both
	if useAVX2 && whole > 0 {
		maskAVX2(&dst[0], &src[0], &allow[0], whole)
	} else {
		maskWords(dst, src, allow[:whole])
	}
	for t := whole * 32; t < n; t++ { // the vocabulary's last partial word, and past the bitset
		if allowed(allow, t) {
			dst[t] = src[t]
		} else {
			dst[t] = ninfWord[0]
		}
	}
}

// maskWords is the portable maskLogits over whole words, and the reference
// its vector form is tested against.
func maskWords(dst, src []float32, allow []uint32) {
	for w, word := range allow {
		d, x := (*[32]float32)(dst[w*32:]), (*[32]float32)(src[w*32:])
		switch word {
		case math.MaxUint32:
			*d = *x
		case 0:
			*d = ninfWord
		default:
			// Branch-free: a mixed word's bits are as unpredictable as the
			// grammar, and a mispredicted branch per token would cost more
			// than the select.
			for b := range 32 {
				m := -(word >> b & 1) // all ones when allowed
				d[b] = math.Float32frombits(math.Float32bits(x[b])&m | ninfBits&^m)
			}
		}
	}
}
