package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// Write writes tensors and metadata to w as a safetensors file: the tensors
// in the given order with their data contiguous, and the JSON header padded
// with spaces to a multiple of 8 bytes, as the Python library does, so the
// data buffer starts 8-byte aligned. Metadata keys are written sorted;
// "__metadata__" is omitted when metadata is empty.
//
// Every tensor must have a non-empty name, unique and not "__metadata__",
// a known dtype, non-negative dimensions, and exactly elements×size bytes
// of Data; otherwise Write returns an error naming the tensor before
// writing anything.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header, err := buildHeader(tensors, metadata)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	if _, err := bw.Write(lenBuf[:]); err != nil {
		return fmt.Errorf("safetensors: write header length: %w", err)
	}
	if _, err := bw.Write(header); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, t := range tensors {
		if _, err := bw.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", t.Name, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// buildHeader validates tensors and returns the padded JSON header.
func buildHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	seen := make(map[string]bool, len(tensors))
	offset := 0
	for _, t := range tensors {
		if t.Name == "" {
			return nil, errors.New("safetensors: write: tensor with an empty name")
		}
		if t.Name == metadataKey {
			return nil, fmt.Errorf("safetensors: write: tensor name %q is reserved", t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("safetensors: write: tensor %q: duplicate name", t.Name)
		}
		seen[t.Name] = true
		size := t.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("safetensors: write: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		n, err := numElements(t.Shape)
		if err != nil {
			return nil, fmt.Errorf("safetensors: write: tensor %q: shape %v: %w", t.Name, t.Shape, err)
		}
		nbytes, ok := mulInt(n, size)
		if !ok {
			return nil, fmt.Errorf("safetensors: write: tensor %q: shape %v: byte size overflows", t.Name, t.Shape)
		}
		if len(t.Data) != nbytes {
			return nil, fmt.Errorf("safetensors: write: tensor %q: %d bytes of data, but shape %v of %s needs %d",
				t.Name, len(t.Data), t.Shape, t.DType, nbytes)
		}
		end, ok := addInt(offset, nbytes)
		if !ok {
			return nil, fmt.Errorf("safetensors: write: tensor %q: data buffer size overflows", t.Name)
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeJSONString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(d))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.Itoa(offset))
		b.WriteByte(',')
		b.WriteString(strconv.Itoa(end))
		b.WriteString(`]}`)
		offset = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: write: header of %d bytes exceeds the limit of %d", b.Len(), MaxHeaderSize)
	}
	return b.Bytes(), nil
}

// writeJSONString appends s to b as a JSON string. Unlike json.Marshal's
// default, it leaves <, > and & unescaped, as the Python library does.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // cannot fail for a string
	b.Truncate(b.Len() - 1) // Encode appends a newline
}

// addInt returns a+b and whether it fits in an int; a and b must be
// non-negative.
func addInt(a, b int) (int, bool) {
	c := a + b
	return c, c >= a
}

// WriteFile writes tensors and metadata to the file at path as Write does.
// It writes a temporary file in the same directory and renames it into
// place, so path never holds a partial file; the result has mode 0644.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) (err error) {
	if _, err := buildHeader(tensors, metadata); err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := Write(tmp, tensors, metadata); err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
