//go:build llamacpp

package llamacpptest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/idefics2-go/idefics2/convert"
)

// TestLlamaCppLoRA writes each text-only LoRA fixture case's adapter with convert's run-time export, loads it into
// llama.cpp with llama.cpp's own adapter loader on the F32 base, and compares llama.cpp's logits with Hugging Face's
// merged model (positions inside p2's sliding window, which llama.cpp's llama architecture ignores).
func TestLlamaCppLoRA(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "lora", "cases")
	tmp := t.TempDir()
	for _, name := range []string{"p1_seed_r8__p1_text_only", "p2_all_rslora__p2_text_only"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(root, name)
			raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			var man struct {
				Adapter, Checkpoint string
			}
			if err := json.Unmarshal(raw, &man); err != nil {
				t.Fatal(err)
			}
			ckpt := filepath.Join(dir, man.Checkpoint)
			d := filepath.Join(tmp, name)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			modelPath, _ := convertFixture(t, ckpt, "f32", d)
			adapterPath := filepath.Join(d, "adapter.gguf")
			p, err := convert.NewAdapterPlan(convert.AdapterOptions{InDir: ckpt, Out: adapterPath,
				Adapter: convert.LoRASpec{Dir: filepath.Join(dir, man.Adapter), Scale: 1}})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			ids32, _ := readNpy(t, filepath.Join(dir, "input_ids.npy"))
			ids := make([]int32, len(ids32))
			for i, v := range ids32 {
				ids[i] = int32(v)
			}
			want, _ := readNpy(t, filepath.Join(dir, "logits.npy"))
			lm, err := LoadLlama(modelPath, len(ids)+1, 2, "f32")
			if err != nil {
				t.Fatal(err)
			}
			defer lm.Close()
			if err := lm.SetLoRA(adapterPath, 1); err != nil {
				t.Fatal(err)
			}
			got, err := lm.DecodeTokens(ids, 0)
			if err != nil {
				t.Fatal(err)
			}
			inside := len(ids)
			if lm.NSWA == 0 && name == "p2_all_rslora__p2_text_only" && inside > 16 {
				inside = 16 // p2's sliding window
			}
			n := inside * lm.NVocab
			rel, abs, worst := errStats(got[:n], want[:n])
			t.Logf("llama.cpp + adapter vs HF merged, positions 0…%d: max abs %.3g, rel %.3g (worst index %d)", inside-1, abs, rel, worst)
			if rel > tolF32 {
				t.Errorf("rel err %.3g > %.g", rel, tolF32)
			}
		})
	}
}
