package runner

import (
	"context"
	"fmt"
	"testing"

	"github.com/idefics2-go/idefics2/runner/testmodels"
)

// TestGenerateProgress: OnProgress sees the images encoded one by one (from 0 of N), each through every layer of
// the vision tower and the perceiver, and the prompt's batches of tokens, ending at the total; a second run over
// the cached prompt reports only the one position evaluated again.
func TestGenerateProgress(t *testing.T) {
	text, mm, err := testmodels.Pair("demo", "f32")
	if err != nil {
		t.Fatal(err)
	}
	const batch = 8
	m, err := Load(context.Background(), Options{ModelPath: text, MMProjPath: mm, Device: "cpu", Threads: 1, BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var imgs []Image
	for _, f := range []string{"demo_00.png", "demo_01.png"} {
		img, err := LoadImage(testdata("demo", "images", f))
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	u, err := UserMessage("What is in the pictures?", imgs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.ChatPrompt([]Message{u}, PromptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []Progress
	o := GenerateOptions{MaxTokens: 2, OnProgress: func(pr Progress) { got = append(got, pr) }}
	if _, err := s.Generate(context.Background(), p, o); err != nil {
		t.Fatal(err)
	}
	n, subs := len(p.Tokens), p.Images.N
	layers := m.g.Vision.Layers + m.g.Connector.Depth
	var want []Progress
	for i := 0; i <= subs; i++ {
		want = append(want, Progress{Stage: ProgressImages, Done: i, Total: subs})
		for l := 1; i < subs && l <= layers; l++ {
			want = append(want, Progress{Stage: ProgressImages, Done: i, Total: subs, Layer: l, Layers: layers})
		}
	}
	for done := batch; ; done += batch {
		want = append(want, Progress{Stage: ProgressPrefill, Done: min(done, n), Total: n})
		if done >= n {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("progress %v\nwant %v", got, want)
	}

	// Watching the layers splits the vision graph's computation; the features are the same, bit for bit.
	plain, err := m.g.EncodeImage(p.subImageInput(1), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	watched, err := m.g.EncodeImageProgress(p.subImageInput(1), false, nil, func(int, int) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if calls != layers || len(plain.Embeddings) == 0 || fmt.Sprint(plain.Embeddings) != fmt.Sprint(watched.Embeddings) {
		t.Fatalf("%d layer calls (want %d); features equal: %v", calls, layers, fmt.Sprint(plain.Embeddings) == fmt.Sprint(watched.Embeddings))
	}
	if _, err := m.g.EncodeImage(p.subImageInput(1), false, nil); err != nil || calls != layers {
		t.Fatalf("the callback stayed installed after EncodeImageProgress (%d calls, %v)", calls, err)
	}

	got = nil
	if _, err := s.Generate(context.Background(), p, o); err != nil {
		t.Fatal(err)
	}
	if want := []Progress{{Stage: ProgressPrefill, Done: 1, Total: 1}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cached prompt: progress %v, want %v", got, want)
	}
}

// BenchmarkEncodeProgress: the cost of watching the layers of an image encode (OnProgress set), against the plain
// encode, on the demo model, whose layers are so small that the per-layer synchronization weighs the most.
func BenchmarkEncodeProgress(b *testing.B) {
	m := loadModel(b, "demo")
	img, err := LoadImage(testdata("demo", "images", "demo_00.png"))
	if err != nil {
		b.Fatal(err)
	}
	u, err := UserMessage("What is in the picture?", []Image{img})
	if err != nil {
		b.Fatal(err)
	}
	p, err := m.ChatPrompt([]Message{u}, PromptOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name    string
		onLayer func(done, total int)
	}{{"plain", nil}, {"watched", func(int, int) {}}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := m.g.EncodeImageProgress(p.subImageInput(0), false, nil, bc.onLayer); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
