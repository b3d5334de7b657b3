package ggml

import (
	"bytes"
	"strings"
	"testing"
)

// TestSetBytesAt fills a tensor in pieces and checks the bounds it refuses.
func TestSetBytesAt(t *testing.T) {
	b, err := NewBackend(cpuDevice(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := NewContext(2, 0)
	defer ctx.Close()
	x := ctx.NewTensor(TypeI8, 10).SetName("x")
	buf, err := AllocTensors(ctx, b.DefaultBufferType())
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	for i, piece := range [][]byte{{1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10}} {
		if err := x.SetBytesAt(piece, []int{0, 3, 7}[i]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("pieces gave %v", got)
	}
	for _, c := range []struct {
		name   string
		t      Tensor
		data   []byte
		offset int
		want   string
	}{
		{"past the end", x, []byte{1, 2}, 9, `tensor "x" holds 10 bytes; cannot write 2 at offset 9`},
		{"negative offset", x, []byte{1}, -1, "offset -1"},
		{"nil tensor", Tensor{}, []byte{1}, 0, "nil tensor"},
	} {
		if err := c.t.SetBytesAt(c.data, c.offset); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
}
