package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// blockCodec encodes or decodes one block of a block-quantized type.
type blockCodec struct {
	quantize   func(x []float32, y []byte)
	dequantize func(x []byte, y []float32)
}

var blockCodecs = map[Type]blockCodec{
	Q4_0: {quantizeBlockQ4_0, dequantizeBlockQ4_0},
	Q4_1: {quantizeBlockQ4_1, dequantizeBlockQ4_1},
	Q5_0: {quantizeBlockQ5_0, dequantizeBlockQ5_0},
	Q5_1: {quantizeBlockQ5_1, dequantizeBlockQ5_1},
	Q8_0: {quantizeBlockQ8_0, dequantizeBlockQ8_0},
	Q4_K: {quantizeBlockQ4_K, dequantizeBlockQ4_K},
	Q5_K: {quantizeBlockQ5_K, dequantizeBlockQ5_K},
	Q6_K: {quantizeBlockQ6_K, dequantizeBlockQ6_K},
	Q8_K: {quantizeBlockQ8_K, dequantizeBlockQ8_K},
	NF4:  {quantizeBlockNF4, dequantizeBlockNF4},
}

// parallelMinValues is the input size below which work runs on the calling goroutine; starting
// goroutines costs more than it saves on small tensors.
const parallelMinValues = 1 << 16

// Quantize encodes src, laid out as rows of rowLen values, as type t and returns the encoded
// bytes (len = rows · t.RowSize(rowLen)). Rows are encoded in parallel on GOMAXPROCS
// goroutines; the result does not depend on the number of goroutines. rowLen must be a
// positive multiple of t's block size and divide len(src). A NaN or ±Inf value gives a
// *NonFiniteError naming the lowest such index.
func Quantize(t Type, src []float32, rowLen int) ([]byte, error) {
	rows, rowSize, err := checkQuantize(t, len(src), rowLen)
	if err != nil {
		return nil, err
	}
	dst := make([]byte, rows*rowSize)
	if err := quantizeRows(t, dst, src, rowLen, rows, rowSize); err != nil {
		return nil, err
	}
	return dst, nil
}

// QuantizeInto is Quantize writing into dst, which must be exactly rows · t.RowSize(rowLen)
// bytes long. On error the contents of dst are unspecified.
func QuantizeInto(t Type, dst []byte, src []float32, rowLen int) error {
	rows, rowSize, err := checkQuantize(t, len(src), rowLen)
	if err != nil {
		return err
	}
	if len(dst) != rows*rowSize {
		return fmt.Errorf("quant: %s: destination is %d bytes, want %d (%d rows of %d values)", t, len(dst), rows*rowSize, rows, rowLen)
	}
	return quantizeRows(t, dst, src, rowLen, rows, rowSize)
}

func checkQuantize(t Type, n, rowLen int) (rows, rowSize int, err error) {
	if !t.CanEncode() {
		return 0, 0, &UnsupportedError{What: fmt.Sprintf("encoding to %s", t)}
	}
	if rowLen <= 0 {
		return 0, 0, fmt.Errorf("quant: %s: row length %d is not positive", t, rowLen)
	}
	if rowLen%t.BlockSize() != 0 {
		return 0, 0, fmt.Errorf("quant: %s: row length %d is not a multiple of block size %d", t, rowLen, t.BlockSize())
	}
	if n%rowLen != 0 {
		return 0, 0, fmt.Errorf("quant: %s: %d values are not a whole number of rows of %d", t, n, rowLen)
	}
	rowSize, err = t.RowSize(rowLen)
	if err != nil {
		return 0, 0, err
	}
	return n / rowLen, rowSize, nil
}

// quantizeRows splits the rows into contiguous chunks, one per worker.
func quantizeRows(t Type, dst []byte, src []float32, rowLen, rows, rowSize int) error {
	workers := workerCount(len(src), rows)
	if workers == 1 {
		return quantizeChunk(t, dst, src, 0)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		r0 := rows * w / workers
		r1 := rows * (w + 1) / workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = quantizeChunk(t, dst[r0*rowSize:r1*rowSize], src[r0*rowLen:r1*rowLen], r0*rowLen)
		}()
	}
	wg.Wait()
	// Chunks are in index order, so the first error is the one with the lowest index.
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func workerCount(values, rows int) int {
	if values < parallelMinValues {
		return 1
	}
	return max(1, min(runtime.GOMAXPROCS(0), rows))
}

// quantizeChunk encodes a whole number of blocks; base is the index of src[0] in the caller's
// slice, for error messages.
func quantizeChunk(t Type, dst []byte, src []float32, base int) error {
	if i := firstNonFinite(src); i >= 0 {
		return &NonFiniteError{Index: base + i, Value: src[i]}
	}
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
		return nil
	case F16:
		return F32ToF16Slice(dst, src)
	case BF16:
		return F32ToBF16Slice(dst, src)
	}
	codec := blockCodecs[t]
	bs, ts := t.BlockSize(), t.TypeSize()
	for b := 0; b < len(src)/bs; b++ {
		codec.quantize(src[b*bs:(b+1)*bs], dst[b*ts:(b+1)*ts])
	}
	return nil
}

func firstNonFinite(src []float32) int {
	for i, v := range src {
		// Exponent all ones: ±Inf or NaN.
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// Dequantize decodes n values of type t from data, which must be exactly t.RowSize(n) bytes
// long. The values are bit-identical to ggml's to_float for the type.
func Dequantize(t Type, data []byte, n int) ([]float32, error) {
	if n < 0 {
		return nil, fmt.Errorf("quant: %s: negative element count %d", t, n)
	}
	dst := make([]float32, n)
	if err := DequantizeInto(t, dst, data); err != nil {
		return nil, err
	}
	return dst, nil
}

// DequantizeInto decodes len(dst) values of type t from data, which must be exactly
// t.RowSize(len(dst)) bytes long.
func DequantizeInto(t Type, dst []float32, data []byte) error {
	if !t.Valid() || t == I8 {
		return &UnsupportedError{What: fmt.Sprintf("decoding %s", t)}
	}
	size, err := t.RowSize(len(dst))
	if err != nil {
		return err
	}
	if len(data) != size {
		return fmt.Errorf("quant: %s: %d values need %d bytes, got %d", t, len(dst), size, len(data))
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	blocks := len(dst) / bs
	workers := workerCount(len(dst), blocks)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		b0 := blocks * w / workers
		b1 := blocks * (w + 1) / workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			dequantizeChunk(t, dst[b0*bs:b1*bs], data[b0*ts:b1*ts])
		}()
	}
	wg.Wait()
	return nil
}

func dequantizeChunk(t Type, dst []float32, data []byte) {
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		return
	case F16:
		_ = F16ToF32Slice(dst, data) // lengths checked by the caller
		return
	case BF16:
		_ = BF16ToF32Slice(dst, data)
		return
	}
	codec := blockCodecs[t]
	bs, ts := t.BlockSize(), t.TypeSize()
	for b := 0; b < len(dst)/bs; b++ {
		codec.dequantize(data[b*ts:(b+1)*ts], dst[b*bs:(b+1)*bs])
	}
}
