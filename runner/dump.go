package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

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
	tensors  *tensorDump // nil without a pattern
}

// newDumpData starts a dump; pattern, when set, selects named intermediates to write too.
func newDumpData(pattern string) (*dumpData, error) {
	d := &dumpData{}
	if pattern == "" {
		return d, nil
	}
	if err := graph.ValidDumpPattern(pattern); err != nil {
		return nil, inputErrorf("runner: dump tensors %q: %v", pattern, err)
	}
	d.tensors = &tensorDump{parts: map[string][]tensorPart{}, seen: map[string]bool{}}
	d.tensors.dump = graph.Dump{Pattern: pattern, Emit: d.tensors.emit, Seen: d.tensors.see}
	return d, nil
}

// graphDump is what the graph computations of this dump receive (nil for none).
func (d *dumpData) graphDump() *graph.Dump {
	if d == nil || d.tensors == nil {
		return nil
	}
	return &d.tensors.dump
}

// tensorDump collects named intermediates: one part per graph run (one per image for the vision tower and the
// connector, one per prompt batch for the decoder).
type tensorDump struct {
	dump  graph.Dump
	order []string
	parts map[string][]tensorPart
	seen  map[string]bool // every intermediate name the computations had, for the message when nothing matches
}

type tensorPart struct {
	shape []int // ggml order
	data  []float32
}

func (t *tensorDump) emit(name string, shape []int, data []float32) error {
	if _, ok := t.parts[name]; !ok {
		t.order = append(t.order, name)
	}
	t.parts[name] = append(t.parts[name], tensorPart{shape: shape, data: data})
	return nil
}

func (t *tensorDump) see(name string) { t.seen[name] = true }

// write writes each collected tensor as <name>.npy, in NumPy order (outermost first). The decoder's batches are
// joined along the token axis; the per-image tensors of several images are stacked on a new leading axis when
// their shapes agree, else written one file per image (<name>.<i>.npy).
func (t *tensorDump) write(dir string, path func(string) string) error {
	if len(t.order) == 0 {
		// The names, with layer numbers written N: "dec.blk.N.ffn_out".
		var names []string
		for n := range t.seen {
			if n = layerIndex.ReplaceAllString(n, ".N."); !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		return inputErrorf("runner: dump tensors %q matches no intermediate; the names are %s", t.dump.Pattern, strings.Join(names, ", "))
	}
	for _, name := range t.order {
		parts := t.parts[name]
		if strings.HasPrefix(name, "dec.") {
			shape, data, err := joinLast(parts)
			if err != nil {
				return fmt.Errorf("runner: dump: %s: %w", name, err)
			}
			if err := npy.WriteFloat32(path(name+".npy"), numpyShape(shape), data); err != nil {
				return fmt.Errorf("runner: dump: %w", err)
			}
			continue
		}
		same := true
		for _, p := range parts[1:] {
			same = same && slices.Equal(p.shape, parts[0].shape)
		}
		if same {
			var data []float32
			for _, p := range parts {
				data = append(data, p.data...)
			}
			shape := numpyShape(parts[0].shape)
			if len(parts) > 1 {
				shape = append([]int{len(parts)}, shape...)
			}
			if err := npy.WriteFloat32(path(name+".npy"), shape, data); err != nil {
				return fmt.Errorf("runner: dump: %w", err)
			}
			continue
		}
		for i, p := range parts {
			if err := npy.WriteFloat32(path(fmt.Sprintf("%s.%d.npy", name, i)), numpyShape(p.shape), p.data); err != nil {
				return fmt.Errorf("runner: dump: %w", err)
			}
		}
	}
	return nil
}

// layerIndex is a layer number inside an intermediate's name.
var layerIndex = regexp.MustCompile(`\.[0-9]+\.`)

// joinLast concatenates parts along their outermost ggml dimension (the decoder's token axis).
func joinLast(parts []tensorPart) ([]int, []float32, error) {
	shape := slices.Clone(parts[0].shape)
	last := len(shape) - 1
	var data []float32
	for _, p := range parts {
		if len(p.shape) != len(shape) || !slices.Equal(p.shape[:last], shape[:last]) {
			return nil, nil, fmt.Errorf("batches of shapes %v and %v", parts[0].shape, p.shape)
		}
		data = append(data, p.data...)
	}
	shape[last] = 0
	for _, p := range parts {
		shape[last] += p.shape[last]
	}
	return shape, data, nil
}

// numpyShape reverses a ggml shape (innermost first) into NumPy's order (outermost first).
func numpyShape(ggmlShape []int) []int {
	out := slices.Clone(ggmlShape)
	slices.Reverse(out)
	return out
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
	if err := m.writeDumpFiles(dir, p, d, &written); err != nil {
		return err
	}
	if d.tensors == nil {
		return nil
	}
	return d.tensors.write(dir, func(name string) string {
		f := filepath.Join(dir, name)
		written = append(written, f)
		return f
	})
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
