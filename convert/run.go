package convert

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/quant"
	"github.com/idefics2-go/idefics2/safetensors"
)

// chunkValues is the target number of values per work item. Tensors are converted in chunks of
// whole rows (whole heads for permuted Q/K), so memory stays bounded whatever the model size:
// a few chunks are in flight (pipelineDepth per channel plus one per stage), each about 8 MiB of
// float32 plus its encoding. A variable so that tests can force many small chunks.
var chunkValues = 2 << 20

// pipelineDepth is the capacity of each channel between the read, quantize and write stages.
const pipelineDepth = 2

// work is one chunk of one tensor moving through the pipeline.
type work struct {
	out    int // index into the writers: 0 model, 1 mmproj
	tensor *TensorPlan
	first  bool      // first chunk of the tensor: open its TensorWriter
	vals   []float32 // decoded (and permuted) values
	enc    []byte    // encoded values (set by the read stage for repacked NF4 tensors)
	inLen  int64     // checkpoint bytes this chunk covers (progress)
}

// Run writes both output files. progress, when not nil, is called from the calling goroutine
// with the number of checkpoint bytes just converted (the sum over a run is InputBytes).
// Existing outputs are refused unless the plan was made with Options.Force.
//
// Both files are written to temporary files in their folders and renamed at the end, mmproj.gguf
// first, once both are complete and synced. On any error, or when ctx is cancelled, the
// temporary files are removed and existing outputs are left untouched; only if renaming
// model.gguf fails after mmproj.gguf was renamed is the new mmproj.gguf removed as well, so that
// a half pair is never left behind.
func (p *Plan) Run(ctx context.Context, progress func(n int64)) (err error) {
	if p.ckpt == nil {
		return errors.New("convert: plan is closed")
	}
	if err := p.checkOutputs(); err != nil {
		return err
	}
	outs := []*OutputPlan{&p.Model, &p.MMProj}
	writers, err := openOutputs(outs, func(i int, w *gguf.Writer) error {
		o := outs[i]
		for j := range o.Tensors {
			t := &o.Tensors[j]
			if err := w.AddTensor(t.Name, gguf.Type(t.Type.StorageType()), t.StorageShape()); err != nil {
				return fmt.Errorf("convert: %s: %w", o.Path, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer abortOnError(&err, writers)

	if err := p.stream(ctx, writers, progress); err != nil {
		return err
	}
	// Both files are completed and synced before either is renamed, so that a full disk at the
	// last flush never replaces (or, with Force, removes) an existing output.
	for _, i := range []int{1, 0} {
		if err := writers[i].Finish(); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	// A cancellation that arrives after the last chunk (or during the syncs) still discards the
	// output: the caller was told nothing would be left behind.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := writers[1].Close(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := writers[0].Close(); err != nil {
		os.Remove(p.MMProj.Path)
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

// stream runs the three-stage pipeline: read (decode to float32, permute, release the source
// pages), quantize (rows split across goroutines), write (in declaration order).
func (p *Plan) stream(parent context.Context, writers []*gguf.Writer, progress func(int64)) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	decoded := make(chan *work, pipelineDepth)
	encoded := make(chan *work, pipelineDepth)
	var readErr, quantErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(decoded)
		if readErr = p.readAll(ctx, decoded); readErr != nil {
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		defer close(encoded)
		for w := range decoded {
			if quantErr != nil {
				continue // drain the read stage
			}
			if quantErr = p.encode(w); quantErr != nil {
				cancel()
				continue
			}
			select {
			case encoded <- w:
			case <-ctx.Done():
			}
		}
	}()
	writeErr := p.writeAll(ctx, writers, encoded, progress)
	if writeErr != nil {
		cancel()
	}
	for range encoded {
		// drain so that the quantize stage can finish
	}
	wg.Wait()
	// The first real failure wins over the cancellations it caused in the other stages.
	for _, err := range []error{readErr, quantErr, writeErr} {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	if err := parent.Err(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	for _, err := range []error{readErr, quantErr, writeErr} {
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	return nil
}

// readAll decodes every tensor into chunks, model.gguf's first, in declaration order.
func (p *Plan) readAll(ctx context.Context, out chan<- *work) error {
	for oi, o := range []*OutputPlan{&p.Model, &p.MMProj} {
		for j := range o.Tensors {
			if err := p.readTensor(ctx, oi, &o.Tensors[j], out); err != nil {
				return err
			}
		}
	}
	return nil
}

// readTensor splits one tensor into chunks of whole rows (whole heads when permuted; whole
// 64-value blocks for NF4) and sends them.
func (p *Plan) readTensor(ctx context.Context, oi int, t *TensorPlan, out chan<- *work) error {
	if t.bnb != nil {
		return p.readBNB(ctx, oi, t, out)
	}
	var src safetensors.Tensor
	var err error
	if t.saved != nil {
		src, err = t.saved.file.Tensor(t.Source)
	} else {
		src, err = p.ckpt.Tensor(t.Source)
	}
	if err != nil {
		return asInput(fmt.Errorf("convert: %w", err))
	}
	elem := safetensors.DType(t.SourceDType).Size()
	ne0 := int(t.Shape[0])
	numel := len(src.Data) / elem
	if numel*elem != len(src.Data) || numel%ne0 != 0 {
		return inputErrorf("convert: %s: tensor %q: %d data bytes do not hold a whole number of rows", src.File, t.Source, len(src.Data))
	}
	rows := numel / ne0
	if t.PermuteHeads > 0 && (rows%t.PermuteHeads != 0 || (rows/t.PermuteHeads)%2 != 0) {
		return inputErrorf("convert: tensor %q: %d rows do not split into %d heads of an even size", t.Source, rows, t.PermuteHeads)
	}
	first := true
	for v0 := 0; v0 < numel; {
		v1 := min(numel, v0+chunkLen(t, ne0, rows))
		raw := src.Data[v0*elem : v1*elem]
		vals := make([]float32, v1-v0)
		if err := decodeFloats(vals, raw, safetensors.DType(t.SourceDType)); err != nil {
			return fmt.Errorf("convert: tensor %q: %w", t.Source, err)
		}
		if err := mergeDeltas(t, vals, v0/ne0); err != nil {
			return err
		}
		if t.PermuteHeads > 0 {
			vals = permuteRows(vals, ne0, rows/t.PermuteHeads)
		}
		releasePages(raw)
		if err := send(ctx, out, &work{out: oi, tensor: t, first: first, vals: vals, inLen: int64((v1 - v0) * elem)}); err != nil {
			return err
		}
		first = false
		v0 = v1
	}
	return nil
}

// chunkLen returns the number of values per chunk of t, about chunkValues: whole rows; whole
// heads when the rows are permuted; for NF4 also whole blocks, since NF4 blocks run over the
// flattened tensor and may straddle rows.
func chunkLen(t *TensorPlan, ne0, rows int) int {
	step := ne0
	if t.PermuteHeads > 0 {
		step = rows / t.PermuteHeads * ne0
	}
	if t.Type == quant.NF4 {
		step = lcm(step, t.BlockSize)
	}
	return max(step, chunkValues/step*step)
}

func lcm(a, b int) int {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}

func send(ctx context.Context, out chan<- *work, w *work) error {
	select {
	case out <- w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readBNB imports a bitsandbytes NF4 weight: repacked as one pre-encoded work item when the
// output is NF4 in the checkpoint's blocks, otherwise dequantized (to the quant_state dtype) and
// sent on in chunks like a float tensor.
func (p *Plan) readBNB(ctx context.Context, oi int, t *TensorPlan, out chan<- *work) error {
	bw, err := bnbWeight(p.ckpt, t.Source)
	if err != nil {
		return inputErrorf("convert: tensor %q: %v", t.Source, err)
	}
	nf, st, err := quant.RepackBNB(bw)
	if err != nil {
		return asInput(fmt.Errorf("convert: %w", err))
	}
	ne0 := int(t.Shape[0])
	rows := nf.N / ne0
	if t.PermuteHeads > 0 && (rows%t.PermuteHeads != 0 || (rows/t.PermuteHeads)%2 != 0) {
		return inputErrorf("convert: tensor %q: %d rows do not split into %d heads of an even size", t.Source, rows, t.PermuteHeads)
	}
	if t.Repacked() {
		stream, err := nf.EncodeStream()
		if err != nil {
			return asInput(fmt.Errorf("convert: tensor %q: %w", t.Source, err))
		}
		if t.PermuteHeads > 0 {
			stream = permuteNF4Records(stream, ne0, nf.BlockSize, rows/t.PermuteHeads)
		}
		return send(ctx, out, &work{out: oi, tensor: t, first: true, enc: stream, inLen: t.InputBytes})
	}
	vals, err := nf.Dequantize()
	if err != nil {
		return asInput(fmt.Errorf("convert: tensor %q: %w", t.Source, err))
	}
	// bitsandbytes' dequantize_4bit returns the weight in the quant_state dtype.
	switch st.DType {
	case "float16":
		for i, v := range vals {
			vals[i] = quant.F16ToF32(quant.F32ToF16(v))
		}
	case "bfloat16":
		for i, v := range vals {
			vals[i] = quant.BF16ToF32(quant.F32ToBF16(v))
		}
	}
	if err := mergeDeltas(t, vals, 0); err != nil {
		return err
	}
	if t.PermuteHeads > 0 {
		vals = permuteRows(vals, ne0, rows/t.PermuteHeads)
	}
	n := len(vals)
	for v0 := 0; v0 < n; {
		v1 := min(n, v0+chunkLen(t, ne0, rows))
		// Progress counts the whole source with the first chunk.
		w := &work{out: oi, tensor: t, first: v0 == 0, vals: vals[v0:v1:v1]}
		if v0 == 0 {
			w.inLen = t.InputBytes
		}
		if err := send(ctx, out, w); err != nil {
			return err
		}
		v0 = v1
	}
	return nil
}

// decodeFloats widens little-endian F32, F16 or BF16 values.
func decodeFloats(dst []float32, raw []byte, dt safetensors.DType) error {
	switch dt {
	case safetensors.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return nil
	case safetensors.F16:
		return quant.F16ToF32Slice(dst, raw)
	case safetensors.BF16:
		return quant.BF16ToF32Slice(dst, raw)
	}
	return fmt.Errorf("dtype %s is not supported", dt)
}

// permuteRows applies llama.cpp's Q/K permutation (convert_hf_to_gguf.py LlamaModel.permute) to
// a block of whole heads of headDim rows each: within each head, the row at j·(headDim/2) + i
// moves to 2i + j (j ∈ {0, 1}, i < headDim/2). HF's rotary embedding rotates the pairs
// (i, i + headDim/2); after the permutation they are adjacent, which is what ggml's normal RoPE
// mode rotates.
func permuteRows(vals []float32, ne0, headDim int) []float32 {
	out := make([]float32, len(vals))
	half := headDim / 2
	heads := len(vals) / (ne0 * headDim)
	for h := 0; h < heads; h++ {
		base := h * headDim
		for j := 0; j < 2; j++ {
			for i := 0; i < half; i++ {
				src := (base + j*half + i) * ne0
				dst := (base + 2*i + j) * ne0
				copy(out[dst:dst+ne0], vals[src:src+ne0])
			}
		}
	}
	return out
}

// encode quantizes one chunk, splitting its rows across the worker goroutines.
func (p *Plan) encode(w *work) error {
	t := w.tensor
	if w.enc != nil {
		return nil // repacked by the read stage
	}
	if t.Type == quant.NF4 {
		return encodeNF4(w)
	}
	ne0 := int(t.Shape[0])
	rowSize, err := t.Type.RowSize(ne0)
	if err != nil {
		return fmt.Errorf("convert: tensor %q: %w", t.Name, err)
	}
	rows := len(w.vals) / ne0
	w.enc = make([]byte, rows*rowSize)
	workers := p.threads
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, rows, len(w.vals)/(64<<10)+1))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		r0, r1 := rows*k/workers, rows*(k+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = quant.QuantizeInto(t.Type, w.enc[r0*rowSize:r1*rowSize], w.vals[r0*ne0:r1*ne0], ne0)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return encodeError(t, err)
		}
	}
	w.vals = nil
	return nil
}

// encodeNF4 encodes a chunk of whole 64-value blocks, the last chunk of a tensor padded to a
// whole block as bitsandbytes does.
func encodeNF4(w *work) error {
	t := w.tensor
	full := len(w.vals) / quant.NF4BlockSize * quant.NF4BlockSize
	rec := quant.NF4.TypeSize()
	n := full / quant.NF4BlockSize * rec
	tailStream := []byte(nil)
	if full < len(w.vals) {
		nf, err := quant.QuantizeNF4(w.vals[full:], quant.NF4BlockSize)
		if err != nil {
			return encodeError(t, err)
		}
		if tailStream, err = nf.EncodeStream(); err != nil {
			return encodeError(t, err)
		}
	}
	w.enc = make([]byte, n+len(tailStream))
	if full > 0 {
		if err := quant.QuantizeInto(quant.NF4, w.enc[:n], w.vals[:full], quant.NF4BlockSize); err != nil {
			return encodeError(t, err)
		}
	}
	copy(w.enc[n:], tailStream)
	w.vals = nil
	return nil
}

func encodeError(t *TensorPlan, err error) error {
	var nf *quant.NonFiniteError
	if errors.As(err, &nf) {
		return inputErrorf("convert: tensor %q: value %v is not finite", t.Source, nf.Value)
	}
	return fmt.Errorf("convert: tensor %q → %s: %w", t.Source, t.Type, err)
}

// writeAll writes chunks in order and reports progress.
func (p *Plan) writeAll(ctx context.Context, writers []*gguf.Writer, in <-chan *work, progress func(int64)) error {
	var tw io.Writer
	for w := range in {
		if err := ctx.Err(); err != nil {
			return err
		}
		if w.first {
			var err error
			if tw, err = writers[w.out].TensorWriter(w.tensor.Name); err != nil {
				return fmt.Errorf("convert: %w", err)
			}
		}
		if _, err := tw.Write(w.enc); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		if progress != nil {
			progress(w.inLen)
		}
	}
	return nil
}

// openOutputs creates a GGUF writer for each output, with its metadata, and lets addTensors declare output i's
// tensors. On an error every writer created so far is aborted (its temporary file removed).
func openOutputs(outs []*OutputPlan, addTensors func(i int, w *gguf.Writer) error) (writers []*gguf.Writer, err error) {
	writers = make([]*gguf.Writer, len(outs))
	defer abortOnError(&err, writers)
	for i, o := range outs {
		w, err := gguf.Create(o.Path)
		if err != nil {
			return nil, fmt.Errorf("convert: %w", err)
		}
		writers[i] = w
		for _, kv := range o.KV {
			if err := w.SetKV(kv.Key, kv.Value); err != nil {
				return nil, fmt.Errorf("convert: %s: %w", o.Path, err)
			}
		}
		if err := addTensors(i, w); err != nil {
			return nil, err
		}
	}
	return writers, nil
}

// abortOnError aborts the writers (removing their temporary files) when *err is set: deferred by the functions
// that write outputs, so that no failure leaves a half-written file.
func abortOnError(err *error, writers []*gguf.Writer) {
	if *err == nil {
		return
	}
	for _, w := range writers {
		if w != nil {
			w.Abort()
		}
	}
}
