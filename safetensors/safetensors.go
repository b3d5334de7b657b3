// Package safetensors reads Hugging Face safetensors files and sharded checkpoints.
//
// Format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// (an object mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]} plus an
// optional "__metadata__" object of strings, possibly padded with spaces), then the data section.
// Offsets are relative to the data section, tensors are stored row-major (C order) and
// little-endian. Shapes here are in that PyTorch order, outermost first.
//
// Every header field is validated before it is trusted: the header length is bounded by the file
// size and by 100 MB (the limit of the reference implementation), the JSON must be one object
// without duplicate names, offsets must lie in the data section without overlapping, and shape ×
// dtype size must equal the byte length. Tensor data is served from a read-only memory map
// without copying.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/idefics2-go/idefics2/internal/mmap"
)

// MaxHeaderSize is the largest JSON header accepted, in bytes (MAX_HEADER_SIZE of the
// reference implementation).
const MaxHeaderSize = 100_000_000

// DType is a safetensors element type as spelled in the header ("F32", "BF16", …).
type DType string

// Element types this package serves.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I8   DType = "I8"
	U8   DType = "U8"
	I32  DType = "I32"
	I64  DType = "I64"
	Bool DType = "BOOL"
)

// dtypeSizes lists every dtype of the safetensors specification with its size in bytes; the
// supported ones are marked. Known but unsupported dtypes are still validated for layout.
var dtypeSizes = map[DType]struct {
	size      int
	supported bool
}{
	F32: {4, true}, F16: {2, true}, BF16: {2, true}, I8: {1, true}, U8: {1, true},
	I32: {4, true}, I64: {8, true}, Bool: {1, true},
	"F64": {8, false}, "I16": {2, false}, "U16": {2, false}, "U32": {4, false}, "U64": {8, false},
	"F8_E4M3": {1, false}, "F8_E5M2": {1, false},
}

// Size returns the bytes per element of d, or 0 for a dtype the format does not define.
func (d DType) Size() int { return dtypeSizes[d].size }

// Supported reports whether Tensor serves tensors of this dtype.
func (d DType) Supported() bool { return dtypeSizes[d].supported }

// FormatError reports a malformed file, header or index.
type FormatError struct {
	Path   string // file, "" for Parse
	Tensor string // tensor name, "" when not about one tensor
	Msg    string
}

// Error formats the error as `safetensors: PATH: tensor "NAME": MSG`.
func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// UnsupportedError reports a well-formed tensor of a dtype this package does not serve.
type UnsupportedError struct {
	Path   string
	Tensor string
	DType  DType
}

// Error formats the error as `safetensors: PATH: tensor "NAME": unsupported dtype "D"`.
func (e *UnsupportedError) Error() string {
	p := ""
	if e.Path != "" {
		p = e.Path + ": "
	}
	return fmt.Sprintf("safetensors: %stensor %q: unsupported dtype %q", p, e.Tensor, string(e.DType))
}

// Tensor is one tensor of a file. Data aliases the file's memory map (read-only: writing to it
// faults) and is valid until the file is closed.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64 // PyTorch order, outermost first; empty for a scalar
	Data  []byte  // little-endian, row-major
	File  string  // path of the file holding it
}

// NumElements returns the product of the dimensions (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an opened safetensors file.
type File struct {
	Path     string
	Metadata map[string]string // the "__metadata__" object; nil when absent

	tensors map[string]Tensor
	names   []string

	mu     sync.Mutex
	closed bool
	unmap  func() error
}

// mmapEnabled lets tests exercise the read-into-memory fallback of Open.
var mmapEnabled = true

// Open opens and validates a safetensors file, memory-mapping it read-only. Where mmap is
// unavailable the file is read into memory.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s: not a regular file", path)
	}
	size := st.Size()
	var data []byte
	var unmap func() error
	mmErr := errors.New("mmap disabled")
	if mmapEnabled {
		data, unmap, mmErr = mmap.File(fh, size)
	}
	if mmErr != nil {
		if uint64(size) > math.MaxInt {
			return nil, fmt.Errorf("safetensors: %s: %d bytes do not fit in memory", path, size)
		}
		// Check the header before reading a whole (possibly huge) file into memory.
		if err := precheck(path, fh, size); err != nil {
			return nil, err
		}
		data = make([]byte, size)
		if _, err := io.ReadFull(io.NewSectionReader(fh, 0, size), data); err != nil {
			return nil, fmt.Errorf("safetensors: %s: read: %w", path, err)
		}
	}
	f, err := parse(path, data)
	if err != nil {
		if unmap != nil {
			unmap()
		}
		return nil, err
	}
	f.unmap = unmap
	return f, nil
}

// precheck validates the header length of an unmapped file.
func precheck(path string, r io.ReaderAt, size int64) error {
	var hdr [8]byte
	if size < 8 {
		return &FormatError{Path: path, Msg: fmt.Sprintf("file of %d bytes is shorter than the 8-byte header length", size)}
	}
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("safetensors: %s: read: %w", path, err)
	}
	return checkHeaderLen(path, binary.LittleEndian.Uint64(hdr[:]), size)
}

func checkHeaderLen(path string, n uint64, size int64) error {
	if n > MaxHeaderSize {
		return &FormatError{Path: path, Msg: fmt.Sprintf("header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)}
	}
	if n > uint64(size-8) {
		return &FormatError{Path: path, Msg: fmt.Sprintf("header length %d exceeds the %d bytes after it", n, size-8)}
	}
	return nil
}

// Parse validates an in-memory safetensors image; tensor data aliases data.
func Parse(data []byte) (*File, error) { return parse("", data) }

// headerEntry is one tensor entry of the JSON header.
type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parse(path string, data []byte) (*File, error) {
	size := int64(len(data))
	if size < 8 {
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("file of %d bytes is shorter than the 8-byte header length", size)}
	}
	n := binary.LittleEndian.Uint64(data)
	if err := checkHeaderLen(path, n, size); err != nil {
		return nil, err
	}
	header := data[8 : 8+n]
	body := data[8+n:]
	f := &File{Path: path, tensors: make(map[string]Tensor)}

	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("header is not a JSON object: %s", describeJSON(tok, err))}
	}
	type span struct {
		name       string
		begin, end int64
	}
	var spans []span
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &FormatError{Path: path, Msg: fmt.Sprintf("header JSON: %v", err)}
		}
		name, ok := tok.(string)
		if !ok {
			return nil, &FormatError{Path: path, Msg: fmt.Sprintf("header JSON: key %v is not a string", tok)}
		}
		if name == "__metadata__" {
			if f.Metadata != nil {
				return nil, &FormatError{Path: path, Msg: `header JSON: duplicate "__metadata__"`}
			}
			var md map[string]string
			if err := dec.Decode(&md); err != nil {
				return nil, &FormatError{Path: path, Msg: fmt.Sprintf(`"__metadata__" must map strings to strings: %v`, err)}
			}
			if md == nil {
				md = map[string]string{}
			}
			f.Metadata = md
			continue
		}
		if _, dup := f.tensors[name]; dup {
			return nil, &FormatError{Path: path, Tensor: name, Msg: "duplicate entry in the header"}
		}
		var e headerEntry
		if err := dec.Decode(&e); err != nil {
			return nil, &FormatError{Path: path, Tensor: name, Msg: fmt.Sprintf("header entry: %v", err)}
		}
		t, begin, end, err := checkEntry(path, name, e, int64(len(body)))
		if err != nil {
			return nil, err
		}
		if t.DType.Supported() {
			t.Data = body[begin:end:end]
		}
		t.File = path
		f.tensors[name] = t
		f.names = append(f.names, name)
		spans = append(spans, span{name, begin, end})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("header JSON: %v", err)}
	}
	// Only whitespace (the reference writer pads with spaces) may follow the object.
	if rest := header[dec.InputOffset():]; len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("header JSON: %d bytes of trailing data after the object", len(rest))}
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return cmpInt(a.begin, b.begin)
		}
		return cmpInt(a.end, b.end)
	})
	for i := 1; i < len(spans); i++ {
		p, q := spans[i-1], spans[i]
		if q.begin < p.end {
			return nil, &FormatError{Path: path, Tensor: q.name,
				Msg: fmt.Sprintf("data_offsets [%d, %d] overlap tensor %q at [%d, %d]", q.begin, q.end, p.name, p.begin, p.end)}
		}
	}
	slices.Sort(f.names)
	return f, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func describeJSON(tok json.Token, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("starts with %v", tok)
}

// checkEntry validates one header entry against the data section of dataLen bytes.
func checkEntry(path, name string, e headerEntry, dataLen int64) (Tensor, int64, int64, error) {
	bad := func(format string, args ...any) (Tensor, int64, int64, error) {
		return Tensor{}, 0, 0, &FormatError{Path: path, Tensor: name, Msg: fmt.Sprintf(format, args...)}
	}
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return bad(`header entry needs "dtype", "shape" and "data_offsets"`)
	}
	dt := DType(*e.DType)
	esize := dt.Size()
	if esize == 0 {
		return Tensor{}, 0, 0, &UnsupportedError{Path: path, Tensor: name, DType: dt}
	}
	shape := *e.Shape
	elems := uint64(1)
	for i, d := range shape {
		if d < 0 {
			return bad("shape %v: dimension %d is negative", shape, i)
		}
		hi, lo := bits.Mul64(elems, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return bad("shape %v: element count overflows int64", shape)
		}
		elems = lo
	}
	hi, nbytes := bits.Mul64(elems, uint64(esize))
	if hi != 0 || nbytes > math.MaxInt64 {
		return bad("shape %v of %s: byte size overflows int64", shape, dt)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return bad("data_offsets has %d values, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return bad("data_offsets [%d, %d] are not an ordered pair of non-negative offsets", begin, end)
	}
	if end > dataLen {
		return bad("data_offsets [%d, %d] end beyond the data section of %d bytes", begin, end, dataLen)
	}
	if uint64(end-begin) != nbytes {
		return bad("data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d", begin, end, end-begin, shape, dt, nbytes)
	}
	return Tensor{Name: name, DType: dt, Shape: slices.Clone(shape)}, begin, end, nil
}

// Names returns the tensor names, sorted.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Tensor returns the named tensor. A tensor of a dtype outside the supported set is an
// *UnsupportedError.
func (f *File) Tensor(name string) (Tensor, error) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return Tensor{}, fmt.Errorf("safetensors: %s: tensor %q: file is closed", f.Path, name)
	}
	t, ok := f.tensors[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: no tensor %q", f.Path, name)
	}
	if !t.DType.Supported() {
		return Tensor{}, &UnsupportedError{Path: f.Path, Tensor: name, DType: t.DType}
	}
	t.Shape = slices.Clone(t.Shape)
	return t, nil
}

// Info returns the dtype and shape of the named tensor, whatever its dtype.
func (f *File) Info(name string) (DType, []int64, bool) {
	t, ok := f.tensors[name]
	if !ok {
		return "", nil, false
	}
	return t.DType, slices.Clone(t.Shape), true
}

// Close releases the memory map. It is idempotent; tensor data must not be used afterwards.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.unmap != nil {
		if err := f.unmap(); err != nil {
			return fmt.Errorf("safetensors: %s: close: %w", f.Path, err)
		}
	}
	return nil
}
