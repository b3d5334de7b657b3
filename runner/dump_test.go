package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/npy"
)

// dumpCase generates one token of an HF fixture case with a tensor dump of pattern into a fresh folder and returns
// the folder, the model and the case folder.
func dumpCase(t *testing.T, name, pattern string) (string, *Model, string, error) {
	t.Helper()
	fc := openCase(t, name)
	out := filepath.Join(t.TempDir(), "dump")
	_, err := fc.s.Generate(context.Background(), fc.p, GenerateOptions{MaxTokens: 1, DumpDir: out, DumpTensors: pattern})
	return out, fc.m, fc.dir, err
}

// TestDumpTensorsParity dumps the vision tower's and the connector's outputs by name and compares them with HF's
// vision_last_hidden_state.npy (real patches; HF also computes padded ones) and connector_output.npy.
func TestDumpTensorsParity(t *testing.T) {
	for _, name := range []string{"p1_chelsea_split", "p2_two_images"} {
		t.Run(name, func(t *testing.T) {
			out, m, dir, err := dumpCase(t, name, "[vc]*.[lo]*[et]")
			if err != nil {
				t.Fatal(err)
			}
			mask, err := npy.Read(filepath.Join(dir, "vision_patch_attention_mask.npy"))
			if err != nil {
				t.Fatal(err)
			}
			real, _ := mask.Bools()
			n, gh, gw := mask.Shape[0], mask.Shape[1], mask.Shape[2]
			vh := m.Graph().Vision.Hidden
			want := readNpyF32(t, filepath.Join(dir, "vision_last_hidden_state.npy"))
			var got []float32
			for i := 0; i < n; i++ {
				part := readDumped(t, out, "vis.last_hidden_state", i, n)
				k := 0
				for cell := 0; cell < gh*gw; cell++ {
					if real[i*gh*gw+cell] {
						got = append(got, part[k*vh:(k+1)*vh]...)
						k++
					}
				}
				if k*vh != len(part) {
					t.Fatalf("image %d: %d dumped values for %d real patches", i, len(part), k)
				}
			}
			var wantReal []float32
			for cell, ok := range real {
				if ok {
					wantReal = append(wantReal, want[cell*vh:(cell+1)*vh]...)
				}
			}
			checkDumped(t, "vis.last_hidden_state", got, wantReal)
			conn := readNpyF32(t, filepath.Join(out, "conn.output.npy"))
			checkDumped(t, "conn.output", conn, readNpyF32(t, filepath.Join(dir, "connector_output.npy")))
			entries, _ := os.ReadDir(out)
			var files []string
			for _, e := range entries {
				files = append(files, e.Name())
			}
			t.Logf("dumped %v", files)
		})
	}
}

// readDumped reads image i's part of a per-image tensor: stacked in <name>.npy, or <name>.<i>.npy.
func readDumped(t *testing.T, dir, name string, i, n int) []float32 {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%s.%d.npy", name, i))); err == nil {
		return readNpyF32(t, filepath.Join(dir, fmt.Sprintf("%s.%d.npy", name, i)))
	}
	all := readNpyF32(t, filepath.Join(dir, name+".npy"))
	per := len(all) / n
	return all[i*per : (i+1)*per]
}

func checkDumped(t *testing.T, name string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	rel, worst := relErr(got, want)
	t.Logf("%s: rel err %.3g (worst index %d)", name, rel, worst)
	if rel > tolLogits {
		t.Errorf("%s: rel err %.3g > %g at %d", name, rel, tolLogits, worst)
	}
}

// TestDumpTensorsNames dumps by pattern and checks that exactly the matching names are written: every layer's
// intermediates, the decoder's batches joined along the tokens, and refusals of bad patterns.
func TestDumpTensorsNames(t *testing.T) {
	out, m, _, err := dumpCase(t, "p2_two_images", "*")
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph()
	want := []string{"vis.embeddings", "vis.last_hidden_state", "conn.modality_projection", "conn.output",
		"dec.embeddings", "dec.output_norm", "dec.logits"}
	layer := func(prefix string, n int) {
		for i := 0; i < n; i++ {
			for _, s := range []string{"attn_norm", "attn_out", "ffn_inp", "ffn_out", "layer_out"} {
				want = append(want, fmt.Sprintf("%s.blk.%d.%s", prefix, i, s))
			}
		}
	}
	layer("vis", g.Vision.Layers)
	layer("perceiver", g.Connector.Depth)
	layer("dec", g.Text.Layers)
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".npy")
		if i := strings.LastIndexByte(name, '.'); i > 0 && strings.Trim(name[i+1:], "0123456789") == "" {
			name = name[:i] // one file per image
		}
		if !slices.Contains(got, name) && !slices.Contains([]string{"input_ids", "pixel_values", "vision_last_hidden_state", "connector_output", "logits"}, name) {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dumped %v\nwant %v", got, want)
	}
	// dec.logits holds every prompt position: the same values as logits.npy.
	logits := readNpyF32(t, filepath.Join(out, DumpLogits))
	if d := readNpyF32(t, filepath.Join(out, "dec.logits.npy")); !slices.Equal(d, logits) {
		t.Fatalf("dec.logits.npy (%d values) differs from %s (%d)", len(d), DumpLogits, len(logits))
	}
	a, err := npy.Read(filepath.Join(out, "dec.blk.0.ffn_out.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Shape[1] != g.Text.Hidden || a.Shape[0] != len(logits)/g.Text.VocabSize {
		t.Fatalf("dec.blk.0.ffn_out shape %v, want [tokens %d, hidden %d]", a.Shape, len(logits)/g.Text.VocabSize, g.Text.Hidden)
	}

	for _, c := range []struct{ pattern, dir, msg string }{
		{"[", "x", "syntax error"},
		{"dec.blk.99.*", "x", "matches no intermediate"},
		{"dec.*", "", "dump folder"},
	} {
		p, err := m.RawPrompt("Hello", nil, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.NewSession(0)
		if err != nil {
			t.Fatal(err)
		}
		dir := c.dir
		if dir != "" {
			dir = filepath.Join(t.TempDir(), dir)
		}
		_, err = s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 1, DumpDir: dir, DumpTensors: c.pattern})
		s.Close()
		if _, serr := os.Stat(dir); dir != "" && !os.IsNotExist(serr) {
			t.Errorf("pattern %q: the failed dump left %s", c.pattern, dir)
		}
		if !IsInputError(err) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), c.pattern) {
			t.Errorf("pattern %q: err %v, want an input error naming it and %q", c.pattern, err, c.msg)
		}
	}
}
