package gguf

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
	"sync"

	"github.com/idefics2-go/idefics2/internal/mmap"
)

// Magic is the four bytes every GGUF file starts with.
const Magic = "GGUF"

// Version is the GGUF version this package writes. The reader accepts versions 2 and 3, which
// differ only in v3 allowing big-endian files (which this package does not read).
const Version = 3

// DefaultAlignment is the data alignment in bytes when "general.alignment" is absent
// (GGUF_DEFAULT_ALIGNMENT in gguf.h).
const DefaultAlignment = 32

// KeyAlignment is the metadata key holding the data alignment as a u32 power of two.
const KeyAlignment = "general.alignment"

// MaxNameLen is the longest tensor name, in bytes, that ggml accepts (GGML_MAX_NAME − 1: ggml
// keeps names in a 64-byte buffer with a terminating NUL).
const MaxNameLen = 63

// MaxKeyLen is the longest metadata key in bytes (the GGUF specification: at most 2^16−1).
const MaxKeyLen = 1<<16 - 1

// Minimum encoded sizes, used to bound counts by the bytes left before allocating.
const (
	minKVSize     = 8 + 1 + 4 + 1         // key length, 1-byte key, value type, 1-byte value
	minTensorSize = 8 + 1 + 4 + 8 + 4 + 8 // name length, 1-byte name, n_dims, ne0, type, offset
)

// TensorInfo describes one tensor as stored in the GGUF tensor-info section.
type TensorInfo struct {
	Name   string
	Type   Type
	Shape  []uint64 // ggml order: Shape[0] is the contiguous dimension ne0
	Offset uint64   // byte offset of the data from the start of the data section
}

// NumElements returns the product of the dimensions.
func (t TensorInfo) NumElements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size returns the data size in bytes, or 0 when the type or shape is invalid (which a
// TensorInfo of a File never is).
func (t TensorInfo) Size() uint64 {
	n, err := TensorBytes(t.Type, t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// File is a parsed GGUF file. Tensor data is served by TensorData from a read-only memory map
// (Open) or read on demand (Read, or Open where mmap is unavailable).
type File struct {
	Path       string // "" when read through Read
	Version    uint32
	Alignment  uint64 // data alignment in bytes
	DataOffset int64  // start of the data section from the start of the file
	Size       int64  // file size in bytes
	KV         []KV   // metadata in file order (the same pairs as Metadata)
	Metadata   Metadata
	Tensors    []TensorInfo // in file order

	tensorIndex map[string]int
	data        []byte      // whole file, memory-mapped; nil when reading on demand
	r           io.ReaderAt // used when data is nil

	mu     sync.Mutex
	closed bool
	unmap  func() error
	file   *os.File
}

// mmapEnabled lets tests exercise the read-on-demand fallback of Open.
var mmapEnabled = true

// Open opens and validates a GGUF file and memory-maps it read-only. Close releases it; slices
// returned by TensorData must not be used after Close.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		fh.Close()
		return nil, fmt.Errorf("gguf: %s: not a regular file", path)
	}
	size := st.Size()
	var data []byte
	var unmap func() error
	mmErr := errors.New("gguf: mmap disabled")
	if mmapEnabled {
		data, unmap, mmErr = mmap.File(fh, size)
	}
	var f *File
	if mmErr == nil {
		f, err = parse(path, data, nil, size)
		// The mapping stays valid after the descriptor is closed.
		fh.Close()
		if err != nil {
			unmap()
			return nil, err
		}
		f.unmap = unmap
		return f, nil
	}
	// Fallback: no mmap on this platform or for this file (e.g. size 0); read on demand.
	f, err = parse(path, nil, fh, size)
	if err != nil {
		fh.Close()
		return nil, err
	}
	f.file = fh
	return f, nil
}

// Read parses and validates a GGUF image of size bytes from r. TensorData then reads from r.
func Read(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("gguf: negative size %d", size)
	}
	return parse("", nil, r, size)
}

// Close releases the memory map or file. It is idempotent.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if f.unmap != nil {
		err = f.unmap()
		f.unmap = nil
	}
	if f.file != nil {
		if cerr := f.file.Close(); err == nil {
			err = cerr
		}
		f.file = nil
	}
	f.data = nil
	f.r = nil
	if err != nil {
		return fmt.Errorf("gguf: %s: close: %w", f.Path, err)
	}
	return nil
}

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of the named tensor. With a memory map the slice aliases the map
// (no copy; read-only: writing to it faults) and is valid until Close; otherwise it is a fresh
// copy read from the file.
func (f *File) TensorData(name string) ([]byte, error) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, fmt.Errorf("gguf: %s: no tensor %q", f.displayPath(), name)
	}
	t := &f.Tensors[i]
	start := f.DataOffset + int64(t.Offset)
	n := int64(t.Size())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("gguf: %s: tensor %q: file is closed", f.displayPath(), name)
	}
	if f.data != nil {
		return f.data[start : start+n : start+n], nil
	}
	buf := make([]byte, n)
	if _, err := f.r.ReadAt(buf, start); err != nil && !(errors.Is(err, io.EOF) && int64(len(buf)) == n) {
		return nil, fmt.Errorf("gguf: %s: tensor %q: read %d bytes at offset %d: %w", f.displayPath(), name, n, start, err)
	}
	return buf, nil
}

// Mapped reports whether tensor data is served from a memory map.
func (f *File) Mapped() bool { return f.data != nil }

func (f *File) displayPath() string {
	if f.Path == "" {
		return "<reader>"
	}
	return f.Path
}

// parse reads and validates the header, metadata and tensor infos.
func parse(path string, data []byte, r io.ReaderAt, size int64) (*File, error) {
	d := &decoder{path: path, data: data, r: r, size: size}
	if size < 4 {
		return nil, &FormatError{Path: path, Offset: 0, Field: "header: magic",
			Msg: fmt.Sprintf("not a GGUF file: only %d bytes", size), Err: ErrNotGGUF}
	}
	magic, err := d.next(4, "header: magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		return nil, &FormatError{Path: path, Offset: 0, Field: "header: magic",
			Msg: fmt.Sprintf("not a GGUF file: magic %q, want %q", magic, Magic), Err: ErrNotGGUF}
	}
	version, err := d.u32("header: version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 0:
		return nil, d.formatErr(4, "header: version", "version 0")
	case version&0xFFFF == 0:
		return nil, &UnsupportedError{Path: path, Field: "header: version",
			Msg: fmt.Sprintf("byte order: version reads as %#x, a big-endian file", version)}
	case version == 1:
		return nil, &UnsupportedError{Path: path, Field: "header: version", Msg: "GGUF version 1 (32-bit counts)"}
	case version > Version:
		return nil, &UnsupportedError{Path: path, Field: "header: version",
			Msg: fmt.Sprintf("GGUF version %d (this reader knows 2 and 3)", version)}
	}
	nTensors, err := d.count("header: n_tensors", minTensorSize)
	if err != nil {
		return nil, err
	}
	nKV, err := d.count("header: n_kv", minKVSize)
	if err != nil {
		return nil, err
	}
	// Both sections share the bytes left; each count alone fits, so the sum cannot overflow.
	if nKV*minKVSize+nTensors*minTensorSize > uint64(d.remaining()) {
		return nil, d.formatErr(16, "header", "%d key-value pairs and %d tensors need at least %d bytes, only %d left",
			nKV, nTensors, nKV*minKVSize+nTensors*minTensorSize, d.remaining())
	}

	f := &File{Path: path, Version: version, Size: size, data: data, r: r, Alignment: DefaultAlignment}

	// Metadata. Slices grow with what is actually parsed rather than being sized by the counts.
	kvs := make([]KV, 0, min(nKV, 256))
	seen := make(map[string]struct{}, min(nKV, 256))
	for i := uint64(0); i < nKV; i++ {
		off := d.pos
		field := fmt.Sprintf("key-value %d", i)
		key, err := d.str(field + ": key")
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, d.formatErr(off, field, "empty key")
		}
		if len(key) > MaxKeyLen {
			return nil, d.formatErr(off, field, "key of %d bytes exceeds %d", len(key), MaxKeyLen)
		}
		field = fmt.Sprintf("key %q", key)
		if _, dup := seen[key]; dup {
			return nil, d.formatErr(off, field, "duplicate key")
		}
		seen[key] = struct{}{}
		toff := d.pos
		vt, err := d.u32(field + ": value type")
		if err != nil {
			return nil, err
		}
		if !ValueType(vt).Valid() {
			return nil, d.formatErr(toff, field, "unknown value type %d", vt)
		}
		v, err := d.value(ValueType(vt), field, 0)
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, KV{Key: key, Value: v})
		if key == KeyAlignment {
			a, ok := v.Data.(uint32)
			if v.Type != ValueUint32 || !ok {
				return nil, d.formatErr(off, field, "type %s, want u32", v.TypeName())
			}
			if a == 0 || a&(a-1) != 0 {
				return nil, d.formatErr(off, field, "alignment %d is not a power of two", a)
			}
			f.Alignment = uint64(a)
		}
	}
	f.KV = kvs
	md, err := NewMetadata(kvs)
	if err != nil {
		return nil, err // unreachable: duplicates and values were checked above
	}
	f.Metadata = md

	// Tensor infos.
	f.Tensors = make([]TensorInfo, 0, min(nTensors, 1024))
	f.tensorIndex = make(map[string]int, min(nTensors, 1024))
	for i := uint64(0); i < nTensors; i++ {
		off := d.pos
		field := fmt.Sprintf("tensor %d", i)
		name, err := d.str(field + ": name")
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, d.formatErr(off, field, "empty name")
		}
		if len(name) > MaxNameLen {
			return nil, d.formatErr(off, field, "name of %d bytes exceeds ggml's %d", len(name), MaxNameLen)
		}
		field = fmt.Sprintf("tensor %q", name)
		if _, dup := f.tensorIndex[name]; dup {
			return nil, d.formatErr(off, field, "duplicate tensor name")
		}
		doff := d.pos
		nDims, err := d.u32(field + ": n_dims")
		if err != nil {
			return nil, err
		}
		if nDims == 0 || nDims > MaxDims {
			return nil, d.formatErr(doff, field, "%d dimensions, want 1 to %d", nDims, MaxDims)
		}
		shape := make([]uint64, nDims)
		elems := uint64(1)
		for j := range shape {
			joff := d.pos
			ne, err := d.u64(fmt.Sprintf("%s: dimension %d", field, j))
			if err != nil {
				return nil, err
			}
			if ne == 0 || ne > maxInt64 {
				return nil, d.formatErr(joff, fmt.Sprintf("%s: dimension %d", field, j), "size %d, want 1 to 2^63-1", int64(ne))
			}
			hi, lo := bits.Mul64(elems, ne)
			if hi != 0 || lo > maxInt64 {
				return nil, d.formatErr(joff, fmt.Sprintf("%s: dimension %d", field, j), "element count of shape overflows int64")
			}
			elems = lo
			shape[j] = ne
		}
		typeOff := d.pos
		tt, err := d.u32(field + ": type")
		if err != nil {
			return nil, err
		}
		typ := Type(tt)
		if !typ.Valid() {
			return nil, &UnsupportedError{Path: path, Field: field + ": type", Msg: unknownTypeMsg(tt)}
		}
		if shape[0]%uint64(typ.BlockSize()) != 0 {
			return nil, d.formatErr(typeOff, field, "type %s: ne0 %d is not a multiple of the block size %d", typ, shape[0], typ.BlockSize())
		}
		if _, err := TensorBytes(typ, shape); err != nil {
			return nil, d.formatErr(typeOff, field, "%v", stripPrefix(err))
		}
		ooff := d.pos
		offset, err := d.u64(field + ": offset")
		if err != nil {
			return nil, err
		}
		if offset%f.Alignment != 0 {
			return nil, d.formatErr(ooff, field, "data offset %d is not a multiple of the alignment %d", offset, f.Alignment)
		}
		f.tensorIndex[name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, TensorInfo{Name: name, Type: typ, Shape: shape, Offset: offset})
	}

	// Data section: starts at the next multiple of the alignment.
	end := uint64(d.pos)
	pad := (f.Alignment - end%f.Alignment) % f.Alignment
	if pad > uint64(maxInt64)-end {
		return nil, d.formatErr(d.pos, "data section", "alignment %d overflows the data offset", f.Alignment)
	}
	f.DataOffset = int64(end + pad)
	if len(f.Tensors) > 0 && f.DataOffset > size {
		return nil, d.formatErr(d.pos, "data section", "starts at %d, beyond the file size %d", f.DataOffset, size)
	}
	if err := f.checkExtents(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkExtents verifies that every tensor's data lies inside the file and that no two overlap.
func (f *File) checkExtents() error {
	avail := uint64(0)
	if f.Size > f.DataOffset {
		avail = uint64(f.Size - f.DataOffset)
	}
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	for _, i := range order {
		t := &f.Tensors[i]
		n := t.Size()
		if t.Offset > avail || n > avail-t.Offset {
			return &FormatError{Path: f.Path, Offset: -1, Field: fmt.Sprintf("tensor %q", t.Name),
				Msg: fmt.Sprintf("data [%d, +%d) at file offset %d ends beyond the file size %d",
					t.Offset, n, f.DataOffset+int64(t.Offset), f.Size)}
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		oa, ob := f.Tensors[a].Offset, f.Tensors[b].Offset
		switch {
		case oa < ob:
			return -1
		case oa > ob:
			return 1
		}
		return 0
	})
	for k := 1; k < len(order); k++ {
		p, q := &f.Tensors[order[k-1]], &f.Tensors[order[k]]
		if p.Offset+p.Size() > q.Offset {
			return &FormatError{Path: f.Path, Offset: -1, Field: fmt.Sprintf("tensor %q", q.Name),
				Msg: fmt.Sprintf("data [%d, %d) overlaps tensor %q at [%d, %d)",
					q.Offset, q.Offset+q.Size(), p.Name, p.Offset, p.Offset+p.Size())}
		}
	}
	return nil
}

func unknownTypeMsg(id uint32) string {
	switch id {
	case 4, 5:
		return fmt.Sprintf("tensor type id %d (Q4_2/Q4_3, removed from ggml)", id)
	case 31, 32, 33, 36, 37, 38:
		return fmt.Sprintf("tensor type id %d (a repacked layout removed from GGUF files by ggml)", id)
	}
	return fmt.Sprintf("tensor type id %d (unknown to ggml)", id)
}
