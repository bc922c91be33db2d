package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// Decoder decodes one token sequence incrementally, as a model generates it.
// Tokens are byte-level, so a multi-byte UTF-8 character can be split across
// tokens; the Decoder holds such a partial character back until the token
// that completes it arrives, so every string it returns is valid UTF-8 and
// the concatenation of its outputs, the final Flush included, equals
// Tokenizer.Decode of the same ordinary ids.
//
// Special tokens are not rendered: the caller (the Harmony parser) handles
// them itself, and Add of a special only ends the current text run.
//
// A Decoder belongs to one sequence and is not safe for concurrent use.
type Decoder struct {
	t       *Tokenizer
	pending []byte // a valid but unfinished UTF-8 prefix, at most 3 bytes
	buf     []byte // reused output buffer for the slow path
}

// NewDecoder returns a Decoder for a new sequence.
func (t *Tokenizer) NewDecoder() *Decoder {
	return &Decoder{t: t, pending: make([]byte, 0, utf8.UTFMax)}
}

// Add consumes the next token id and returns the text it completes, which
// may be "" (while a multi-byte character is still incomplete) or include
// characters begun by earlier tokens. Held-back bytes that turn out not to
// be the start of a valid character come out as U+FFFD, as they would from
// Decode.
//
// For a special id, Add flushes held-back bytes as Flush does (an unfinished
// character before a special can never be completed) and returns them;
// nothing is returned for the special itself.
//
// An id outside [0, VocabSize) returns an error wrapping ErrInvalidToken and
// leaves the Decoder unchanged.
func (d *Decoder) Add(id int) (string, error) {
	if id < 0 || id >= VocabSize {
		return "", fmt.Errorf("%w: %d", ErrInvalidToken, id)
	}
	if d.t.IsSpecial(id) {
		return d.Flush(), nil
	}
	tok := d.t.token(id)
	if len(d.pending) == 0 && utf8.ValidString(tok) {
		return tok, nil // the common case; no allocation
	}

	out := d.buf[:0]
	src := append(d.pending, tok...)
	i := 0
	for i < len(src) {
		n, st := nextRune(src[i:])
		if st == runeIncomplete {
			break
		}
		if st == runeValid {
			out = append(out, src[i:i+n]...)
		} else {
			out = append(out, replacement...)
		}
		i += n
	}
	d.pending = append(d.pending[:0], src[i:]...)
	d.buf = out
	return string(out), nil
}

// Flush returns the held-back bytes of an unfinished character, as one
// U+FFFD, or "" if there are none, and resets the Decoder. Call it at the
// end of the sequence.
func (d *Decoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	d.pending = d.pending[:0]
	return replacement
}
