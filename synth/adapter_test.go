package synth

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteAdapter writes the tiny preset's adapter twice with one seed: the same bytes, PEFT's layout (config
// keys, every pair of every text layer with its shape), and bad arguments refused before anything is written.
func TestWriteAdapter(t *testing.T) {
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := WriteAdapter(d, cfg, 4, 8, 7); err != nil {
			t.Fatal(err)
		}
	}
	wa, _ := os.ReadFile(filepath.Join(a, "adapter_model.safetensors"))
	wb, _ := os.ReadFile(filepath.Join(b, "adapter_model.safetensors"))
	if len(wa) == 0 || !bytes.Equal(wa, wb) {
		t.Fatalf("two writes with one seed differ (%d and %d bytes)", len(wa), len(wb))
	}
	var conf map[string]any
	raw, _ := os.ReadFile(filepath.Join(a, "adapter_config.json"))
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if conf["peft_type"] != "LORA" || conf["r"] != float64(4) || conf["lora_alpha"] != float64(8) {
		t.Errorf("adapter_config.json: %v", conf)
	}
	if _, err := os.Stat(filepath.Join(a, "base", "config.json")); err != nil {
		t.Errorf("no base config: %v", err)
	}
	n := binary.LittleEndian.Uint64(wa)
	var header map[string]struct {
		DType string  `json:"dtype"`
		Shape []int64 `json:"shape"`
	}
	if err := json.Unmarshal(wa[8:8+n], &header); err != nil {
		t.Fatal(err)
	}
	pairs := 0
	for name, h := range header {
		if name == "__metadata__" || !strings.HasSuffix(name, ".lora_A.weight") {
			continue
		}
		hb, ok := header[strings.TrimSuffix(name, ".lora_A.weight")+".lora_B.weight"]
		if !ok || h.DType != "F32" || h.Shape[0] != 4 || hb.Shape[1] != 4 {
			t.Errorf("%s: %+v, lora_B %+v", name, h, hb)
		}
		pairs++
	}
	if want := cfg.Text.NumLayers * len(AdapterModules); pairs != want {
		t.Errorf("%d pairs, want %d", pairs, want)
	}
	for _, bad := range []struct {
		name  string
		rank  int
		alpha float64
	}{{"rank 0", 0, 8}, {"rank too large", 1 << 20, 8}, {"alpha 0", 4, 0}} {
		d := filepath.Join(dir, strings.ReplaceAll(bad.name, " ", "-"))
		if err := WriteAdapter(d, cfg, bad.rank, bad.alpha, 1); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s: left %s behind", bad.name, d)
		}
	}
	if err := WriteAdapter(a, cfg, 4, 8, 7); err == nil {
		t.Error("an existing folder was overwritten")
	}
}
