package gguf

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
)

// WriterOption configures Create.
type WriterOption func(*writerConfig)

type writerConfig struct {
	alignment uint32
}

// WithAlignment sets the data alignment in bytes (a power of two). A value other than the
// default 32 is recorded as the first metadata pair, "general.alignment" (u32), as readers
// require.
func WithAlignment(n uint32) WriterOption {
	return func(c *writerConfig) { c.alignment = n }
}

type writerState int

const (
	stateDeclaring writerState = iota // SetKV and AddTensor allowed
	stateData                         // header written, tensor data being streamed
	stateFinished                     // temporary file complete and synced, not yet renamed
	stateDone                         // closed or aborted
)

// Writer streams a GGUF v3 file: metadata and tensor infos are declared first, then tensor data
// is written in declaration order. The output goes to a temporary file in the target directory
// that Close renames over the final path; on any failure nothing is left behind.
//
// The output is deterministic and byte-identical to ggml's gguf_write_to_file for the same pairs
// and tensors (in the same order): tensors are laid out contiguously in declaration order, each
// padded with zeros to the alignment, including the last one.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	path    string // final path
	tmpPath string
	file    *os.File
	bw      *bufio.Writer
	written int64 // bytes written to the file so far

	alignment uint64

	kvBuf bytes.Buffer // encoded metadata section
	nKV   int64
	keys  map[string]struct{}

	tensors    []TensorInfo
	sizes      []uint64
	index      map[string]int
	nextOffset uint64

	state      writerState
	cur        int    // index of the next tensor to receive data
	curWritten uint64 // bytes of tensor cur already written by a TensorWriter
	err        error  // sticky I/O error
}

// outputWriter returns what the buffered writer writes to: the temporary file itself. It is a
// variable so that tests can inject a failing writer (a full disk) below the buffer.
var outputWriter = func(f *os.File) io.Writer { return f }

// Create starts a GGUF file at path. The data goes to a temporary file in the same directory
// until Close; call Abort (safe after Close) to discard it on error paths.
func Create(path string, opts ...WriterOption) (*Writer, error) {
	cfg := writerConfig{alignment: DefaultAlignment}
	for _, o := range opts {
		o(&cfg)
	}
	a := cfg.alignment
	if a == 0 || a&(a-1) != 0 {
		return nil, fmt.Errorf("gguf: %s: alignment %d is not a power of two", path, a)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return nil, fmt.Errorf("gguf: %q: no file name", path)
	}
	fh, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		// CreateTemp's *PathError names the random temporary name; the folder is the culprit.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("gguf: %s: cannot create a file in %s: %w", path, filepath.Dir(path), err)
	}
	w := &Writer{
		path:      path,
		tmpPath:   fh.Name(),
		file:      fh,
		bw:        bufio.NewWriterSize(outputWriter(fh), 1<<20),
		alignment: uint64(a),
		keys:      make(map[string]struct{}),
		index:     make(map[string]int),
	}
	if a != DefaultAlignment {
		if err := w.SetKV(KeyAlignment, a); err != nil {
			w.Abort()
			return nil, err
		}
	}
	return w, nil
}

// SetKV appends a metadata pair. v is any value NewValue accepts (fixed-width numbers, bool,
// string, slices of them, Array for nested arrays, or a Value). Keys must be unique and are kept
// in call order. Setting "general.alignment" (u32 power of two) sets the data alignment; it may
// only be set once and not together with a different WithAlignment.
func (w *Writer) SetKV(key string, v any) error {
	if err := w.usable(stateDeclaring, "set key "+fmt.Sprintf("%q", key)); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("gguf: %s: empty metadata key", w.path)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("gguf: %s: metadata key of %d bytes exceeds %d", w.path, len(key), MaxKeyLen)
	}
	if _, dup := w.keys[key]; dup {
		return fmt.Errorf("gguf: %s: metadata key %q set twice", w.path, key)
	}
	val, err := NewValue(v)
	if err != nil {
		return fmt.Errorf("gguf: %s: key %q: %w", w.path, key, stripPrefix(err))
	}
	if key == KeyAlignment {
		a, ok := val.Data.(uint32)
		if val.Type != ValueUint32 || !ok {
			return fmt.Errorf("gguf: %s: key %q must be u32, got %s", w.path, key, val.TypeName())
		}
		if a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: %s: key %q: alignment %d is not a power of two", w.path, key, a)
		}
		if len(w.tensors) > 0 && uint64(a) != w.alignment {
			return fmt.Errorf("gguf: %s: key %q must be set before the first AddTensor", w.path, key)
		}
		w.alignment = uint64(a)
	}
	encodeString(&w.kvBuf, key)
	encodeValue(&w.kvBuf, val)
	w.keys[key] = struct{}{}
	w.nKV++
	return nil
}

// AddTensor declares a tensor of type t and ggml shape (Shape[0] contiguous, 1 to 4 positive
// dimensions, Shape[0] a multiple of the type's block size). All tensors must be declared before
// the first WriteTensor or TensorWriter; their data follows in declaration order.
func (w *Writer) AddTensor(name string, t Type, shape []uint64) error {
	if err := w.usable(stateDeclaring, fmt.Sprintf("add tensor %q", name)); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("gguf: %s: empty tensor name", w.path)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("gguf: %s: tensor %q: name of %d bytes exceeds ggml's %d", w.path, name, len(name), MaxNameLen)
	}
	if _, dup := w.index[name]; dup {
		return fmt.Errorf("gguf: %s: tensor %q added twice", w.path, name)
	}
	size, err := TensorBytes(t, shape)
	if err != nil {
		return fmt.Errorf("gguf: %s: tensor %q: %w", w.path, name, stripPrefix(err))
	}
	padded := alignUp(size, w.alignment)
	if padded < size || w.nextOffset > math.MaxInt64-padded {
		return fmt.Errorf("gguf: %s: tensor %q: data section exceeds 2^63 bytes", w.path, name)
	}
	w.index[name] = len(w.tensors)
	w.tensors = append(w.tensors, TensorInfo{Name: name, Type: t, Shape: append([]uint64(nil), shape...), Offset: w.nextOffset})
	w.sizes = append(w.sizes, size)
	w.nextOffset += padded
	return nil
}

// Tensors returns the declared tensor infos with their data offsets.
func (w *Writer) Tensors() []TensorInfo { return w.tensors }

// WriteTensor writes the data of the named tensor, which must be the next one in declaration
// order, and must be exactly its size in bytes. The first call writes the header.
func (w *Writer) WriteTensor(name string, data []byte) error {
	i, err := w.begin(name)
	if err != nil {
		return err
	}
	if uint64(len(data)) != w.sizes[i] {
		return fmt.Errorf("gguf: %s: tensor %q: got %d bytes of data, want %d (%s %v)",
			w.path, name, len(data), w.sizes[i], w.tensors[i].Type, w.tensors[i].Shape)
	}
	if err := w.write(data); err != nil {
		return err
	}
	return w.finishTensor()
}

// TensorWriter returns a writer for the data of the named tensor, which must be the next one
// in declaration order. Exactly the tensor's size in bytes must be written to it, in any number
// of Write calls, before the next tensor is started or the file is closed; a Write that would go
// past the size fails and writes nothing.
func (w *Writer) TensorWriter(name string) (io.Writer, error) {
	i, err := w.begin(name)
	if err != nil {
		return nil, err
	}
	return &tensorWriter{w: w, idx: i}, nil
}

type tensorWriter struct {
	w   *Writer
	idx int
}

// Write appends p to the tensor's data.
func (tw *tensorWriter) Write(p []byte) (int, error) {
	w := tw.w
	if err := w.usable(stateData, "write tensor data"); err != nil {
		return 0, err
	}
	if w.cur != tw.idx {
		return 0, fmt.Errorf("gguf: %s: tensor %q: data already complete", w.path, w.tensors[tw.idx].Name)
	}
	size := w.sizes[tw.idx]
	if uint64(len(p)) > size-w.curWritten {
		return 0, fmt.Errorf("gguf: %s: tensor %q: write of %d bytes after %d exceeds its size %d",
			w.path, w.tensors[tw.idx].Name, len(p), w.curWritten, size)
	}
	if err := w.write(p); err != nil {
		return 0, err
	}
	w.curWritten += uint64(len(p))
	if w.curWritten == size {
		if err := w.finishTensor(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// begin checks that name is the next tensor and writes the header on first use.
func (w *Writer) begin(name string) (int, error) {
	if w.state == stateDeclaring {
		if w.err != nil {
			return 0, w.err
		}
		if err := w.writeHeader(); err != nil {
			return 0, err
		}
	}
	if err := w.usable(stateData, fmt.Sprintf("write tensor %q", name)); err != nil {
		return 0, err
	}
	i, ok := w.index[name]
	if !ok {
		return 0, fmt.Errorf("gguf: %s: tensor %q was not added", w.path, name)
	}
	if w.cur < len(w.tensors) && w.curWritten != 0 {
		return 0, fmt.Errorf("gguf: %s: tensor %q: tensor %q is incomplete (%d of %d bytes)",
			w.path, name, w.tensors[w.cur].Name, w.curWritten, w.sizes[w.cur])
	}
	if i != w.cur {
		if i < w.cur {
			return 0, fmt.Errorf("gguf: %s: tensor %q: data already written", w.path, name)
		}
		return 0, fmt.Errorf("gguf: %s: tensor %q written out of order: next is %q", w.path, name, w.tensors[w.cur].Name)
	}
	return i, nil
}

// usable checks the writer's state for an operation.
func (w *Writer) usable(want writerState, op string) error {
	if w.err != nil {
		return w.err
	}
	switch {
	case w.state == stateDone:
		return fmt.Errorf("gguf: %s: %s: writer is closed", w.path, op)
	case w.state == stateFinished:
		return fmt.Errorf("gguf: %s: %s: writer is finished", w.path, op)
	case w.state != want && want == stateDeclaring:
		return fmt.Errorf("gguf: %s: %s: tensor data has started; metadata and tensors must be declared first", w.path, op)
	case w.state != want:
		return fmt.Errorf("gguf: %s: %s: header not written", w.path, op)
	}
	return nil
}

// writeHeader writes magic, version, counts, metadata, tensor infos and padding.
func (w *Writer) writeHeader() error {
	var hdr bytes.Buffer
	hdr.WriteString(Magic)
	putU32(&hdr, Version)
	putU64(&hdr, uint64(len(w.tensors)))
	putU64(&hdr, uint64(w.nKV))
	if err := w.write(hdr.Bytes()); err != nil {
		return err
	}
	if err := w.write(w.kvBuf.Bytes()); err != nil {
		return err
	}
	w.kvBuf = bytes.Buffer{}
	hdr.Reset()
	for _, t := range w.tensors {
		encodeString(&hdr, t.Name)
		putU32(&hdr, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			putU64(&hdr, d)
		}
		putU32(&hdr, uint32(t.Type))
		putU64(&hdr, t.Offset)
	}
	if err := w.write(hdr.Bytes()); err != nil {
		return err
	}
	if err := w.pad(); err != nil {
		return err
	}
	w.state = stateData
	return nil
}

// finishTensor pads after the current tensor and moves to the next.
func (w *Writer) finishTensor() error {
	if err := w.pad(); err != nil {
		return err
	}
	w.cur++
	w.curWritten = 0
	return nil
}

var zeros [4096]byte

func (w *Writer) pad() error {
	n := alignUp(uint64(w.written), w.alignment) - uint64(w.written)
	for n > 0 {
		k := min(n, uint64(len(zeros)))
		if err := w.write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (w *Writer) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.bw.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = w.ioError("write", err)
		return w.err
	}
	return nil
}

// Close finishes the file (see Finish) unless that was done, then renames the temporary file
// over the final path. On failure the temporary file is removed. Close is idempotent; after
// Abort it does nothing.
func (w *Writer) Close() error {
	if w.state == stateDone {
		return nil
	}
	if err := w.Finish(); err != nil {
		return err
	}
	if err := os.Rename(w.tmpPath, w.path); err != nil {
		err = w.ioError("rename", err)
		w.Abort()
		return err
	}
	w.tmpPath = ""
	w.state = stateDone
	syncDir(filepath.Dir(w.path))
	return nil
}

// Finish completes the temporary file without renaming it: it checks that every declared tensor
// was written, writes the header if no data was written yet, flushes, syncs and closes the file.
// Close then only renames. A caller writing several files that belong together calls Finish on
// each before Close on any, so that a full disk or an I/O error surfaces before any final name
// is replaced. On failure the temporary file is removed. Finish after Finish does nothing.
func (w *Writer) Finish() error {
	switch w.state {
	case stateFinished:
		return nil
	case stateDone:
		return fmt.Errorf("gguf: %s: finish: writer is closed", w.path)
	}
	if err := w.complete(); err != nil {
		w.Abort()
		return err
	}
	w.state = stateFinished
	return nil
}

func (w *Writer) complete() error {
	if w.err != nil {
		return w.err
	}
	if w.state == stateDeclaring {
		if err := w.writeHeader(); err != nil {
			return err
		}
	}
	if w.cur < len(w.tensors) {
		t := w.tensors[w.cur]
		if w.curWritten != 0 {
			return fmt.Errorf("gguf: %s: tensor %q incomplete: %d of %d bytes written", w.path, t.Name, w.curWritten, w.sizes[w.cur])
		}
		return fmt.Errorf("gguf: %s: tensor %q and %d more declared but not written", w.path, t.Name, len(w.tensors)-w.cur-1)
	}
	if err := w.bw.Flush(); err != nil {
		return w.ioError("write", err)
	}
	if err := w.file.Chmod(0o644); err != nil {
		return w.ioError("chmod", err)
	}
	if err := w.file.Sync(); err != nil {
		return w.ioError("sync", err)
	}
	err := w.file.Close()
	w.file = nil
	if err != nil {
		return w.ioError("close", err)
	}
	return nil
}

// ioError reports a failed operation on the temporary file under the final path, which is the
// name the caller knows. The *os.PathError naming the temporary file is dropped; the system
// error it wraps is kept, so errors.Is(err, syscall.ENOSPC) still holds.
func (w *Writer) ioError(op string, err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return fmt.Errorf("gguf: %s: %s: %w", w.path, op, err)
}

// syncDir makes the rename durable where the platform allows syncing a directory; failures are
// ignored because the file itself is already synced.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// Abort discards the output: it closes and removes the temporary file. It is safe to call more
// than once and after Close (then it does nothing).
func (w *Writer) Abort() error {
	w.state = stateDone
	var errs []error
	if w.file != nil {
		errs = append(errs, w.file.Close())
		w.file = nil
	}
	if w.tmpPath != "" {
		if err := os.Remove(w.tmpPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		w.tmpPath = ""
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gguf: %s: abort: %w", w.path, err)
	}
	return nil
}

func alignUp(n, a uint64) uint64 {
	r := n % a
	if r == 0 {
		return n
	}
	return n + (a - r)
}

func putU32(b *bytes.Buffer, v uint32) {
	b.Write(binary.LittleEndian.AppendUint32(nil, v))
}

func putU64(b *bytes.Buffer, v uint64) {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], v)
	b.Write(s[:])
}

func encodeString(b *bytes.Buffer, s string) {
	putU64(b, uint64(len(s)))
	b.WriteString(s)
}

// encodeValue writes the value type id followed by the value.
func encodeValue(b *bytes.Buffer, v Value) {
	putU32(b, uint32(v.Type))
	encodeBody(b, v)
}

// encodeBody writes a value without its type id.
func encodeBody(b *bytes.Buffer, v Value) {
	switch x := v.Data.(type) {
	case uint8:
		b.WriteByte(x)
	case int8:
		b.WriteByte(byte(x))
	case bool:
		if x {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case uint16:
		b.Write(binary.LittleEndian.AppendUint16(nil, x))
	case int16:
		b.Write(binary.LittleEndian.AppendUint16(nil, uint16(x)))
	case uint32:
		putU32(b, x)
	case int32:
		putU32(b, uint32(x))
	case float32:
		putU32(b, math.Float32bits(x))
	case uint64:
		putU64(b, x)
	case int64:
		putU64(b, uint64(x))
	case float64:
		putU64(b, math.Float64bits(x))
	case string:
		encodeString(b, x)
	case Array:
		encodeArray(b, x)
	}
}

// encodeArray writes an array body: element type, count, elements (nested arrays as bodies).
func encodeArray(b *bytes.Buffer, a Array) {
	putU32(b, uint32(a.Elem))
	n := a.Len()
	putU64(b, uint64(n))
	if raw, ok := a.Data.([]uint8); ok {
		b.Write(raw)
		return
	}
	for i := 0; i < n; i++ {
		encodeBody(b, a.elem(i))
	}
}
