// Package safetensors reads and writes the Hugging Face safetensors format.
//
// A safetensors file is an 8-byte little-endian header length N, then N
// bytes of JSON header, then a data buffer:
//
//	{"__metadata__": {"key": "value"},
//	 "name": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, ...}
//
// data_offsets are [begin, end) byte offsets relative to the start of the
// data buffer. Tensors are stored row-major, little-endian.
//
// The reader memory-maps files read-only and validates every header field
// (dtype, shape, offsets, sizes, coverage of the data buffer) before handing
// out views into the mapping, so a corrupt, truncated or hostile file yields
// an error rather than a panic or an out-of-bounds access. Open reads one
// file; OpenDir reads a checkpoint directory, single-file or sharded with a
// model.safetensors.index.json. Write and WriteFile produce files in the
// same layout as the Python safetensors library (header padded with spaces
// to a multiple of 8 bytes).
package safetensors

// DType is a safetensors element type, spelled as in the file header.
type DType string

// The element types understood by this package.
const (
	BF16   DType = "BF16"    // bfloat16, 2 bytes
	F16    DType = "F16"     // IEEE half precision, 2 bytes
	F32    DType = "F32"     // IEEE single precision, 4 bytes
	F64    DType = "F64"     // IEEE double precision, 8 bytes
	U8     DType = "U8"      // unsigned 8-bit integer (gpt-oss MXFP4 blocks and scales)
	I8     DType = "I8"      // signed 8-bit integer
	I16    DType = "I16"     // signed 16-bit integer
	I32    DType = "I32"     // signed 32-bit integer
	I64    DType = "I64"     // signed 64-bit integer
	BOOL   DType = "BOOL"    // boolean, 1 byte
	U16    DType = "U16"     // unsigned 16-bit integer
	U32    DType = "U32"     // unsigned 32-bit integer
	U64    DType = "U64"     // unsigned 64-bit integer
	F8E4M3 DType = "F8_E4M3" // 8-bit float, 4 exponent and 3 mantissa bits
	F8E5M2 DType = "F8_E5M2" // 8-bit float, 5 exponent and 2 mantissa bits
)

// Size returns the number of bytes of one element of type d, or 0 if d is
// not a known dtype.
func (d DType) Size() int {
	switch d {
	case U8, I8, BOOL, F8E4M3, F8E5M2:
		return 1
	case BF16, F16, I16, U16:
		return 2
	case F32, I32, U32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Tensor is one named, typed, shaped array and its raw little-endian bytes.
type Tensor struct {
	// Name is the tensor's key in the file header.
	Name string
	// DType is the element type.
	DType DType
	// Shape lists the dimensions, outermost first; empty for a scalar.
	Shape []int
	// Data holds the elements, row-major and little-endian. For a tensor
	// returned by a reader it is a read-only view into the memory-mapped
	// file: writing to it faults, and it is valid only until the File or
	// Set it came from is closed. Copy it to keep it longer.
	Data []byte
}

// NumElements returns the number of elements of t: the product of its
// dimensions, 1 for a scalar (empty shape) and 0 if any dimension is 0.
// It returns -1 if a dimension is negative or the product overflows int.
func (t Tensor) NumElements() int {
	n, err := numElements(t.Shape)
	if err != nil {
		return -1
	}
	return n
}
