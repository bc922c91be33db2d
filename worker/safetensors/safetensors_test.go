package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// f32Bytes encodes float32 values little-endian.
func f32Bytes(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// seqBytes returns n bytes 0, 1, 2, ... (mod 256), offset by start.
func seqBytes(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// rawFile assembles a file from a literal header and data buffer.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func writeTemp(t testing.TB, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustWriteFile(t testing.TB, path string, tensors []Tensor, meta map[string]string) {
	t.Helper()
	if err := WriteFile(path, tensors, meta); err != nil {
		t.Fatal(err)
	}
}

func allDTypeTensors() []Tensor {
	return []Tensor{
		{Name: "a.f32", DType: F32, Shape: []int{2, 3}, Data: f32Bytes(1, 2, 3, 4, 5, 6)},
		{Name: "b.bf16", DType: BF16, Shape: []int{4}, Data: seqBytes(8, 10)},
		{Name: "c.blocks", DType: U8, Shape: []int{2, 2, 4}, Data: seqBytes(16, 100)},
		{Name: "d.scalar", DType: I64, Shape: []int{}, Data: binary.LittleEndian.AppendUint64(nil, uint64(1<<40))},
		{Name: "e.empty", DType: F32, Shape: []int{0, 3}, Data: []byte{}},
		{Name: "f.f16", DType: F16, Shape: []int{1, 1}, Data: []byte{0x00, 0x3c}},
		{Name: "g.f64", DType: F64, Shape: []int{1}, Data: seqBytes(8, 1)},
		{Name: "h.i8", DType: I8, Shape: []int{3}, Data: []byte{0xff, 0, 1}},
		{Name: "i.i16", DType: I16, Shape: []int{2}, Data: seqBytes(4, 7)},
		{Name: "j.i32", DType: I32, Shape: []int{1, 2}, Data: seqBytes(8, 9)},
		{Name: "k.bool", DType: BOOL, Shape: []int{2}, Data: []byte{1, 0}},
		{Name: "l.u16", DType: U16, Shape: []int{1}, Data: seqBytes(2, 3)},
		{Name: "m.u32", DType: U32, Shape: []int{1}, Data: seqBytes(4, 5)},
		{Name: "n.u64", DType: U64, Shape: []int{1}, Data: seqBytes(8, 200)},
		{Name: "o.e4m3", DType: F8E4M3, Shape: []int{5}, Data: seqBytes(5, 50)},
		{Name: "p.e5m2", DType: F8E5M2, Shape: []int{2, 0}, Data: nil},
		{Name: "q.second_empty", DType: U8, Shape: []int{0}, Data: nil},
	}
}

func TestDTypeSize(t *testing.T) {
	want := map[DType]int{
		BF16: 2, F16: 2, F32: 4, F64: 8, U8: 1, I8: 1, I16: 2, I32: 4, I64: 8,
		BOOL: 1, U16: 2, U32: 4, U64: 8, F8E4M3: 1, F8E5M2: 1,
		"f32": 0, "": 0, "C64": 0,
	}
	for d, n := range want {
		if got := d.Size(); got != n {
			t.Errorf("%q.Size() = %d, want %d", d, got, n)
		}
	}
}

func TestNumElements(t *testing.T) {
	for _, c := range []struct {
		shape []int
		want  int
	}{
		{nil, 1}, {[]int{}, 1}, {[]int{3}, 3}, {[]int{2, 3, 4}, 24}, {[]int{5, 0, 7}, 0},
		{[]int{-1, 2}, -1}, {[]int{math.MaxInt / 2, 3}, -1},
	} {
		if got := (Tensor{Shape: c.shape}).NumElements(); got != c.want {
			t.Errorf("NumElements(%v) = %d, want %d", c.shape, got, c.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rt.safetensors")
	tensors := allDTypeTensors()
	meta := map[string]string{"format": "pt", "note": `quotes " and <html> & ünïcode`, "": "empty key"}
	mustWriteFile(t, path, tensors, meta)

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hlen := binary.LittleEndian.Uint64(raw)
	if hlen%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", hlen)
	}
	if !bytes.HasSuffix(bytes.TrimRight(raw[8:8+hlen], " "), []byte("}")) {
		t.Errorf("header is not padded with spaces: %q", raw[8:8+hlen])
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("WriteFile left extra files: %v", ents)
	}

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Path() != path {
		t.Errorf("Path() = %q", f.Path())
	}
	var wantNames []string
	for _, tt := range tensors {
		wantNames = append(wantNames, tt.Name)
	}
	slices.Sort(wantNames)
	if got := f.Names(); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Names() = %v, want %v", got, wantNames)
	}
	if got := f.Metadata(); !reflect.DeepEqual(got, meta) {
		t.Errorf("Metadata() = %v, want %v", got, meta)
	}
	for _, want := range tensors {
		got, err := f.Tensor(want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != want.Name || got.DType != want.DType || len(got.Shape) != len(want.Shape) ||
			(len(want.Shape) > 0 && !reflect.DeepEqual(got.Shape, want.Shape)) || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("tensor %q: got %v %v %x, want %v %v %x", want.Name, got.DType, got.Shape, got.Data, want.DType, want.Shape, want.Data)
		}
		if got.NumElements()*got.DType.Size() != len(got.Data) {
			t.Errorf("tensor %q: %d elements, %d bytes", want.Name, got.NumElements(), len(got.Data))
		}
		if cap(got.Data) != len(got.Data) {
			t.Errorf("tensor %q: Data capacity %d extends past its length %d", want.Name, cap(got.Data), len(got.Data))
		}
	}
	// The returned shape is a copy.
	a, _ := f.Tensor("a.f32")
	a.Shape[0] = 99
	if a2, _ := f.Tensor("a.f32"); a2.Shape[0] != 2 {
		t.Errorf("modifying a returned Shape changed the file's")
	}

	if _, err := f.Tensor("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), path) {
		t.Errorf("unknown tensor: err = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.Tensor("a.f32"); !errors.Is(err, ErrClosed) {
		t.Errorf("Tensor after Close: err = %v", err)
	}
}

func TestNoMetadataAndNoTensors(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if want := rawFile("{}      ", nil); !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("empty file = %q, want %q", buf.Bytes(), want)
	}
	p := writeTemp(t, t.TempDir(), "e.safetensors", buf.Bytes())
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Names()) != 0 || len(f.Metadata()) != 0 || f.Metadata() == nil {
		t.Errorf("Names %v Metadata %v", f.Names(), f.Metadata())
	}
}

func TestWriteMatchesPythonBytes(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "python.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	// The Python library orders tensors by alignment, then name; given the
	// same order, Write must produce the same bytes.
	f, err := Open(filepath.Join("testdata", "python.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var tensors []Tensor
	for _, name := range []string{"ids", "empty", "model.weight", "scale", "norm.bf16", "mlp.blocks"} {
		tt, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, tt)
	}
	var buf bytes.Buffer
	if err := Write(&buf, tensors, f.Metadata()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), golden) {
		t.Errorf("Write output differs from the Python library's:\n got %q\nwant %q", buf.Bytes(), golden)
	}
}

func TestPythonGolden(t *testing.T) {
	f, err := Open(filepath.Join("testdata", "python.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantNames := []string{"empty", "ids", "mlp.blocks", "model.weight", "norm.bf16", "scale"}
	if got := f.Names(); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Names() = %v, want %v", got, wantNames)
	}
	if got, want := f.Metadata(), map[string]string{"format": "pt", "source": "gen.py"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Metadata() = %v, want %v", got, want)
	}
	get := func(name string, dt DType, shape []int) []byte {
		t.Helper()
		tt, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if tt.DType != dt || len(tt.Shape) != len(shape) || (len(shape) > 0 && !reflect.DeepEqual(tt.Shape, shape)) {
			t.Errorf("%s: %s %v, want %s %v", name, tt.DType, tt.Shape, dt, shape)
		}
		return tt.Data
	}
	if got, want := get("model.weight", F32, []int{2, 3}), f32Bytes(0, 0.5, 1, 1.5, 2, 2.5); !bytes.Equal(got, want) {
		t.Errorf("model.weight = %x, want %x", got, want)
	}
	blocks := get("mlp.blocks", U8, []int{2, 2, 4})
	for i, b := range blocks {
		if int(b) != 15-i {
			t.Errorf("mlp.blocks[%d] = %d, want %d", i, b, 15-i)
		}
	}
	ids := get("ids", I64, []int{3})
	for i, want := range []int64{-1, 0, 1 << 40} {
		if got := int64(binary.LittleEndian.Uint64(ids[8*i:])); got != want {
			t.Errorf("ids[%d] = %d, want %d", i, got, want)
		}
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(get("scale", F32, nil))); got != 3.25 {
		t.Errorf("scale = %v, want 3.25", got)
	}
	if got := get("empty", F32, []int{0, 4}); len(got) != 0 {
		t.Errorf("empty has %d bytes", len(got))
	}
	bf := get("norm.bf16", BF16, []int{3})
	for i, want := range []float32{1, -2, 0.5} {
		if got := math.Float32frombits(uint32(binary.LittleEndian.Uint16(bf[2*i:])) << 16); got != want {
			t.Errorf("norm.bf16[%d] = %v, want %v", i, got, want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		tensors []Tensor
		want    string
	}{
		{"size mismatch", []Tensor{{Name: "x", DType: F32, Shape: []int{2}, Data: make([]byte, 7)}}, `tensor "x": 7 bytes of data, but shape [2] of F32 needs 8`},
		{"unknown dtype", []Tensor{{Name: "x", DType: "F128", Shape: []int{1}}}, `tensor "x": unknown dtype "F128"`},
		{"negative dim", []Tensor{{Name: "x", DType: U8, Shape: []int{-1}}}, `tensor "x": shape [-1]: negative dimension`},
		{"overflow", []Tensor{{Name: "x", DType: U8, Shape: []int{1 << 40, 1 << 40}}}, `tensor "x": shape`},
		{"duplicate", []Tensor{{Name: "x", DType: U8, Shape: []int{0}}, {Name: "x", DType: U8, Shape: []int{0}}}, `tensor "x": duplicate name`},
		{"reserved", []Tensor{{Name: "__metadata__", DType: U8, Shape: []int{0}}}, `"__metadata__" is reserved`},
		{"empty name", []Tensor{{DType: U8, Shape: []int{0}}}, `empty name`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, c.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Write: err = %v, want it to contain %q", err, c.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing", buf.Len())
			}
			p := filepath.Join(t.TempDir(), "w.safetensors")
			err = WriteFile(p, c.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("WriteFile: err = %v, want it to contain %q and the path", err, c.want)
			}
			if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 0 {
				t.Errorf("WriteFile left files behind: %v", ents)
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteIOError(t *testing.T) {
	err := Write(failWriter{}, allDTypeTensors(), nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v", err)
	}
}

func TestMalformed(t *testing.T) {
	const ok = `"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`
	lenOnly := func(n uint64, rest int) []byte {
		return append(binary.LittleEndian.AppendUint64(nil, n), make([]byte, rest)...)
	}
	cases := []struct {
		name    string
		content []byte
		want    string
	}{
		{"empty file", nil, "file is 0 bytes, shorter than the 8-byte header length"},
		{"truncated header length", []byte{1, 2, 3, 4, 5}, "file is 5 bytes, shorter than the 8-byte header length"},
		{"header length too large", lenOnly(MaxHeaderSize+1, 16), "exceeds the limit"},
		{"header length huge", lenOnly(math.MaxUint64, 16), "exceeds the limit"},
		{"header length past end", lenOnly(100, 50), "header length 100 exceeds the 50 bytes"},
		{"zero header", lenOnly(0, 0), "header is empty"},
		{"header not JSON", rawFile(`{"a":`, nil), "header is not JSON"},
		{"header garbage", rawFile(`hello world`, nil), "header is not JSON"},
		{"header array", rawFile(`[1,2]`, nil), "header is not a JSON object"},
		{"header string", rawFile(`"x"`, nil), "header is not a JSON object"},
		{"header trailing data", rawFile(`{}{}`, nil), "trailing data after the JSON object"},
		{"header trailing nul", rawFile("{}\x00\x00", nil), "trailing data after the JSON object"},
		{"header bad utf8", rawFile("{\"\xff\":1}", nil), "not valid UTF-8"},
		{"entry not object", rawFile(`{"a":[1]}`, nil), `tensor "a": entry is not a JSON object`},
		{"entry null", rawFile(`{"a":null}`, nil), `tensor "a": entry is not a JSON object`},
		{"missing dtype", rawFile(`{"a":{"shape":[1],"data_offsets":[0,1]}}`, []byte{0}), `tensor "a": entry has no "dtype"`},
		{"missing shape", rawFile(`{"a":{"dtype":"U8","data_offsets":[0,1]}}`, []byte{0}), `tensor "a": entry has no "shape"`},
		{"missing offsets", rawFile(`{"a":{"dtype":"U8","shape":[1]}}`, []byte{0}), `tensor "a": entry has no "data_offsets"`},
		{"bad dtype", rawFile(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}`, make([]byte, 16)), `tensor "a": unknown dtype "F128"`},
		{"lowercase dtype", rawFile(`{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `unknown dtype "f32"`},
		{"dtype not string", rawFile(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": malformed entry`},
		{"negative dim", rawFile(`{"a":{"dtype":"U8","shape":[2,-1],"data_offsets":[0,0]}}`, nil), `tensor "a": negative dimension -1`},
		{"fractional dim", rawFile(`{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}`, []byte{0}), `tensor "a": malformed entry`},
		{"dim beyond int64", rawFile(`{"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,1]}}`, []byte{0}), `tensor "a": malformed entry`},
		{"overflowing shape product", rawFile(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}`, nil), `tensor "a": shape [4294967296 4294967296 4]: element count overflows`},
		{"overflowing byte size", rawFile(`{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}`, nil), `byte size of 4611686018427387904 elements of F64 overflows`},
		{"offsets count", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, []byte{0}), `data_offsets has 3 values`},
		{"offsets negative", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, []byte{0}), `tensor "a": data_offsets [-1, 0] out of range`},
		{"offsets reversed", rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, nil), `data_offsets [4, 0] out of range`},
		{"offsets out of range", rawFile(`{"a":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}}`, make([]byte, 4)), `tensor "a": data_offsets [0, 400] out of range: the data buffer has 4 bytes`},
		{"offsets far out of range", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}}`, []byte{0}), `out of range`},
		{"size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": size mismatch: data_offsets [0, 4] span 4 bytes, but shape [2] of F32 needs 8`},
		{"overlapping tensors", rawFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}`, make([]byte, 12)), `tensor "b": data_offsets [4, 12] overlap tensor "a"`},
		{"identical offsets", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, make([]byte, 4)), `overlap tensor "a"`},
		{"gap between tensors", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}`, make([]byte, 12)), `tensor "b": gap in the data buffer: bytes [4, 8) belong to no tensor`},
		{"gap at start", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, make([]byte, 8)), `gap in the data buffer: bytes [0, 4)`},
		{"trailing bytes", rawFile(`{`+ok+`}`, make([]byte, 8)), `4 trailing bytes after the last tensor`},
		{"data without tensors", rawFile(`{}`, []byte{1}), `1 trailing bytes`},
		{"duplicate names", rawFile(`{`+ok+`,`+ok+`}`, make([]byte, 4)), `tensor "a": duplicate tensor name`},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), `duplicate "__metadata__" key`},
		{"duplicate entry key", rawFile(`{"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": duplicate key "dtype"`},
		{"duplicate metadata key", rawFile(`{"__metadata__":{"k":"1","k":"2"}}`, nil), `__metadata__: duplicate key "k"`},
		{"metadata non-string", rawFile(`{"__metadata__":{"k":1},`+ok+`}`, make([]byte, 4)), `__metadata__: value of key "k" is a number, not a string`},
		{"metadata nested", rawFile(`{"__metadata__":{"k":{"x":"y"}}}`, nil), `value of key "k" is an object`},
		{"metadata array", rawFile(`{"__metadata__":["a"]}`, nil), `__metadata__: must be a JSON object`},
		{"metadata string", rawFile(`{"__metadata__":"a"}`, nil), `__metadata__: must be a JSON object`},
		{"deep nesting", rawFile(`{"__metadata__":{"k":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`}}`, nil), `nested deeper`},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, dir, "case"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+".safetensors", c.content)
			f, err := Open(p)
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded, want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, c.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("err = %v does not name the file", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestAccepted(t *testing.T) {
	// Unusual but valid headers.
	cases := []struct {
		name    string
		content []byte
		names   []string
	}{
		{"whitespace and padding", rawFile(" {\n \"a\" : {\"data_offsets\":[0,4],\"shape\":[ 2 ],\"dtype\":\"BF16\"} }\t  ", make([]byte, 4)), []string{"a"}},
		{"null metadata", rawFile(`{"__metadata__":null}`, nil), nil},
		{"unordered offsets", rawFile(`{"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, make([]byte, 4)), []string{"a", "b"}},
		{"empty tensors anywhere", rawFile(`{"z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"e":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]},"end":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`, make([]byte, 2)), []string{"a", "e", "end", "z"}},
		{"unknown entry field", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":true}}`, []byte{1}), []string{"a"}},
		{"zero dim after huge", rawFile(`{"a":{"dtype":"U8","shape":[0,9223372036854775807],"data_offsets":[0,0]}}`, nil), []string{"a"}},
	}
	dir := t.TempDir()
	for i, c := range cases {
		p := writeTemp(t, dir, "ok"+string(rune('a'+i))+".safetensors", c.content)
		f, err := Open(p)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := f.Names(); len(got) != len(c.names) || (len(got) > 0 && !reflect.DeepEqual(got, c.names)) {
			t.Errorf("%s: Names() = %v, want %v", c.name, got, c.names)
		}
		f.Close()
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Errorf("missing file: err = %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
}

// shard writes a safetensors file of U8 tensors named names, each holding
// its own name's bytes, into dir.
func shard(t *testing.T, dir, file string, names ...string) {
	t.Helper()
	var ts []Tensor
	for _, n := range names {
		ts = append(ts, Tensor{Name: n, DType: U8, Shape: []int{len(n)}, Data: []byte(n)})
	}
	mustWriteFile(t, filepath.Join(dir, file), ts, map[string]string{"format": "pt"})
}

func checkSet(t *testing.T, s *Set, names []string) {
	t.Helper()
	if got := s.Names(); !reflect.DeepEqual(got, names) {
		t.Errorf("Names() = %v, want %v", got, names)
	}
	for _, n := range names {
		tt, err := s.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		if string(tt.Data) != n || tt.Name != n || tt.DType != U8 {
			t.Errorf("tensor %q = %+v", n, tt)
		}
	}
	if _, err := s.Tensor("absent"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"absent"`) {
		t.Errorf("unknown tensor: err = %v", err)
	}
}

func TestOpenDirSharded(t *testing.T) {
	dir := t.TempDir()
	shard(t, dir, "model-00001-of-00002.safetensors", "embed", "layers.0.attn")
	shard(t, dir, "model-00002-of-00002.safetensors", "layers.0.mlp", "unembed")
	// A stray file that the index does not name is ignored.
	shard(t, dir, "stray.safetensors", "embed")
	writeTemp(t, dir, IndexFileName, []byte(`{
  "metadata": {"total_size": 40},
  "weight_map": {
    "embed": "model-00001-of-00002.safetensors",
    "layers.0.attn": "model-00001-of-00002.safetensors",
    "layers.0.mlp": "model-00002-of-00002.safetensors",
    "unembed": "model-00002-of-00002.safetensors"
  }
}`))
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkSet(t, s, []string{"embed", "layers.0.attn", "layers.0.mlp", "unembed"})
	if got := s.Files(); len(got) != 2 || filepath.Base(got[0]) != "model-00001-of-00002.safetensors" || filepath.Base(got[1]) != "model-00002-of-00002.safetensors" {
		t.Errorf("Files() = %v", got)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q", s.Dir())
	}

	// Concurrent readers.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range s.Names() {
				if _, err := s.Tensor(n); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tensor("embed"); !errors.Is(err, ErrClosed) {
		t.Errorf("Tensor after Close: err = %v", err)
	}
}

// BytesRead counts each tensor's data once, as Tensor hands it out, and
// reaches TotalBytes (the set's files only) when every tensor has been.
func TestSetBytesRead(t *testing.T) {
	dir := t.TempDir()
	shard(t, dir, "model-00001-of-00002.safetensors", "embed", "layers.0.attn")
	shard(t, dir, "model-00002-of-00002.safetensors", "layers.0.mlp", "unembed")
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want int64
	for _, n := range s.Names() {
		want += int64(len(n)) // each tensor holds its name's bytes
	}
	if s.TotalBytes() != want || s.BytesRead() != 0 {
		t.Fatalf("after OpenDir: %d of %d bytes read, want 0 of %d", s.BytesRead(), s.TotalBytes(), want)
	}
	if _, err := s.Tensor("embed"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tensor("absent"); err == nil {
		t.Fatal("absent tensor found")
	}
	if got := s.BytesRead(); got != int64(len("embed")) {
		t.Errorf("after one tensor: %d bytes read, want %d", got, len("embed"))
	}
	// Concurrent and repeated lookups count each tensor once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range s.Names() {
				if _, err := s.Tensor(n); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if s.BytesRead() != want {
		t.Errorf("after every tensor: %d bytes read, want %d", s.BytesRead(), want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tensor("unembed"); !errors.Is(err, ErrClosed) {
		t.Errorf("Tensor after Close: err = %v", err)
	}
	if s.BytesRead() != want || s.TotalBytes() != want {
		t.Errorf("after Close: %d of %d bytes read, want %d of %d", s.BytesRead(), s.TotalBytes(), want, want)
	}
}

func TestOpenDirSingleFile(t *testing.T) {
	dir := t.TempDir()
	shard(t, dir, SingleFileName, "a", "b")
	// model.safetensors wins over other files and an index.
	shard(t, dir, "other.safetensors", "a")
	writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"zzz":"nothere.safetensors"}}`))
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkSet(t, s, []string{"a", "b"})
	if got := s.Files(); len(got) != 1 || filepath.Base(got[0]) != SingleFileName {
		t.Errorf("Files() = %v", got)
	}
}

func TestOpenDirGlob(t *testing.T) {
	dir := t.TempDir()
	shard(t, dir, "b.safetensors", "x", "y")
	shard(t, dir, "a.safetensors", "w")
	writeTemp(t, dir, "README.md", []byte("not a tensor file"))
	if err := os.Mkdir(filepath.Join(dir, "sub.safetensors"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A symbolic link, as in the Hugging Face cache, is followed.
	blobs := t.TempDir()
	shard(t, blobs, "blob", "z")
	if err := os.Symlink(filepath.Join(blobs, "blob"), filepath.Join(dir, "c.safetensors")); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkSet(t, s, []string{"w", "x", "y", "z"})
	var bases []string
	for _, p := range s.Files() {
		bases = append(bases, filepath.Base(p))
	}
	if want := []string{"a.safetensors", "b.safetensors", "c.safetensors"}; !reflect.DeepEqual(bases, want) {
		t.Errorf("Files() = %v, want %v", bases, want)
	}
}

func TestOpenDirErrors(t *testing.T) {
	t.Run("empty dir", func(t *testing.T) {
		dir := t.TempDir()
		writeTemp(t, dir, "config.json", []byte("{}"))
		_, err := OpenDir(dir)
		if err == nil || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), IndexFileName) ||
			!strings.Contains(err.Error(), "*.safetensors") || !strings.Contains(err.Error(), dir) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no such dir", func(t *testing.T) {
		_, err := OpenDir(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("not a dir", func(t *testing.T) {
		p := writeTemp(t, t.TempDir(), "f", nil)
		_, err := OpenDir(p)
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("err = %v", err)
		}
	})
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string
	}{
		{"missing shard", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a")
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}`))
		}, []string{IndexFileName, `shard "s2.safetensors" is missing`}},
		{"tensor not in its shard", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a")
			shard(t, dir, "s2.safetensors", "b")
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}}`))
		}, []string{IndexFileName, `tensor "c" is mapped to shard "s2.safetensors", which does not contain it`}},
		{"tensor in the other shard", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a")
			shard(t, dir, "s2.safetensors", "b")
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"s2.safetensors","b":"s2.safetensors"}}`))
		}, []string{`tensor "a" is mapped to shard "s2.safetensors", which does not contain it`}},
		{"duplicate across shards (index)", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a", "dup")
			shard(t, dir, "s2.safetensors", "b", "dup")
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","dup":"s1.safetensors"}}`))
		}, []string{`tensor "dup" is in both`, "s1.safetensors", "s2.safetensors"}},
		{"duplicate across files (glob)", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a", "dup")
			shard(t, dir, "s2.safetensors", "dup")
		}, []string{`tensor "dup" is in both`, "s1.safetensors", "s2.safetensors"}},
		{"corrupt shard", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a")
			writeTemp(t, dir, "s2.safetensors", []byte("garbage"))
		}, []string{"s2.safetensors", "shorter than the 8-byte header length"}},
		{"index not JSON", func(t *testing.T, dir string) {
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":`))
		}, []string{IndexFileName, "invalid index"}},
		{"index without weight_map", func(t *testing.T, dir string) {
			writeTemp(t, dir, IndexFileName, []byte(`{"metadata":{}}`))
		}, []string{IndexFileName, `no "weight_map"`}},
		{"index duplicate tensor", func(t *testing.T, dir string) {
			shard(t, dir, "s1.safetensors", "a")
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"s1.safetensors","a":"s1.safetensors"}}`))
		}, []string{IndexFileName, `duplicate key "a"`}},
		{"index escapes dir", func(t *testing.T, dir string) {
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"../s1.safetensors"}}`))
		}, []string{IndexFileName, `"../s1.safetensors", not a file inside the directory`}},
		{"index absolute path", func(t *testing.T, dir string) {
			writeTemp(t, dir, IndexFileName, []byte(`{"weight_map":{"a":"/etc/passwd"}}`))
		}, []string{"not a file inside the directory"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, dir)
			s, err := OpenDir(dir)
			if err == nil {
				s.Close()
				t.Fatalf("OpenDir succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	var valid bytes.Buffer
	if err := Write(&valid, allDTypeTensors()[2:5], map[string]string{"k": "v"}); err != nil {
		f.Fatal(err)
	}
	f.Add(valid.Bytes())
	f.Add(valid.Bytes()[:valid.Len()-1])
	f.Add(valid.Bytes()[:40])
	if golden, err := os.ReadFile(filepath.Join("testdata", "python.safetensors")); err == nil {
		f.Add(golden)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, '{'})
	f.Add(rawFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}`, make([]byte, 12)))
	f.Add(rawFile(`{"a":{"dtype":"U8","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}`, nil))
	f.Add(rawFile(`{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(rawFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{7}))

	// One file per fuzzing process, rewritten for each input: a fresh
	// t.TempDir per input would dominate the cost of an execution.
	p := filepath.Join(f.TempDir(), "fuzz.safetensors")
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := Open(p)
		if err != nil {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		defer file.Close()
		hlen := int(binary.LittleEndian.Uint64(content))
		dataStart := 8 + hlen
		covered := 0
		sum := 0
		for _, name := range file.Names() {
			tt, err := file.Tensor(name)
			if err != nil {
				t.Fatalf("Tensor(%q) after a successful Open: %v", name, err)
			}
			for _, b := range tt.Data {
				sum += int(b)
			}
			n := tt.NumElements()
			if n < 0 || n*tt.DType.Size() != len(tt.Data) {
				t.Fatalf("tensor %q: %d elements of %s but %d bytes", name, n, tt.DType, len(tt.Data))
			}
			e := file.entries[name]
			if e.begin < 0 || e.end < e.begin || dataStart+e.end > len(content) {
				t.Fatalf("tensor %q: data_offsets [%d, %d] outside the file of %d bytes (data at %d)", name, e.begin, e.end, len(content), dataStart)
			}
			if !bytes.Equal(tt.Data, content[dataStart+e.begin:dataStart+e.end]) {
				t.Fatalf("tensor %q: Data differs from the file's bytes", name)
			}
			covered += len(tt.Data)
		}
		if covered != len(content)-dataStart {
			t.Fatalf("tensors cover %d bytes of a %d-byte data buffer", covered, len(content)-dataStart)
		}
		_ = sum
	})
}

// The errors that report a JSON problem wrap the decoder's error as well
// as ErrInvalid, so a caller can reach either.
func TestErrorsWrapTheirCause(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		content []byte
		target  any
	}{
		{"header garbage", rawFile(`hello world`, nil), new(*json.SyntaxError)},
		{"dtype not string", rawFile(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), new(*json.UnmarshalTypeError)},
	} {
		p := writeTemp(t, dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors", c.content)
		_, err := Open(p)
		if !errors.Is(err, ErrInvalid) || !errors.As(err, c.target) {
			t.Errorf("%s: err = %v does not wrap both ErrInvalid and %T", c.name, err, c.target)
		}
	}
	idx := t.TempDir()
	writeTemp(t, idx, IndexFileName, []byte(`{"weight_map": x}`))
	var se *json.SyntaxError
	if _, err := OpenDir(idx); !errors.As(err, &se) {
		t.Errorf("index not JSON: err = %v does not wrap the *json.SyntaxError", err)
	}
}
