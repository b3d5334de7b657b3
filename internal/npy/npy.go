// Package npy reads and writes NumPy .npy files (format versions 1.0, 2.0 and 3.0), the exchange format of the
// Hugging Face reference fixtures and of the runner's --dump output.
//
// Only C-ordered arrays of fixed-size numeric or bool dtypes are supported; Fortran order and object arrays are
// rejected with an error.
package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxHeaderLen bounds the header dictionary; real headers are under 1 KiB.
const maxHeaderLen = 1 << 20

// magic is the six-byte prefix of every .npy file.
var magic = []byte("\x93NUMPY")

// Array is a decoded .npy array: its shape (outermost first, as NumPy prints it), its dtype descriptor with the byte
// order stripped (e.g. "f4", "i8", "b1") and the raw little-endian element bytes.
type Array struct {
	Shape []int
	DType string
	Data  []byte
}

// Len is the number of elements (the product of Shape; 1 for a scalar).
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		if d != 0 && n > math.MaxInt64/16/d {
			return -1
		}
		n *= d
	}
	return n
}

// Read opens and decodes the .npy file at path.
func Read(path string) (*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	defer f.Close()
	a, err := Decode(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return a, nil
}

// Decode reads one .npy array from r.
func Decode(r io.Reader) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy: reading magic: %w", err)
	}
	if !bytes.Equal(pre[:6], magic) {
		return nil, errors.New("npy: not a .npy file (bad magic)")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, fmt.Errorf("npy: unsupported format version %d.%d", pre[6], pre[7])
	}
	if hlen > maxHeaderLen {
		return nil, fmt.Errorf("npy: header length %d too large", hlen)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("npy: reading header: %w", err)
	}
	descr, fortran, shape, err := parseHeader(string(hdr))
	if err != nil {
		return nil, err
	}
	if fortran {
		return nil, errors.New("npy: fortran_order arrays are not supported")
	}
	dtype, size, err := normalizeDType(descr)
	if err != nil {
		return nil, err
	}
	a := &Array{Shape: shape, DType: dtype}
	n := a.Len()
	if n < 0 || n > math.MaxInt64/8/size {
		return nil, fmt.Errorf("npy: shape %v too large", shape)
	}
	buf := &bytes.Buffer{}
	if _, err := io.CopyN(buf, r, int64(n*size)); err != nil {
		return nil, fmt.Errorf("npy: reading %d bytes of data: %w", n*size, err)
	}
	a.Data = buf.Bytes()
	if strings.HasPrefix(descr, ">") && size > 1 {
		swap(a.Data, size)
	}
	return a, nil
}

func swap(b []byte, size int) {
	for i := 0; i+size <= len(b); i += size {
		for j := 0; j < size/2; j++ {
			b[i+j], b[i+size-1-j] = b[i+size-1-j], b[i+j]
		}
	}
}

// normalizeDType strips the byte-order mark and returns the dtype and its element size.
func normalizeDType(descr string) (string, int, error) {
	d := strings.TrimLeft(descr, "<>=|")
	switch d {
	case "f2", "i2", "u2":
		return d, 2, nil
	case "f4", "i4", "u4":
		return d, 4, nil
	case "f8", "i8", "u8":
		return d, 8, nil
	case "b1", "i1", "u1", "?":
		if d == "?" {
			d = "b1"
		}
		return d, 1, nil
	}
	return "", 0, fmt.Errorf("npy: unsupported dtype %q", descr)
}

// parseHeader reads the Python dict literal of a .npy header.
func parseHeader(h string) (descr string, fortran bool, shape []int, err error) {
	get := func(key string) (string, bool) {
		i := strings.Index(h, "'"+key+"'")
		if i < 0 {
			return "", false
		}
		rest := strings.TrimSpace(h[i+len(key)+2:])
		rest = strings.TrimPrefix(rest, ":")
		return strings.TrimSpace(rest), true
	}
	v, ok := get("descr")
	if !ok || len(v) < 2 || v[0] != '\'' {
		return "", false, nil, fmt.Errorf("npy: header without descr: %q", h)
	}
	end := strings.IndexByte(v[1:], '\'')
	if end < 0 {
		return "", false, nil, fmt.Errorf("npy: malformed descr in header %q", h)
	}
	descr = v[1 : 1+end]
	if v, ok := get("fortran_order"); ok {
		fortran = strings.HasPrefix(v, "True")
	}
	v, ok = get("shape")
	if !ok || len(v) == 0 || v[0] != '(' {
		return "", false, nil, fmt.Errorf("npy: header without shape: %q", h)
	}
	end = strings.IndexByte(v, ')')
	if end < 0 {
		return "", false, nil, fmt.Errorf("npy: malformed shape in header %q", h)
	}
	shape = []int{}
	for _, f := range strings.Split(v[1:end], ",") {
		f = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(f), "L"))
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return "", false, nil, fmt.Errorf("npy: bad dimension %q in header", f)
		}
		shape = append(shape, d)
	}
	return descr, fortran, shape, nil
}

// Float32s returns the elements converted to float32 (from f2, f4, f8 and integer dtypes).
func (a *Array) Float32s() ([]float32, error) {
	n := a.Len()
	out := make([]float32, n)
	d := a.Data
	switch a.DType {
	case "f4":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case "f8":
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	case "f2":
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(d[2*i:]))
		}
	default:
		ints, err := a.Int64s()
		if err != nil {
			return nil, fmt.Errorf("npy: dtype %s is not numeric", a.DType)
		}
		for i, v := range ints {
			out[i] = float32(v)
		}
	}
	return out, nil
}

// Int64s returns the elements as int64 (from integer and bool dtypes).
func (a *Array) Int64s() ([]int64, error) {
	n := a.Len()
	out := make([]int64, n)
	d := a.Data
	switch a.DType {
	case "i8":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		}
	case "u8":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		}
	case "i4":
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
		}
	case "u4":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case "i2":
		for i := range out {
			out[i] = int64(int16(binary.LittleEndian.Uint16(d[2*i:])))
		}
	case "u2":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case "i1":
		for i := range out {
			out[i] = int64(int8(d[i]))
		}
	case "u1", "b1":
		for i := range out {
			out[i] = int64(d[i])
		}
	default:
		return nil, fmt.Errorf("npy: dtype %s is not an integer type", a.DType)
	}
	return out, nil
}

// Bools returns the elements as bools (nonzero is true).
func (a *Array) Bools() ([]bool, error) {
	ints, err := a.Int64s()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(ints))
	for i, v := range ints {
		out[i] = v != 0
	}
	return out, nil
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 31:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// Encode writes a version-1.0 .npy header for dtype descr (e.g. "<f4") and shape, then data.
func Encode(w io.Writer, descr string, shape []int, data []byte) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	// Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
	total := len(magic) + 2 + 2 + len(h) + 1
	if pad := (64 - total%64) % 64; pad > 0 {
		h += strings.Repeat(" ", pad)
	}
	h += "\n"
	if len(h) > math.MaxUint16 {
		return errors.New("npy: header too long")
	}
	var pre [10]byte
	copy(pre[:], magic)
	pre[6], pre[7] = 1, 0
	binary.LittleEndian.PutUint16(pre[8:], uint16(len(h)))
	if _, err := w.Write(pre[:]); err != nil {
		return err
	}
	if _, err := io.WriteString(w, h); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

func checkLen(shape []int, n int) error {
	want := 1
	for _, d := range shape {
		want *= d
	}
	if want != n {
		return fmt.Errorf("npy: shape %v holds %d elements, data has %d", shape, want, n)
	}
	return nil
}

// writeFile writes atomically: a temporary file in the target folder renamed on success.
func writeFile(path, descr string, shape []int, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".npy-*")
	if err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	bw := bufio.NewWriter(tmp)
	err = Encode(bw, descr, shape, data)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("npy: writing %s: %w", path, err)
	}
	return nil
}

// WriteFloat32 writes a float32 array of the given shape to path.
func WriteFloat32(path string, shape []int, data []float32) error {
	if err := checkLen(shape, len(data)); err != nil {
		return err
	}
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return writeFile(path, "<f4", shape, b)
}

// WriteInt64 writes an int64 array of the given shape to path.
func WriteInt64(path string, shape []int, data []int64) error {
	if err := checkLen(shape, len(data)); err != nil {
		return err
	}
	b := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	return writeFile(path, "<i8", shape, b)
}

// WriteBool writes a bool array of the given shape to path.
func WriteBool(path string, shape []int, data []bool) error {
	if err := checkLen(shape, len(data)); err != nil {
		return err
	}
	b := make([]byte, len(data))
	for i, v := range data {
		if v {
			b[i] = 1
		}
	}
	return writeFile(path, "|b1", shape, b)
}
