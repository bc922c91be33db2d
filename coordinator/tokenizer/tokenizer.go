// Package tokenizer implements o200k_harmony, the tokenizer of the gpt-oss
// models: the o200k_base byte-level BPE (ordinary ids 0..199997) plus the
// Harmony special tokens (ids 199998..201087).
//
// The vocabulary comes from github.com/tiktoken-go/tokenizer, which embeds it
// in the binary, so nothing is downloaded. Only the vocabulary is taken from
// that module: its generated pre-tokenisation regex mis-splits runs such as
// " \n \n \n" (it returns one piece per " \n" where tiktoken returns one piece
// for the whole run, so the ids differ) and is quadratic on them, so this
// package splits text with the interpreted regexp2 engine and runs its own
// merge loop. Both are checked against Python tiktoken by the golden test
// (testdata/tiktoken_golden.json, written by scripts/golden_tokenizer.py).
//
// Encode treats its input strictly as ordinary text: a user who types
// "<|start|>" gets the ordinary tokens for those characters, never the
// control token 200006. Callers that build Harmony prompts insert the control
// ids (Start, Message, End, ...) themselves.
package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	tiktoken "github.com/tiktoken-go/tokenizer"
)

// VocabSize is the number of token ids, and the number of rows of the
// models' embedding and unembedding matrices (201088 = 128 × 1571). Ids in
// [NumOrdinary, VocabSize) are special.
const VocabSize = 201088

// NumOrdinary is the number of ordinary (BPE) token ids, 0..199997. Every id
// from NumOrdinary up is a special token.
const NumOrdinary = 199998

// Harmony special token ids. The others in [NumOrdinary, VocabSize) are
// reserved and named "<|reserved_N|>"; a model should never emit them.
const (
	// StartOfText is "<|startoftext|>", the nominal BOS. Harmony prompts do
	// not use it.
	StartOfText = 199998
	// EndOfText is "<|endoftext|>", used as padding; it is in the models'
	// generation_config eos list.
	EndOfText = 199999
	// Return is "<|return|>": ends the final answer. A stop token.
	Return = 200002
	// Constrain is "<|constrain|>": precedes a content type (such as json)
	// in a message header.
	Constrain = 200003
	// Channel is "<|channel|>": precedes the channel name (analysis,
	// commentary, final) in a message header.
	Channel = 200005
	// Start is "<|start|>": begins a message; the role follows.
	Start = 200006
	// End is "<|end|>": ends a message. Not a stop token for generation.
	End = 200007
	// Message is "<|message|>": separates a message header from its content.
	Message = 200008
	// Call is "<|call|>": ends a tool-call message. A stop token.
	Call = 200012
)

// ErrInvalidToken is returned (wrapped, with the id) by TokenBytes, Decode
// and Decoder.Add for an id outside [0, VocabSize).
var ErrInvalidToken = errors.New("tokenizer: token id out of range")

// splitPattern is o200k_base's pre-tokenisation regex, as in tiktoken.
const splitPattern = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?` +
	`|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?` +
	`|\p{N}{1,3}` +
	`| ?[^\s\p{L}\p{N}]+[\r\n/]*` +
	`|\s*[\r\n]+` +
	`|\s+(?!\S)` +
	`|\s+`

// Tokenizer encodes and decodes o200k_harmony tokens. It is immutable after
// New and safe for concurrent use; build one and share it (see Default).
type Tokenizer struct {
	// all holds the bytes of every token, ordinary ones followed by the
	// names of the specials; token id i is all[off[i]:off[i+1]].
	all string
	off []uint32
	// ranks maps an ordinary token's bytes to its id (id == BPE rank).
	ranks map[string]uint32
	// specialIDs maps a special token's name to its id.
	specialIDs map[string]int
	split      *regexp2.Regexp
}

// New builds a Tokenizer from the vocabulary embedded in tiktoken-go. It
// takes about 20 ms and 10 MB of heap (plus 7 MB for tiktoken-go's own
// vocabulary map, built once per process), so build one and share it;
// Default does that lazily.
func New() (*Tokenizer, error) {
	codec, err := tiktoken.Get(tiktoken.O200kBase)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: loading o200k_base: %w", err)
	}
	codec.SetErrorMode(tiktoken.ErrorModeNone) // raw token bytes

	t := &Tokenizer{
		off:        make([]uint32, VocabSize+1),
		ranks:      make(map[string]uint32, NumOrdinary),
		specialIDs: make(map[string]int, VocabSize-NumOrdinary),
	}
	var sb strings.Builder
	sb.Grow(2 << 20)
	one := make([]uint, 1)
	for id := range NumOrdinary {
		one[0] = uint(id)
		piece, err := codec.Decode(one)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: o200k_base has no token %d: %w", id, err)
		}
		t.off[id] = uint32(sb.Len())
		sb.WriteString(piece)
	}
	for id := NumOrdinary; id < VocabSize; id++ {
		t.off[id] = uint32(sb.Len())
		sb.WriteString(specialName(id))
	}
	t.off[VocabSize] = uint32(sb.Len())
	t.all = sb.String()

	for id := range NumOrdinary {
		tok := t.token(id)
		if prev, dup := t.ranks[tok]; dup {
			return nil, fmt.Errorf("tokenizer: o200k_base tokens %d and %d are both %q", prev, id, tok)
		}
		t.ranks[tok] = uint32(id)
	}
	// The merge loop relies on every single byte being a token.
	for b := range 256 {
		if _, ok := t.ranks[string([]byte{byte(b)})]; !ok {
			return nil, fmt.Errorf("tokenizer: o200k_base lacks the single-byte token %#02x", b)
		}
	}
	for id := NumOrdinary; id < VocabSize; id++ {
		t.specialIDs[t.token(id)] = id
	}

	// regexp2.Compile, unlike MustCompile, ignores the code-generated engine
	// tiktoken-go registers for this pattern (see the package comment). No
	// backtracking limit: a limit would make a long whitespace run an error,
	// and Encode cannot fail.
	t.split, err = regexp2.Compile(splitPattern, regexp2.None, regexp2.OptionMaxBacktrackingStackSize(-1))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: compiling the split pattern: %w", err)
	}
	return t, nil
}

var defaultTokenizer = sync.OnceValues(New)

// Default returns a process-wide Tokenizer, built on first use. It panics
// only if the embedded vocabulary is broken, which the tests rule out.
func Default() *Tokenizer {
	t, err := defaultTokenizer()
	if err != nil {
		panic(err)
	}
	return t
}

// specialName returns the name of special id, which must be in
// [NumOrdinary, VocabSize).
func specialName(id int) string {
	switch id {
	case StartOfText:
		return "<|startoftext|>"
	case EndOfText:
		return "<|endoftext|>"
	case Return:
		return "<|return|>"
	case Constrain:
		return "<|constrain|>"
	case Channel:
		return "<|channel|>"
	case Start:
		return "<|start|>"
	case End:
		return "<|end|>"
	case Message:
		return "<|message|>"
	case Call:
		return "<|call|>"
	}
	return fmt.Sprintf("<|reserved_%d|>", id)
}

// token returns the bytes of id, which must be in [0, VocabSize).
func (t *Tokenizer) token(id int) string {
	return t.all[t.off[id]:t.off[id+1]]
}

// Encode returns the token ids of text, treated entirely as ordinary text:
// special-token names in it are encoded like any other characters, so
// untrusted input cannot inject control tokens. Invalid UTF-8 is first
// replaced with U+FFFD, one per maximal invalid subsequence, which is what a
// Python server decoding the request bytes with errors="replace" would feed
// tiktoken. The result equals tiktoken's
// encode(text, allowed_special=set(), disallowed_special=()).
func (t *Tokenizer) Encode(text string) []int {
	text = toValidUTF8(text)
	bounds := t.pieces(text)
	ids := make([]int, 0, len(bounds)+len(bounds)/4+1)
	for _, b := range bounds {
		ids = t.appendPiece(ids, text[b[0]:b[1]])
	}
	return ids
}

// Count returns len(t.Encode(text)) without building the id slice.
func (t *Tokenizer) Count(text string) int {
	text = toValidUTF8(text)
	var scratch [32]int
	n := 0
	for _, b := range t.pieces(text) {
		n += len(t.appendPiece(scratch[:0], text[b[0]:b[1]]))
	}
	return n
}

// pieces splits valid UTF-8 text into pre-tokenisation pieces, as byte
// [start, end) pairs.
func (t *Tokenizer) pieces(text string) [][]int {
	if text == "" {
		return nil
	}
	bounds, err := t.split.FindAllStringIndex(text, -1)
	if err != nil {
		// Only timeouts and the backtracking limit make regexp2 fail, and
		// New disables both.
		panic(fmt.Sprintf("tokenizer: split pattern failed: %v", err))
	}
	return bounds
}

// IsSpecial reports whether id is a special (non-BPE) token: true for every
// id in [NumOrdinary, VocabSize), the reserved ones included.
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= NumOrdinary && id < VocabSize
}

// SpecialName returns the name of a special token, such as "<|start|>" or
// "<|reserved_200013|>", or "" if id is not special.
func (t *Tokenizer) SpecialName(id int) string {
	if !t.IsSpecial(id) {
		return ""
	}
	return t.token(id)
}

// SpecialID returns the id of a special token's name, such as "<|start|>".
// o200k_base's own "<|endofprompt|>" is not a Harmony token (its id 200018
// is "<|reserved_200018|>" here), so it is not found.
func (t *Tokenizer) SpecialID(name string) (int, bool) {
	id, ok := t.specialIDs[name]
	return id, ok
}

// TokenBytes returns the raw bytes of an ordinary token, which may be part
// of a multi-byte UTF-8 character, or the name of a special token. The slice
// is a fresh copy the caller may keep or modify.
func (t *Tokenizer) TokenBytes(id int) ([]byte, error) {
	if id < 0 || id >= VocabSize {
		return nil, fmt.Errorf("%w: %d", ErrInvalidToken, id)
	}
	return []byte(t.token(id)), nil
}

// ByteToken is the ordinary token of the single byte b: byte-level BPE has
// one for each of the 256 bytes, which is how a model spells a character
// its vocabulary has no token for (an emoji a byte at a time).
func (t *Tokenizer) ByteToken(b byte) (int, bool) {
	id, ok := t.ranks[string([]byte{b})]
	return int(id), ok
}

// TokenText returns the text of one token on its own: an ordinary token's
// bytes with invalid UTF-8 (a token that is only part of a multi-byte
// character) replaced by U+FFFD as Decode does, or a special token's name.
// An id outside [0, VocabSize) returns "".
func (t *Tokenizer) TokenText(id int) string {
	if id < 0 || id >= VocabSize {
		return ""
	}
	return toValidUTF8(t.token(id))
}

// Decode returns the text of a whole id sequence. Special tokens are
// rendered as their names; invalid UTF-8 (such as a multi-byte character cut
// off by the end of ids, or by a special token) is replaced with U+FFFD as
// Python's bytes.decode(errors="replace") does. Use a Decoder to decode a
// sequence as it grows.
func (t *Tokenizer) Decode(ids []int) (string, error) {
	n := 0
	for _, id := range ids {
		if id < 0 || id >= VocabSize {
			return "", fmt.Errorf("%w: %d", ErrInvalidToken, id)
		}
		n += int(t.off[id+1] - t.off[id])
	}
	buf := make([]byte, 0, n)
	for _, id := range ids {
		buf = append(buf, t.token(id)...)
	}
	if utf8.Valid(buf) {
		return string(buf), nil
	}
	return string(appendValidUTF8(make([]byte, 0, len(buf)+8), buf)), nil
}

// appendPiece appends the BPE tokens of one pre-tokenisation piece.
func (t *Tokenizer) appendPiece(dst []int, piece string) []int {
	if id, ok := t.ranks[piece]; ok {
		return append(dst, int(id))
	}
	if len(piece) < heapThreshold {
		return t.mergeScan(dst, piece)
	}
	return t.mergeHeap(dst, piece)
}

// heapThreshold is the piece length, in bytes, from which appendPiece uses
// the O(n log n) mergeHeap instead of the O(n²) but, for short pieces,
// faster mergeScan.
const heapThreshold = 64

const noRank = math.MaxUint32

// rank returns the id of piece as a single token, or noRank.
func (t *Tokenizer) rank(piece string) uint32 {
	if id, ok := t.ranks[piece]; ok {
		return id
	}
	return noRank
}

// mergeScan is tiktoken's byte-pair merge: repeatedly merge the adjacent
// pair of parts that forms the lowest-ranked token, the leftmost of equal
// ranks, until no pair forms a token.
func (t *Tokenizer) mergeScan(dst []int, piece string) []int {
	type part struct {
		start int
		rank  uint32 // rank of part+next part, or noRank
	}
	var stack [heapThreshold + 1]part
	parts := stack[:0]
	for i := range len(piece) {
		r := uint32(noRank)
		if i+2 <= len(piece) {
			r = t.rank(piece[i : i+2])
		}
		parts = append(parts, part{i, r})
	}
	parts = append(parts, part{len(piece), noRank})

	// pairRank is the rank of parts i and i+1 merged, given that part i+1
	// is about to absorb part i+2.
	pairRank := func(i int) uint32 {
		if i+3 < len(parts) {
			return t.rank(piece[parts[i].start:parts[i+3].start])
		}
		return noRank
	}
	for len(parts) > 1 {
		minRank, minIdx := uint32(noRank), -1
		for i, p := range parts[:len(parts)-1] {
			if p.rank < minRank {
				minRank, minIdx = p.rank, i
			}
		}
		if minIdx < 0 {
			break
		}
		i := minIdx
		parts[i].rank = pairRank(i)
		if i > 0 {
			parts[i-1].rank = pairRank(i - 1)
		}
		parts = append(parts[:i+1], parts[i+2:]...)
	}
	for i := range len(parts) - 1 {
		dst = append(dst, int(t.ranks[piece[parts[i].start:parts[i+1].start]]))
	}
	return dst
}

// mergeHeap gives the same result as mergeScan in O(n log n), keeping the
// parts in a linked list and the candidate merges in a min-heap ordered by
// (rank, start), so the leftmost of equal ranks still merges first.
func (t *Tokenizer) mergeHeap(dst []int, piece string) []int {
	type node struct {
		prev, next int32  // neighbouring part starts, -1 at the ends
		rank       uint32 // rank of this part merged with the next, or noRank
		dead       bool   // absorbed into its left neighbour
	}
	n := int32(len(piece))
	nodes := make([]node, n+1) // nodes[n] is the end sentinel
	for i := range nodes {
		nodes[i] = node{prev: int32(i) - 1, next: int32(i) + 1, rank: noRank}
	}
	nodes[n].next = -1
	rankAt := func(i int32) uint32 {
		j := nodes[i].next
		if j < 0 || j == n {
			return noRank
		}
		return t.rank(piece[i:nodes[j].next])
	}
	h := make(mergeHeap, 0, n)
	for i := int32(0); i < n; i++ {
		nodes[i].rank = rankAt(i)
		if nodes[i].rank != noRank {
			h = append(h, candidate{nodes[i].rank, i})
		}
	}
	h.init()
	for len(h) > 0 {
		c := h.pop()
		i := c.start
		if nodes[i].dead || nodes[i].rank != c.rank {
			continue // stale
		}
		j := nodes[i].next
		k := nodes[j].next
		nodes[j].dead = true
		nodes[i].next = k
		nodes[k].prev = i // k >= 0: j < n, so k is a part start or the sentinel
		for _, b := range [2]int32{i, nodes[i].prev} {
			if b < 0 {
				continue
			}
			nodes[b].rank = rankAt(b)
			if nodes[b].rank != noRank {
				h.push(candidate{nodes[b].rank, b})
			}
		}
	}
	for i := int32(0); i != n; i = nodes[i].next {
		dst = append(dst, int(t.ranks[piece[i:nodes[i].next]]))
	}
	return dst
}

type candidate struct {
	rank  uint32
	start int32
}

// mergeHeap is a binary min-heap of candidates by (rank, start).
type mergeHeap []candidate

func (h mergeHeap) less(a, b int) bool {
	if h[a].rank != h[b].rank {
		return h[a].rank < h[b].rank
	}
	return h[a].start < h[b].start
}

func (h mergeHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *mergeHeap) push(c candidate) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *mergeHeap) pop() candidate {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	*h = s[:last]
	h.down(0)
	return top
}

func (h mergeHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
