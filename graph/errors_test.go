package graph

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/ggufedit"
)

// TestLoadBadFiles loads altered copies of a fixture pair and checks each refusal's type and the culprit it names.
func TestLoadBadFiles(t *testing.T) {
	text, mm := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "f32")
	text2, mm2 := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p2"), "f32")
	dir := t.TempDir()
	edit := func(src, name string, e ggufedit.Edit) string {
		out := filepath.Join(dir, name)
		if err := ggufedit.Copy(src, out, e); err != nil {
			t.Fatal(err)
		}
		return out
	}
	type check func(err error) bool
	weight := func(tensor, got string) check {
		return func(err error) bool {
			var we *WeightError
			return errors.As(err, &we) && we.Tensor == tensor && strings.Contains(we.Got, got)
		}
	}
	is := func(target error) check { return func(err error) bool { return errors.Is(err, target) } }
	cases := []struct {
		name       string
		text, mm   string
		want       check
		inMessage  string
		fileInMess string
	}{
		{"missing tensor", edit(text, "missing.gguf", ggufedit.Edit{Drop: map[string]bool{"blk.0.ffn_up.weight": true}}), "",
			weight("blk.0.ffn_up.weight", ""), "missing tensor \"blk.0.ffn_up.weight\"", "missing.gguf"},
		{"wrong shape", edit(text, "shape.gguf", ggufedit.Edit{Shapes: map[string][]uint64{"blk.1.attn_k.weight": {7, 5}}}), "",
			weight("blk.1.attn_k.weight", "shape [7 5]"), "has shape [7 5], want shape", "shape.gguf"},
		{"wrong type", edit(text, "type.gguf", ggufedit.Edit{Types: map[string]gguf.Type{"output_norm.weight": gguf.TypeI32}}), "",
			weight("output_norm.weight", "type i32"), "has type i32", "type.gguf"},
		{"quantized norm", edit(mm, "qnorm.gguf", ggufedit.Edit{Types: map[string]gguf.Type{"v.blk.0.ln1.weight": gguf.TypeQ8_0},
			Shapes: map[string][]uint64{"v.blk.0.ln1.weight": {32}}}), "", nil, "", ""},
		{"unused tensor", edit(text, "extra.gguf", ggufedit.Edit{Add: map[string]ggufedit.Tensor{"blk.0.extra.weight": {Type: gguf.TypeF32, Shape: []uint64{4}}}}), "",
			weight("blk.0.extra.weight", "f32 [4]"), "is not used by the model", "extra.gguf"},
		{"not a pair", text, mm2, is(ErrNotPair), "the files are not a pair", filepath.Base(mm2)},
		{"image token of another vocabulary", text, edit(mm, "token.gguf", ggufedit.Edit{KV: map[string]any{"idefics2.image_token_id": uint32(1)}}),
			is(ErrNotPair), `image token id 1 is "<s>"`, "token.gguf"},
		{"mmproj as text model", mm, "", is(ErrFileKind), "is an mmproj", filepath.Base(mm)},
		{"text model as mmproj", text, text2, is(ErrFileKind), "is a text model", filepath.Base(text2)},
		{"bad hyper-parameter", edit(text, "heads.gguf", ggufedit.Edit{KV: map[string]any{"llama.attention.head_count": uint32(0)}}), "",
			nil, "want a positive value", "heads.gguf"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "quantized norm" {
				// A quantized vector is refused by its type: ggml's ops take norms in f32 only.
				c.text, c.mm = text, c.text
				c.want, c.inMessage, c.fileInMess = weight("v.blk.0.ln1.weight", "type q8_0"), "has type q8_0", "qnorm.gguf"
			}
			m, err := Load(c.text, c.mm, Options{Device: "cpu", Threads: 1})
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			var fe FileError
			if !errors.As(err, &fe) || !strings.HasSuffix(fe.File(), c.fileInMess) {
				t.Errorf("err %v: want a FileError naming %s", err, c.fileInMess)
			}
			if c.want != nil && !c.want(err) {
				t.Errorf("err %v (%T): not the expected type or culprit", err, err)
			}
			if !strings.Contains(err.Error(), c.inMessage) || !strings.Contains(err.Error(), c.fileInMess) {
				t.Errorf("err %q: want it to name %q and %q", err, c.inMessage, c.fileInMess)
			}
		})
	}
}

// TestLoadBadOptions checks that options out of range are refused before anything is loaded.
func TestLoadBadOptions(t *testing.T) {
	text, _ := fixtureModel(t, filepath.Join("..", "testdata", "hf", "checkpoints", "p1"), "f32")
	for _, o := range []Options{{Threads: -1}, {Threads: MaxThreads + 1}, {BatchSize: -1}, {BatchSize: MaxBatchSize + 1},
		{Layouts: 9}, {GELU: 9}, {TextAttn: 9}, {VisionAttn: 9}} {
		if m, err := Load(text, "", o); !errors.Is(err, ErrBadOptions) {
			m.Close()
			t.Errorf("%+v: err %v, want ErrBadOptions", o, err)
		}
	}
	var de *DeviceError
	if m, err := Load(text, "", Options{Device: "no-such-device"}); !errors.As(err, &de) || de.Choice != "no-such-device" {
		m.Close()
		t.Errorf("unknown device: err %v, want a *DeviceError naming it", err)
	}
}
