package graph

import (
	"path/filepath"
	"testing"
)

// BenchmarkDecodeStep measures one generation step (one token appended through the KV cache) on the p1 fixture
// model; run with -benchmem: the step allocates no Go memory.
func BenchmarkDecodeStep(b *testing.B) {
	t := &testing.T{}
	textPath, _ := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "f32")
	m, err := Load(textPath, "", Options{Device: "cpu", Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession(b.N + 2)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Eval([]int32{1}, nil, false); err != nil {
		b.Fatal(err)
	}
	tok := []int32{100}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Eval(tok, nil, false); err != nil {
			b.Fatal(err)
		}
	}
}
