package graph

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkDecodeStep measures one generation step (one token appended through the KV cache); run with -benchmem:
// the step allocates no Go memory. f32: the p1 fixture model; q4_k: a checkpoint wide enough for this project's
// q4kx16 layout, whose q, k, v and gate, up matrices are stacked (fusedProduct) and whose attention takes the fused
// decode kernel on CPUs with AVX-512.
func BenchmarkDecodeStep(b *testing.B) {
	for _, c := range []struct {
		typ  string
		ckpt func(t *testing.T) string
	}{
		{"f32", func(*testing.T) string { return filepath.Join("..", "testdata", "hf", "checkpoints", "p1") }},
		{"q4_k", wideCheckpoint},
	} {
		b.Run(c.typ, func(b *testing.B) {
			t := &testing.T{}
			textPath, _ := fixtureModel(t, c.ckpt(t), c.typ)
			m, err := Load(textPath, "", Options{Device: "cpu", Threads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSequence(b.N + 2)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Eval(context.Background(), []int32{1}, nil, false, nil); err != nil {
				b.Fatal(err)
			}
			tok := []int32{100}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Eval(context.Background(), tok, nil, false, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
