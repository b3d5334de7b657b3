package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// decoder reads little-endian fields sequentially from an io.ReaderAt of known size, or directly
// from an in-memory image (the mmap) when data is set. Every read is checked against the bytes
// left before any allocation, so no header field can drive an allocation larger than the file.
type decoder struct {
	path string
	data []byte      // whole file when memory-mapped; nil otherwise
	r    io.ReaderAt // used when data is nil
	size int64
	pos  int64

	// window caches bytes [winOff, winOff+len(win)) of r.
	win    []byte
	winOff int64
}

const windowSize = 64 << 10

func (d *decoder) remaining() int64 { return d.size - d.pos }

// formatErr builds a FormatError at the given offset.
func (d *decoder) formatErr(off int64, field, format string, args ...any) error {
	return &FormatError{Path: d.path, Offset: off, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// next returns the next n bytes and advances. The slice is only valid until the next call.
func (d *decoder) next(n int64, field string) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, d.formatErr(d.pos, field, "truncated: need %d bytes, %d left", n, d.remaining())
	}
	start := d.pos
	if d.data != nil {
		d.pos += n
		return d.data[start : start+n : start+n], nil
	}
	if start >= d.winOff && start+n <= d.winOff+int64(len(d.win)) {
		d.pos += n
		return d.win[start-d.winOff : start-d.winOff+n], nil
	}
	if n > windowSize {
		buf := make([]byte, n)
		if err := d.readAt(buf, start, field); err != nil {
			return nil, err
		}
		d.pos += n
		return buf, nil
	}
	fill := min(int64(windowSize), d.remaining())
	if cap(d.win) < windowSize {
		d.win = make([]byte, windowSize)
	}
	d.win = d.win[:fill]
	d.winOff = start
	if err := d.readAt(d.win, start, field); err != nil {
		d.win = d.win[:0]
		return nil, err
	}
	d.pos += n
	return d.win[:n], nil
}

func (d *decoder) readAt(buf []byte, off int64, field string) error {
	n, err := d.r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return &FormatError{Path: d.path, Offset: off, Field: field, Msg: fmt.Sprintf("read %d bytes: %v", len(buf), err), Err: err}
}

func (d *decoder) u8(field string) (uint8, error) {
	b, err := d.next(1, field)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) u16(field string) (uint16, error) {
	b, err := d.next(2, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (d *decoder) u32(field string) (uint32, error) {
	b, err := d.next(4, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(field string) (uint64, error) {
	b, err := d.next(8, field)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// count reads a u64 element count and checks that count elements of at least minSize bytes each
// fit in the bytes left.
func (d *decoder) count(field string, minSize int64) (uint64, error) {
	off := d.pos
	n, err := d.u64(field)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64 {
		return 0, d.formatErr(off, field, "count %d is negative as int64", n)
	}
	if minSize > 0 && n > uint64(d.remaining()/minSize) {
		return 0, d.formatErr(off, field, "count %d needs at least %d bytes each, only %d bytes left", n, minSize, d.remaining())
	}
	return n, nil
}

// str reads a GGUF string: a u64 length then the bytes.
func (d *decoder) str(field string) (string, error) {
	off := d.pos
	n, err := d.u64(field)
	if err != nil {
		return "", err
	}
	if n > uint64(d.remaining()) {
		return "", d.formatErr(off, field, "string length %d exceeds the %d bytes left", n, d.remaining())
	}
	b, err := d.next(int64(n), field)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// value reads a value of type t (not the type id itself).
func (d *decoder) value(t ValueType, field string, depth int) (Value, error) {
	off := d.pos
	switch t {
	case ValueUint8:
		x, err := d.u8(field)
		return Value{t, x}, err
	case ValueInt8:
		x, err := d.u8(field)
		return Value{t, int8(x)}, err
	case ValueUint16:
		x, err := d.u16(field)
		return Value{t, x}, err
	case ValueInt16:
		x, err := d.u16(field)
		return Value{t, int16(x)}, err
	case ValueUint32:
		x, err := d.u32(field)
		return Value{t, x}, err
	case ValueInt32:
		x, err := d.u32(field)
		return Value{t, int32(x)}, err
	case ValueFloat32:
		x, err := d.u32(field)
		return Value{t, math.Float32frombits(x)}, err
	case ValueUint64:
		x, err := d.u64(field)
		return Value{t, x}, err
	case ValueInt64:
		x, err := d.u64(field)
		return Value{t, int64(x)}, err
	case ValueFloat64:
		x, err := d.u64(field)
		return Value{t, math.Float64frombits(x)}, err
	case ValueBool:
		x, err := d.u8(field)
		if err != nil {
			return Value{}, err
		}
		if x > 1 {
			return Value{}, d.formatErr(off, field, "bool byte is %d, want 0 or 1", x)
		}
		return Value{t, x == 1}, nil
	case ValueString:
		s, err := d.str(field)
		return Value{t, s}, err
	case ValueArray:
		a, err := d.array(field, depth+1)
		return Value{t, a}, err
	}
	return Value{}, d.formatErr(off, field, "unknown value type %d", uint32(t))
}

// array reads an array body: element type, count, elements.
func (d *decoder) array(field string, depth int) (Array, error) {
	off := d.pos
	if depth > maxNesting {
		return Array{}, d.formatErr(off, field, "arrays nested deeper than %d", maxNesting)
	}
	et, err := d.u32(field + ": array element type")
	if err != nil {
		return Array{}, err
	}
	elem := ValueType(et)
	if !elem.Valid() {
		return Array{}, d.formatErr(off, field, "unknown array element type %d", et)
	}
	n, err := d.count(field+": array length", elem.minSize())
	if err != nil {
		return Array{}, err
	}
	if sz := elem.size(); sz > 0 {
		raw, err := d.next(int64(n)*int64(sz), field)
		if err != nil {
			return Array{}, err
		}
		return decodeFixed(elem, raw, int(n), func(i int) error {
			return d.formatErr(off+12+int64(i), fmt.Sprintf("%s: element %d", field, i), "bool byte is %d, want 0 or 1", raw[i])
		})
	}
	switch elem {
	case ValueString:
		out := make([]string, 0, min(n, 1<<16))
		for i := uint64(0); i < n; i++ {
			s, err := d.str(field)
			if err != nil {
				return Array{}, atElement(err, field, i)
			}
			out = append(out, s)
		}
		return Array{elem, out}, nil
	default: // ValueArray
		out := make([]Array, 0, min(n, 1<<10))
		for i := uint64(0); i < n; i++ {
			a, err := d.array(field, depth+1)
			if err != nil {
				return Array{}, atElement(err, field, i)
			}
			out = append(out, a)
		}
		return Array{elem, out}, nil
	}
}

// atElement inserts ": element i" after field in a FormatError's Field. Element names are only
// formatted on error: vocabularies hold hundreds of thousands of strings.
func atElement(err error, field string, i uint64) error {
	if fe, ok := err.(*FormatError); ok && strings.HasPrefix(fe.Field, field) {
		fe.Field = fmt.Sprintf("%s: element %d%s", field, i, fe.Field[len(field):])
	}
	return err
}

// decodeFixed decodes n fixed-size little-endian elements of type t from raw.
func decodeFixed(t ValueType, raw []byte, n int, badBool func(i int) error) (Array, error) {
	le := binary.LittleEndian
	switch t {
	case ValueUint8:
		return Array{t, append([]uint8{}, raw...)}, nil
	case ValueInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return Array{t, out}, nil
	case ValueBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return Array{}, badBool(i)
			}
			out[i] = raw[i] == 1
		}
		return Array{t, out}, nil
	case ValueUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return Array{t, out}, nil
	case ValueInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return Array{t, out}, nil
	case ValueUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return Array{t, out}, nil
	case ValueInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return Array{t, out}, nil
	case ValueFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return Array{t, out}, nil
	case ValueUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return Array{t, out}, nil
	case ValueInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return Array{t, out}, nil
	case ValueFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return Array{t, out}, nil
	}
	return Array{}, fmt.Errorf("gguf: internal: decodeFixed called with %s", t)
}
