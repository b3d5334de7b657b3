package graph

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/quant"
)

// TestExpandNF4 checks that expanding an NF4 stream chunk by chunk into an F16 tensor gives the values of the whole
// stream decoded at once, for sizes below, at and across the chunk size, with a partial last block.
func TestExpandNF4(t *testing.T) {
	b := testBackend(t)
	for _, c := range []struct{ n, block int }{
		{64, 64},
		{1000, 64},           // a partial last block
		{4096 * 64, 64},      // exactly one chunk
		{2*4096*64 + 37, 64}, // three chunks, the last one short
		{3*4096*128 + 5, 128},
	} {
		r := rand.New(rand.NewPCG(uint64(c.n), 3))
		src := make([]float32, c.n)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		q, err := quant.QuantizeNF4(src, c.block)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := q.EncodeStream()
		if err != nil {
			t.Fatal(err)
		}
		v, err := quant.DequantizeNF4Stream(stream, c.n, c.block)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 2*c.n)
		if err := quant.F32ToF16Slice(want, v); err != nil {
			t.Fatal(err)
		}
		ctx := ggml.NewContext(2, 0)
		tn := ctx.NewTensor(ggml.TypeF16, c.n)
		buf, err := ggml.AllocTensors(ctx, b.DefaultBufferType())
		if err != nil {
			t.Fatal(err)
		}
		if err := expandNF4(tn, stream, []int{c.n}, c.block); err != nil {
			t.Fatal(err)
		}
		got, err := tn.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("n=%d block=%d: chunked expansion differs from the whole stream's", c.n, c.block)
		}
		// A stream of the wrong size is refused, naming the sizes.
		if err := expandNF4(tn, stream[:len(stream)-1], []int{c.n}, c.block); err == nil || !strings.Contains(err.Error(), "bytes for") {
			t.Errorf("short stream: err = %v", err)
		}
		buf.Close()
		ctx.Close()
	}
}
