package runner

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/idefics2-go/idefics2/graph"
	"github.com/idefics2-go/idefics2/internal/npy"
)

// Names of the files GenerateOptions.DumpDir receives; shapes are NumPy's (outermost first), as Hugging Face has
// them, so that they compare directly with HF fixtures.
const (
	DumpInputIDs    = "input_ids.npy"                // int64 [1, T]
	DumpPixelValues = "pixel_values.npy"             // float32 [1, n, 3, H, W] (only with images)
	DumpVision      = "vision_last_hidden_state.npy" // float32 [n, (H/p)·(W/p), vision hidden] (only with images)
	DumpConnector   = "connector_output.npy"         // float32 [n, image_seq_len, text hidden] (only with images)
	DumpLogits      = "logits.npy"                   // float32 [1, T, vocab], every prompt position
)

type dumpData struct {
	tokens   []int32
	logits   []float32
	features []*graph.ImageFeatures
}

// writeDump writes the prompt's tensors into dir (created if needed): all of them or, on failure, none (each file is
// written atomically; the files of a failed dump and a folder it created are removed).
func (m *Model) writeDump(dir string, p *Prompt, d *dumpData) (err error) {
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("runner: dump folder: %w", err)
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		for _, f := range written {
			os.Remove(f)
		}
		if os.IsNotExist(statErr) {
			os.Remove(dir) // only if empty
		}
	}()
	return m.writeDumpFiles(dir, p, d, &written)
}

func (m *Model) writeDumpFiles(dir string, p *Prompt, d *dumpData, written *[]string) error {
	path := func(name string) string {
		f := filepath.Join(dir, name)
		*written = append(*written, f)
		return f
	}
	T := len(d.tokens)
	ids := make([]int64, T)
	for i, t := range d.tokens {
		ids[i] = int64(t)
	}
	if err := npy.WriteInt64(path(DumpInputIDs), []int{1, T}, ids); err != nil {
		return fmt.Errorf("runner: dump: %w", err)
	}
	vocab := m.g.Text.VocabSize
	if err := npy.WriteFloat32(path(DumpLogits), []int{1, len(d.logits) / vocab, vocab}, d.logits); err != nil {
		return fmt.Errorf("runner: dump: %w", err)
	}
	b := p.Images
	if b == nil {
		return nil
	}
	if err := npy.WriteFloat32(path(DumpPixelValues), []int{1, b.N, 3, b.H, b.W}, b.PixelValues); err != nil {
		return fmt.Errorf("runner: dump: %w", err)
	}
	if len(d.features) != b.N {
		return fmt.Errorf("runner: dump: %d image features for %d images", len(d.features), b.N)
	}
	// HF's vision output covers the whole padded patch grid; the graph computes only the real patches (padded ones
	// are masked out everywhere downstream), so their rows are left zero here.
	pt, vh, th := m.g.Vision.Patch, m.g.Vision.Hidden, m.g.Text.Hidden
	gh, gw := b.H/pt, b.W/pt
	vis := make([]float32, b.N*gh*gw*vh)
	conn := make([]float32, 0, b.N*m.seqLen*th)
	for i, f := range d.features {
		for r := 0; r < f.Rows && r < gh; r++ {
			for c := 0; c < f.Cols && c < gw; c++ {
				src := f.Vision[(r*f.Cols+c)*vh:][:vh]
				copy(vis[((i*gh+r)*gw+c)*vh:], src)
			}
		}
		conn = append(conn, f.Embeddings...)
	}
	if err := npy.WriteFloat32(path(DumpVision), []int{b.N, gh * gw, vh}, vis); err != nil {
		return fmt.Errorf("runner: dump: %w", err)
	}
	if err := npy.WriteFloat32(path(DumpConnector), []int{b.N, m.seqLen, th}, conn); err != nil {
		return fmt.Errorf("runner: dump: %w", err)
	}
	return nil
}
