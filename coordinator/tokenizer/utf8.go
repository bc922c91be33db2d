package tokenizer

import "unicode/utf8"

// UTF-8 repair, with the semantics of Python's bytes.decode(errors="replace")
// (the Unicode "maximal subpart" practice): each maximal prefix of a valid
// encoding that cannot be completed, and each byte that cannot start one,
// becomes a single U+FFFD. Go's strings.ToValidUTF8 differs (it merges a
// whole run of bad bytes into one U+FFFD), so it is not used.

const replacement = "\uFFFD"

type runeStatus uint8

const (
	runeValid      runeStatus = iota // a complete, valid encoding
	runeInvalid                      // s[:n] is a maximal invalid subpart
	runeIncomplete                   // all of s is a valid but unfinished prefix
)

// nextRune classifies the encoding at the start of non-empty s and returns
// its length in bytes.
func nextRune[S ~string | ~[]byte](s S) (int, runeStatus) {
	c := s[0]
	if c < utf8.RuneSelf {
		return 1, runeValid
	}
	need, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0 // no overlong forms
	case c == 0xED:
		need, hi = 2, 0x9F // no surrogates
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90 // no overlong forms
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F // nothing above U+10FFFF
	default:
		return 1, runeInvalid // continuation byte, C0, C1 or F5..FF
	}
	for i := 1; i <= need; i++ {
		if i >= len(s) {
			return i, runeIncomplete
		}
		if b := s[i]; b < lo || b > hi {
			return i, runeInvalid
		}
		lo, hi = 0x80, 0xBF
	}
	return need + 1, runeValid
}

// appendValidUTF8 appends src to dst with each invalid or unfinished
// sequence replaced by U+FFFD.
func appendValidUTF8[S ~string | ~[]byte](dst []byte, src S) []byte {
	for i := 0; i < len(src); {
		n, st := nextRune(src[i:])
		if st == runeValid {
			dst = append(dst, src[i:i+n]...)
		} else {
			dst = append(dst, replacement...)
		}
		i += n
	}
	return dst
}

// toValidUTF8 returns s with invalid sequences replaced by U+FFFD, or s
// itself when it is already valid.
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(appendValidUTF8(make([]byte, 0, len(s)+8), s))
}
