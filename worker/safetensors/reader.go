package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header accepted, in bytes (the limit of
// the reference implementation).
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding the string→string metadata.
const metadataKey = "__metadata__"

// maxJSONDepth bounds the nesting of the header JSON; a valid header nests 3
// levels deep.
const maxJSONDepth = 64

// ErrInvalid is wrapped by every error that reports a malformed file: a bad
// header, dtype, shape, offset or size. Test for it with errors.Is.
var ErrInvalid = errors.New("invalid safetensors file")

// ErrNotFound is wrapped by the error that File.Tensor and Set.Tensor return
// for a name that is not in the file or set.
var ErrNotFound = errors.New("tensor not found")

// ErrClosed is wrapped by the error returned when a closed File or Set is used.
var ErrClosed = errors.New("file already closed")

// entry is one validated tensor of a file's header.
type entry struct {
	dtype      DType
	shape      []int
	begin, end int // relative to the start of the data buffer
}

// File is one memory-mapped safetensors file whose header has been fully
// validated. Its methods are safe for concurrent use.
type File struct {
	path     string
	mu       sync.RWMutex
	mapping  []byte // the whole file, nil once closed
	data     []byte // the data buffer, a sub-slice of mapping
	entries  map[string]entry
	names    []string // sorted
	metadata map[string]string
}

// Open memory-maps the safetensors file at path (read-only, MAP_SHARED) and
// validates its header: the header length (at most MaxHeaderSize and at most
// the file size minus 8), the JSON (an object, with no duplicate keys and an
// optional "__metadata__" object of strings), every tensor's dtype, shape
// and data_offsets (within the data buffer, matching the element count times
// the element size, computed without overflow), and that the tensors cover
// the data buffer exactly, without holes, overlaps or trailing bytes. Empty
// files and files shorter than 8 bytes are errors.
//
// The mapping stays alive until Close. If the file is truncated by another
// process while mapped, reading the affected tensors faults (SIGBUS); the
// package cannot guard against that.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s: not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors: %s: %w: file is %d bytes, shorter than the 8-byte header length", path, ErrInvalid, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("safetensors: %s: file of %d bytes is too large to map", path, size)
	}
	mapping, err := syscall.Mmap(int(fd.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: mmap: %w", path, err)
	}
	f := &File{path: path, mapping: mapping}
	if err := f.parse(); err != nil {
		_ = syscall.Munmap(mapping)
		return nil, err
	}
	return f, nil
}

// invalid builds an error wrapping ErrInvalid that names the file and, when
// not empty, the tensor. format is fmt.Errorf's: a cause formatted with %w
// is wrapped too, so errors.Is and errors.As reach it as well as
// ErrInvalid.
func invalid(path, tensor, format string, args ...any) error {
	detail := fmt.Errorf(format, args...)
	if tensor != "" {
		return fmt.Errorf("safetensors: %s: %w: tensor %q: %w", path, ErrInvalid, tensor, detail)
	}
	return fmt.Errorf("safetensors: %s: %w: %w", path, ErrInvalid, detail)
}

// parse validates the mapped file and fills in the header fields of f.
func (f *File) parse() error {
	buf := f.mapping
	n := binary.LittleEndian.Uint64(buf[:8])
	if n > MaxHeaderSize {
		return invalid(f.path, "", "header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if n > uint64(len(buf)-8) {
		return invalid(f.path, "", "header length %d exceeds the %d bytes after the 8-byte length prefix (file truncated?)", n, len(buf)-8)
	}
	header := buf[8 : 8+int(n)]
	f.data = buf[8+int(n):]

	entries, metadata, err := parseHeader(f.path, header)
	if err != nil {
		return err
	}
	if err := validateLayout(f.path, entries, len(f.data)); err != nil {
		return err
	}
	f.entries = entries
	f.metadata = metadata
	f.names = make([]string, 0, len(entries))
	for name := range entries {
		f.names = append(f.names, name)
	}
	sort.Strings(f.names)
	return nil
}

// rawEntry is a tensor entry as decoded from JSON, before validation.
type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseHeader decodes and validates the JSON header, except for the layout
// of the tensors relative to each other and to the data buffer.
func parseHeader(path string, header []byte) (map[string]entry, map[string]string, error) {
	if len(header) == 0 {
		return nil, nil, invalid(path, "", "header is empty, not a JSON object")
	}
	if !utf8.Valid(header) {
		return nil, nil, invalid(path, "", "header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, invalid(path, "", "header is not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, invalid(path, "", "header is not a JSON object")
	}
	entries := make(map[string]entry)
	var metadata map[string]string
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, invalid(path, "", "header is not JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok { // cannot happen: the decoder only yields strings as object keys
			return nil, nil, invalid(path, "", "header is not JSON: non-string key")
		}
		if seen[name] {
			if name == metadataKey {
				return nil, nil, invalid(path, "", "duplicate %q key in header", metadataKey)
			}
			return nil, nil, invalid(path, name, "duplicate tensor name in header")
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, invalid(path, "", "header is not JSON: %w", err)
		}
		if name == metadataKey {
			if metadata, err = parseMetadata(raw); err != nil {
				return nil, nil, invalid(path, "", "%s: %w", metadataKey, err)
			}
			continue
		}
		e, err := parseEntry(raw)
		if err != nil {
			return nil, nil, invalid(path, name, "%w", err)
		}
		entries[name] = e
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, invalid(path, "", "header is not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, nil, invalid(path, "", "header has trailing data after the JSON object")
		}
		return nil, nil, invalid(path, "", "header has trailing data after the JSON object: %w", err)
	}
	return entries, metadata, nil
}

// parseMetadata decodes the "__metadata__" value: null or an object of
// strings without duplicate keys.
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("must be a JSON object of string values")
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("value of key %q is %s, not a string", k, jsonKind(v))
		}
		out[k] = s
	}
	return out, nil
}

// jsonKind names the JSON type of a value decoded into an any.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64, json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "not a string"
}

// parseEntry decodes and validates one tensor entry on its own: dtype,
// shape, offsets and the agreement of its byte size with its offsets.
func parseEntry(raw json.RawMessage) (entry, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return entry{}, errors.New("entry is not a JSON object")
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return entry{}, err
	}
	var r rawEntry
	if err := json.Unmarshal(raw, &r); err != nil {
		return entry{}, fmt.Errorf("malformed entry: %w", err)
	}
	if r.DType == nil {
		return entry{}, errors.New(`entry has no "dtype"`)
	}
	if r.Shape == nil {
		return entry{}, errors.New(`entry has no "shape"`)
	}
	if r.DataOffsets == nil {
		return entry{}, errors.New(`entry has no "data_offsets"`)
	}
	dt := DType(*r.DType)
	size := dt.Size()
	if size == 0 {
		return entry{}, fmt.Errorf("unknown dtype %q", *r.DType)
	}
	shape := make([]int, len(*r.Shape))
	for i, d := range *r.Shape {
		if d < 0 {
			return entry{}, fmt.Errorf("negative dimension %d at index %d of shape %v", d, i, *r.Shape)
		}
		if d > math.MaxInt {
			return entry{}, fmt.Errorf("dimension %d at index %d of shape %v is too large", d, i, *r.Shape)
		}
		shape[i] = int(d)
	}
	nelem, err := numElements(shape)
	if err != nil {
		return entry{}, fmt.Errorf("shape %v: %w", shape, err)
	}
	nbytes, ok := mulInt(nelem, size)
	if !ok {
		return entry{}, fmt.Errorf("shape %v: byte size of %d elements of %s overflows", shape, nelem, dt)
	}
	offs := *r.DataOffsets
	if len(offs) != 2 {
		return entry{}, fmt.Errorf("data_offsets has %d values, want [begin, end]", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin || end > math.MaxInt {
		return entry{}, fmt.Errorf("data_offsets [%d, %d] out of range", begin, end)
	}
	if end-begin != int64(nbytes) {
		return entry{}, fmt.Errorf("size mismatch: data_offsets [%d, %d] span %d bytes, but shape %v of %s needs %d",
			begin, end, end-begin, shape, dt, nbytes)
	}
	return entry{dtype: dt, shape: shape, begin: int(begin), end: int(end)}, nil
}

// validateLayout checks that every tensor lies within the data buffer and
// that together they cover it exactly: no holes, overlaps or trailing bytes.
func validateLayout(path string, entries map[string]entry, dataLen int) error {
	type span struct {
		name       string
		begin, end int
	}
	spans := make([]span, 0, len(entries))
	for name, e := range entries {
		if e.end > dataLen {
			return invalid(path, name, "data_offsets [%d, %d] out of range: the data buffer has %d bytes", e.begin, e.end, dataLen)
		}
		spans = append(spans, span{name, e.begin, e.end})
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return a.begin - b.begin
		}
		if a.end != b.end {
			return a.end - b.end
		}
		return strings.Compare(a.name, b.name)
	})
	pos := 0
	for i, s := range spans {
		if s.begin > pos {
			return invalid(path, s.name, "gap in the data buffer: bytes [%d, %d) belong to no tensor", pos, s.begin)
		}
		if s.begin < pos {
			return invalid(path, s.name, "data_offsets [%d, %d] overlap tensor %q, which ends at %d", s.begin, s.end, spans[i-1].name, pos)
		}
		pos = s.end
	}
	if pos != dataLen {
		return invalid(path, "", "%d trailing bytes after the last tensor (data buffer has %d bytes, tensors cover %d)", dataLen-pos, dataLen, pos)
	}
	return nil
}

// checkDuplicateKeys walks a JSON value and reports the first object key
// that appears twice in the same object, which encoding/json would
// otherwise silently resolve to the last value.
func checkDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return walkJSON(dec, 0)
}

func walkJSON(dec *json.Decoder, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("JSON nested deeper than %d levels", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		seen := make(map[string]bool)
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			if seen[key] {
				return fmt.Errorf("duplicate key %q", key)
			}
			seen[key] = true
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for dec.More() {
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// mulInt returns a*b and whether it fits in a non-negative int; a and b
// must be non-negative.
func mulInt(a, b int) (int, bool) {
	if a != 0 && b > math.MaxInt/a {
		return 0, false
	}
	return a * b, true
}

// numElements returns the product of the dimensions of shape, checking for
// negative dimensions and overflow.
func numElements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d", d)
		}
		var ok bool
		if n, ok = mulInt(n, d); !ok {
			return 0, errors.New("element count overflows")
		}
	}
	// Like the reference implementation, an overflowing partial product is
	// an error even if a later dimension is 0.
	return n, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Names returns the names of the tensors in the file, sorted. The slice is
// the caller's to modify.
func (f *File) Names() []string {
	return slices.Clone(f.names)
}

// Tensor returns the tensor called name. Its Data is a read-only view into
// the mapped file, valid until Close; its Shape is the caller's to modify.
// An unknown name is an error wrapping ErrNotFound.
func (f *File) Tensor(name string) (Tensor, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.mapping == nil {
		return Tensor{}, fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, ErrClosed)
	}
	e, ok := f.entries[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, ErrNotFound)
	}
	return Tensor{
		Name:  name,
		DType: e.dtype,
		Shape: slices.Clone(e.shape),
		Data:  f.data[e.begin:e.end:e.end],
	}, nil
}

// Metadata returns a copy of the file's "__metadata__" map, empty (not nil)
// when the file has none.
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		m[k] = v
	}
	return m
}

// Close unmaps the file. Tensor data obtained from f must not be used
// afterwards. Closing twice is not an error.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mapping == nil {
		return nil
	}
	err := syscall.Munmap(f.mapping)
	f.mapping, f.data = nil, nil
	if err != nil {
		return fmt.Errorf("safetensors: %s: munmap: %w", f.path, err)
	}
	return nil
}
