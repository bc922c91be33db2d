package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Well-known file names of a Hugging Face checkpoint directory.
const (
	// SingleFileName is the file of an unsharded checkpoint.
	SingleFileName = "model.safetensors"
	// IndexFileName is the index of a sharded checkpoint.
	IndexFileName = "model.safetensors.index.json"
)

// maxIndexSize bounds the size of an index file read into memory.
const maxIndexSize = 64 << 20

// Set is one or several safetensors files seen as a single namespace of
// tensors, as in a sharded checkpoint. Its methods are safe for concurrent
// use.
type Set struct {
	dir    string
	files  []*File
	byName map[string]*File
	names  []string // sorted

	// Load progress (BytesRead, TotalBytes): the checkpoint is mapped, so
	// the honest cheap measure is the data handed out by Tensor, each
	// tensor counted once so that repeated lookups cannot pass the total.
	total   int64 // bytes of the data of every tensor
	read    atomic.Int64
	countMu sync.Mutex
	counted map[string]bool // guarded by countMu
}

// OpenDir opens the checkpoint in directory dir, which holds, in order of
// preference:
//
//   - model.safetensors, a single file; or
//   - model.safetensors.index.json, {"metadata": {...}, "weight_map":
//     {tensor: file}}, naming the shards (paths relative to dir); each shard
//     is opened once, and every tensor of weight_map must be in the file it
//     is mapped to; or
//   - failing both, exactly the *.safetensors files in dir, in sorted order.
//
// Symbolic links (as in the Hugging Face cache) are followed. The namespace
// is the union of the tensors of all the files; a name present in two files
// is an error, and so is a directory with no safetensors files at all.
func OpenDir(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("safetensors: %s: not a directory", dir)
	}

	single := filepath.Join(dir, SingleFileName)
	if ok, err := isFile(single); err != nil {
		return nil, err
	} else if ok {
		return openSet(dir, []string{single})
	}

	index := filepath.Join(dir, IndexFileName)
	if ok, err := isFile(index); err != nil {
		return nil, err
	} else if ok {
		return openIndex(dir, index)
	}

	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var paths []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".safetensors") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if ok, err := isFile(p); err != nil {
			return nil, err
		} else if ok {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("safetensors: directory %s holds no checkpoint: expected %s, %s naming the shards, or *.safetensors files",
			dir, SingleFileName, IndexFileName)
	}
	sort.Strings(paths)
	return openSet(dir, paths)
}

// isFile reports whether path exists and is (or links to) a regular file.
func isFile(path string) (bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("safetensors: %w", err)
	}
	return st.Mode().IsRegular(), nil
}

// openIndex opens the shards named by the index file at index.
func openIndex(dir, index string) (*Set, error) {
	fd, err := os.Open(index)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(io.LimitReader(fd, maxIndexSize+1))
	fd.Close()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", index, err)
	}
	if buf.Len() > maxIndexSize {
		return nil, fmt.Errorf("safetensors: %s: index larger than %d bytes", index, maxIndexSize)
	}
	raw := buf.Bytes()
	if err := checkDuplicateKeys(raw); err != nil {
		return nil, fmt.Errorf("safetensors: %s: invalid index: %w", index, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("safetensors: %s: invalid index: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors: %s: invalid index: no \"weight_map\" or an empty one", index)
	}
	shardSet := make(map[string]bool)
	for tensor, shard := range idx.WeightMap {
		if !filepath.IsLocal(shard) {
			return nil, fmt.Errorf("safetensors: %s: invalid index: tensor %q is mapped to %q, not a file inside the directory", index, tensor, shard)
		}
		shardSet[filepath.Clean(shard)] = true
	}
	shards := make([]string, 0, len(shardSet))
	for s := range shardSet {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	paths := make([]string, len(shards))
	for i, s := range shards {
		paths[i] = filepath.Join(dir, s)
		if ok, err := isFile(paths[i]); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("safetensors: %s: shard %q is missing (no regular file %s)", index, s, paths[i])
		}
	}
	set, err := openSet(dir, paths)
	if err != nil {
		return nil, err
	}
	tensors := make([]string, 0, len(idx.WeightMap))
	for t := range idx.WeightMap {
		tensors = append(tensors, t)
	}
	sort.Strings(tensors)
	for _, t := range tensors {
		want := filepath.Join(dir, filepath.Clean(idx.WeightMap[t]))
		f, ok := set.byName[t]
		if !ok || f.path != want {
			set.Close()
			return nil, fmt.Errorf("safetensors: %s: tensor %q is mapped to shard %q, which does not contain it", index, t, idx.WeightMap[t])
		}
	}
	return set, nil
}

// openSet opens every file of paths and merges their namespaces.
func openSet(dir string, paths []string) (*Set, error) {
	s := &Set{dir: dir, byName: make(map[string]*File), counted: make(map[string]bool)}
	for _, p := range paths {
		f, err := Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.files = append(s.files, f)
		// Open checked that the tensors cover the data buffer exactly.
		s.total += int64(len(f.data))
		for _, name := range f.names {
			if prev, dup := s.byName[name]; dup {
				s.Close()
				return nil, fmt.Errorf("safetensors: %s: tensor %q is in both %s and %s", dir, name, prev.path, f.path)
			}
			s.byName[name] = f
			s.names = append(s.names, name)
		}
	}
	sort.Strings(s.names)
	return s, nil
}

// Dir returns the directory the set was opened from.
func (s *Set) Dir() string { return s.dir }

// Files returns the paths of the files of the set, in the order they were
// opened.
func (s *Set) Files() []string {
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.path
	}
	return out
}

// Names returns the names of all the tensors of the set, sorted. The slice
// is the caller's to modify.
func (s *Set) Names() []string {
	return slices.Clone(s.names)
}

// Tensor returns the tensor called name from whichever file holds it, as
// File.Tensor does. An unknown name is an error wrapping ErrNotFound.
func (s *Set) Tensor(name string) (Tensor, error) {
	f, ok := s.byName[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: tensor %q: %w", s.dir, name, ErrNotFound)
	}
	t, err := f.Tensor(name)
	if err != nil {
		return t, err
	}
	s.countMu.Lock()
	first := !s.counted[name]
	s.counted[name] = true
	s.countMu.Unlock()
	if first {
		s.read.Add(int64(len(t.Data)))
	}
	return t, nil
}

// BytesRead is how many bytes of tensor data Tensor has handed out so
// far, each tensor counted once: a loader's progress towards TotalBytes.
// The data is memory-mapped, so the pages themselves may be read from
// disk later, when first touched. Safe to call while another goroutine
// loads, and after Close.
func (s *Set) BytesRead() int64 { return s.read.Load() }

// TotalBytes is the size of the data of all the tensors of the set (the
// files without their headers): BytesRead once every tensor has been
// handed out.
func (s *Set) TotalBytes() int64 { return s.total }

// Close closes every file of the set, returning the errors joined. Tensor
// data obtained from s must not be used afterwards.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
