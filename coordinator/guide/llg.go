package guide

/*
#cgo LDFLAGS: -ldl
#include "llg_shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/libsearch"
)

// Library files `make llguidance` puts in build/llguidance/.
const (
	LibraryName = "libllguidance.so"
	StubName    = "libllguidance_pystub.so"
	// EnvLibrary names the llguidance library (a file, or a directory
	// holding LibraryName and StubName). When set, it is the only place
	// looked at.
	EnvLibrary = "GPTOSS_LLGUIDANCE"
)

// ErrNoLibrary is returned (wrapped, with the places looked at and the fix)
// when the llguidance library is nowhere to be found: structured output
// cannot be served, and requests asking for it are refused with a clear
// error rather than answered unconstrained.
var ErrNoLibrary = errors.New("guide: " + LibraryName + " not found")

// Lib is the opened llguidance library. It stays loaded for the life of the
// process.
type Lib struct {
	l       *C.llgs_lib
	Path    string
	Version string
}

var (
	openOnce sync.Once
	openLib  *Lib
	openErr  error
)

// Open loads llguidance once per process, from $GPTOSS_LLGUIDANCE or
// build/llguidance/ next to the executable, the working directory or the
// module root.
func Open() (*Lib, error) {
	openOnce.Do(func() {
		exe, _ := os.Executable()
		cwd, _ := os.Getwd()
		cands, explicit := libsearch.Candidates(os.Getenv, EnvLibrary, LibraryName, exe, cwd, "llguidance")
		found := libsearch.Find(cands)
		if found == "" {
			where := strings.Join(cands, ", ")
			if explicit {
				where = EnvLibrary + "=" + where
			}
			openErr = fmt.Errorf("%w (looked for %s): run make llguidance, or set %s to its path", ErrNoLibrary, where, EnvLibrary)
			return
		}
		openLib, openErr = open(found)
	})
	return openLib, openErr
}

func open(path string) (*Lib, error) {
	stub := filepath.Join(filepath.Dir(path), StubName)
	if _, err := os.Stat(stub); err != nil {
		stub = "" // a build of the library that needs no stub
	}
	cstub, cpath := C.CString(stub), C.CString(path)
	defer C.free(unsafe.Pointer(cstub))
	defer C.free(unsafe.Pointer(cpath))
	var errbuf [C.LLGS_ERRN]C.char
	l := C.llgs_open(cstub, cpath, &errbuf[0])
	if l == nil {
		return nil, fmt.Errorf("guide: opening %s: %s", path, C.GoString(&errbuf[0]))
	}
	return &Lib{l: l, Path: path, Version: C.GoString(C.llgs_version(l))}, nil
}

// Vocab is llguidance's view of the o200k_harmony vocabulary: every
// token's bytes, special tokens marked (0xFF then the name) so that no
// grammar over text can produce them. Safe for concurrent use.
type Vocab struct {
	lib *Lib
	t   *C.LlgTokenizer
	// Size is the vocabulary size; masks have Words words.
	Size, Words int
}

// eos is the token llguidance allows where a grammar may end. No grammar
// here emits <|endoftext|> itself: a Guide turns "may end" into the
// segment's own terminator (<|return|>, <|call|>, or a raw completion's
// stop tokens).
const eos = tokenizer.EndOfText

// NewVocab builds the vocabulary from the tokenizer (about 0.3 s: call once
// and share).
func (l *Lib) NewVocab(tok *tokenizer.Tokenizer) (*Vocab, error) {
	n := tokenizer.VocabSize
	lens := make([]uint32, n)
	var all []byte
	for id := range n {
		b, err := tok.TokenBytes(id)
		if err != nil {
			return nil, fmt.Errorf("guide: vocabulary: %w", err)
		}
		if tok.IsSpecial(id) {
			b = append([]byte{0xFF}, b...)
		}
		lens[id] = uint32(len(b))
		all = append(all, b...)
	}
	cl := (*C.uint32_t)(C.malloc(C.size_t(4 * n)))
	cb := (*C.uint8_t)(C.malloc(C.size_t(len(all))))
	defer C.free(unsafe.Pointer(cl))
	defer C.free(unsafe.Pointer(cb))
	copy(unsafe.Slice((*uint32)(unsafe.Pointer(cl)), n), lens)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(cb)), len(all)), all)
	var errbuf [C.LLGS_ERRN]C.char
	t := C.llgs_new_tokenizer(l.l, C.uint32_t(n), C.uint32_t(eos), cl, cb, &errbuf[0])
	if t == nil {
		return nil, fmt.Errorf("guide: llguidance tokenizer: %s", C.GoString(&errbuf[0]))
	}
	return &Vocab{lib: l, t: t, Size: n, Words: (n + 31) / 32}, nil
}

// Kinds of grammar a Matcher compiles (llguidance's constraint types).
const (
	KindJSONSchema = "json_schema"
	KindRegex      = "regex"
	KindLark       = "lark"
)

// Matcher follows one grammar over one sequence's tokens. Not safe for
// concurrent use; distinct matchers run in parallel.
type Matcher struct {
	v *Vocab
	m *C.LlgMatcher
}

// stepFuel bounds the lexer work of one mask (llguidance's default is
// 200 000): a grammar that needs more per token fails that sequence instead
// of stalling every stream of the step.
const stepFuel = 400_000

// Compile builds a matcher for a grammar of the given kind. The error is
// llguidance's, which names the construct it refused.
func (v *Vocab) Compile(kind, data string) (*Matcher, error) {
	ck, cd := C.CString(kind), C.CString(data)
	defer C.free(unsafe.Pointer(ck))
	defer C.free(unsafe.Pointer(cd))
	var errbuf [C.LLGS_ERRN]C.char
	m := C.llgs_new_matcher(v.lib.l, v.t, stepFuel, ck, cd, &errbuf[0])
	if m == nil {
		return nil, &CompileError{Kind: kind, Msg: C.GoString(&errbuf[0])}
	}
	if got := int(C.llgs_mask_bytes(v.lib.l, m)); got != 4*v.Words {
		C.llgs_free_matcher(v.lib.l, m)
		return nil, fmt.Errorf("guide: llguidance masks are %d bytes, want %d", got, 4*v.Words)
	}
	return &Matcher{v: v, m: m}, nil
}

// CompileError is a grammar llguidance refused.
type CompileError struct {
	Kind, Msg string
}

func (e *CompileError) Error() string { return fmt.Sprintf("guide: %s: %s", e.Kind, e.Msg) }

// Mask writes the tokens allowed next into dst (Vocab.Words words); the
// end of the grammar shows as the <|endoftext|> bit.
func (m *Matcher) Mask(dst []uint32) error {
	if len(dst) != m.v.Words {
		return fmt.Errorf("guide: mask of %d words, want %d", len(dst), m.v.Words)
	}
	var errbuf [C.LLGS_ERRN]C.char
	if C.llgs_mask(m.v.lib.l, m.m, (*C.uint32_t)(unsafe.Pointer(&dst[0])), C.size_t(4*len(dst)), &errbuf[0]) != 0 {
		return fmt.Errorf("guide: mask: %s", C.GoString(&errbuf[0]))
	}
	return nil
}

// Consume advances past tok, which must have been allowed.
func (m *Matcher) Consume(tok int) error {
	var errbuf [C.LLGS_ERRN]C.char
	if C.llgs_consume(m.v.lib.l, m.m, C.uint32_t(tok), &errbuf[0]) != 0 {
		return fmt.Errorf("guide: token %d: %s", tok, C.GoString(&errbuf[0]))
	}
	return nil
}

// Clone returns a matcher in the same state, sharing the compiled grammar.
func (m *Matcher) Clone() *Matcher {
	return &Matcher{v: m.v, m: C.llgs_clone_matcher(m.v.lib.l, m.m)}
}

// Close frees the matcher; it may be called more than once.
func (m *Matcher) Close() {
	if m.m != nil {
		C.llgs_free_matcher(m.v.lib.l, m.m)
		m.m = nil
	}
}
