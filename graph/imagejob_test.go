package graph

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
)

// TestImageJobEqualsEncode checks that an image encoded in pieces of several sizes (rows per piece) equals
// EncodeImage bit for bit: each piece computes the same rows with the same kernels (ranges of two rows or more;
// see ImageJob).
func TestImageJobEqualsEncode(t *testing.T) {
	text, mm := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "f32")
	m, err := Load(text, mm, Options{Device: "cpu", Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	in := caseImage(t, filepath.Join("..", "testdata", "hf", "cases", "p1_chelsea_split"), 0)
	want, err := m.EncodeImage(in, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want.Rows*want.Cols < 8 {
		t.Fatalf("the fixture image has %d patches; the test needs several ranges", want.Rows*want.Cols)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, rows := range []int{1, 2, 7, 64, 1 << 20} {
		t.Run(fmt.Sprint(rows), func(t *testing.T) {
			j, err := m.NewImageJob(in)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			steps := 0
			for j.Phase() != PhaseDone {
				if _, err := j.Step(rows); err != nil {
					t.Fatal(err)
				}
				if steps++; steps > 1<<16 {
					t.Fatal("the job does not end")
				}
			}
			got := j.Features()
			if got.Rows != want.Rows || got.Cols != want.Cols || len(got.Embeddings) != len(want.Embeddings) {
				t.Fatalf("grid %d×%d with %d values, want %d×%d with %d", got.Rows, got.Cols, len(got.Embeddings), want.Rows, want.Cols, len(want.Embeddings))
			}
			if rowOrderExact {
				for i := range got.Embeddings {
					if got.Embeddings[i] != want.Embeddings[i] {
						t.Fatalf("embedding %d: %v, want %v (EncodeImage), after %d pieces", i, got.Embeddings[i], want.Embeddings[i], steps)
					}
				}
			} else if rel, worst := maxRel(got.Embeddings, want.Embeddings); rel > arm64RowOrderTol {
				t.Fatalf("embeddings %.3g apart from EncodeImage's (at %d), after %d pieces", rel, worst, steps)
			}
		})
	}
}

// caseImage returns sub-image i of a fixture case's pixel values as an ImageInput.
func caseImage(t *testing.T, dir string, i int) ImageInput {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "pixel_values.npy")); err != nil {
		t.Fatal(err)
	}
	pix, shape := loadNpy(t, filepath.Join(dir, "pixel_values.npy"))
	ma, err := npy.Read(filepath.Join(dir, "pixel_attention_mask.npy"))
	if err != nil {
		t.Fatal(err)
	}
	mask, _ := ma.Bools()
	H, W := shape[3], shape[4]
	h, w := realSize(mask, i, H, W)
	return ImageInput{Pixels: pix[i*3*H*W : (i+1)*3*H*W], H: H, W: W, RealH: h, RealW: w}
}
