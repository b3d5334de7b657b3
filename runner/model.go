package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/idefics2-go/idefics2/ggml"
	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/graph"
	"github.com/idefics2-go/idefics2/processor"
)

// Token texts the runner looks up in the vocabulary (IDEFICS2.md §3); ids are never hard-coded.
const (
	tokenImage           = "<image>"
	tokenFakeAroundImage = "<fake_token_around_image>"
	tokenEndOfUtterance  = "<end_of_utterance>"
	tokenEOS             = "</s>"
)

// DefaultContextSize is the context (KV cache positions) a session gets when none is asked for, capped at the
// model's own context length.
const DefaultContextSize = 4096

// idefics2ChatTemplate is the chat template of every published Idefics2 checkpoint (chat_template.json of
// HuggingFaceM4/idefics2-8b; IDEFICS2.md §8). It is used only when a text GGUF carries no tokenizer.chat_template.
const idefics2ChatTemplate = "{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"

// Options say which files to load and how to compute.
type Options struct {
	// ModelPath is the text GGUF (llama architecture).
	ModelPath string
	// MMProjPath is the vision GGUF; empty means FindMMProj(ModelPath), and a text-only model when none is found.
	MMProjPath string
	// TextOnly loads no mmproj even when one lies next to the model.
	TextOnly bool
	// Device is auto, cpu, cuda, metal, vulkan or a device name (ggml.SelectDevice).
	Device string
	// Threads is the number of CPU threads; 0 means the physical cores.
	Threads int
	// FlashAttn uses ggml's fused attention in the decoder.
	FlashAttn bool
	// TableGELU uses ggml's fp16-table GELU in the vision tower (faster, ~1e-3 relative error).
	TableGELU bool
	// BatchSize is the number of prompt tokens per decoder graph; 0 means 512.
	BatchSize int
	// NoSplit turns image splitting off whatever the mmproj says (fewer image tokens, less detail).
	NoSplit bool
}

// FindMMProj returns the mmproj file that belongs to the model at modelPath by the naming convention of
// cmd/convert — "mmproj-<model file name>" in the same folder — or "" when there is none.
func FindMMProj(modelPath string) string {
	dir, base := filepath.Split(modelPath)
	cand := filepath.Join(dir, "mmproj-"+base)
	if st, err := os.Stat(cand); err == nil && st.Mode().IsRegular() {
		return cand
	}
	return ""
}

// Model is a loaded Idefics2 model pair with its tokenizer, chat template and image settings. Computations are
// serialized: several goroutines may use the same Model (each with its own Session), but the device runs one
// graph at a time.
type Model struct {
	g        *graph.Model
	tok      *processor.Tokenizer
	imgCfg   processor.ImageConfig
	template string
	chat     *processor.ChatTemplate // nil when the template does not parse (chatErr says why)
	chatErr  error
	name     string

	imageTokenID int32   // -1 when the vocabulary has no <image>
	stopIDs      []int32 // ids that end generation
	banned       []int32 // ids never generated
	seqLen       int     // image tokens per (sub-)image
	batch        int     // prompt tokens per evaluation

	mu       sync.Mutex // serializes graph computations
	features *featureCache

	// LoadTime is how long Load took.
	LoadTime time.Duration
}

// Load opens and checks the model pair described by o and places the weights on the chosen device. Problems with
// the files or the options (missing file, wrong file kind, mismatched pair, unknown device) are *InputError.
func Load(ctx context.Context, o Options) (*Model, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.ModelPath == "" {
		return nil, inputErrorf("runner: no model file given")
	}
	if o.Threads < 0 || o.Threads > MaxThreads {
		return nil, inputErrorf("runner: threads %d: want 0 (all physical cores) to %d", o.Threads, MaxThreads)
	}
	if o.BatchSize < 0 {
		return nil, inputErrorf("runner: batch size %d: want 0 (default) or more", o.BatchSize)
	}
	mmPath := o.MMProjPath
	if o.TextOnly {
		mmPath = ""
	} else if mmPath == "" {
		mmPath = FindMMProj(o.ModelPath)
	}
	if err := checkFile(o.ModelPath, "model"); err != nil {
		return nil, err
	}
	if mmPath != "" {
		if err := checkFile(mmPath, "mmproj"); err != nil {
			return nil, err
		}
	}
	m := &Model{imageTokenID: -1, features: newFeatureCache(64), batch: o.BatchSize}
	if m.batch == 0 {
		m.batch = 512
	}
	if err := m.readMetadata(o.ModelPath, mmPath, o); err != nil {
		return nil, err
	}
	if _, err := ggml.SelectDevice(o.Device); err != nil {
		return nil, asInput(fmt.Errorf("runner: --device %s: %w", o.Device, err))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g, err := graph.Load(o.ModelPath, mmPath, graph.Options{Device: o.Device, Threads: o.Threads, FlashAttn: o.FlashAttn,
		TableGELU: o.TableGELU, BatchSize: o.BatchSize})
	if err != nil {
		err = fmt.Errorf("runner: loading %s: %w", o.ModelPath, err)
		if fileProblem(err, o.ModelPath, mmPath) {
			err = asInput(err)
		}
		return nil, err
	}
	m.g = g
	if g.HasVision {
		m.seqLen = g.Connector.ImageSeqLen
		if int32(g.Connector.ImageTokenID) != m.imageTokenID {
			g.Close()
			return nil, inputErrorf("runner: %s: image token id %d, but %s has %q at id %d: the files are not a pair",
				mmPath, g.Connector.ImageTokenID, o.ModelPath, tokenImage, m.imageTokenID)
		}
	}
	if tv := m.tok.VocabSize(); tv != g.Text.VocabSize {
		g.Close()
		return nil, inputErrorf("runner: %s: tokenizer has %d tokens but the model's vocabulary is %d", o.ModelPath, tv, g.Text.VocabSize)
	}
	m.LoadTime = time.Since(start)
	slog.Debug("runner: model loaded", "model", o.ModelPath, "mmproj", mmPath, "device", g.Device.Name, "ms", m.LoadTime.Milliseconds())
	return m, nil
}

// MaxThreads is the most CPU threads Load accepts (graph.MaxThreads): ggml starts one OS thread per compute
// thread, and an absurd count would start that many.
const MaxThreads = graph.MaxThreads

// fileProblem reports whether a graph.Load error is about the content of one of the files (graph names the file
// first: a missing or misshapen tensor, a bad hyper-parameter) rather than about the device (memory, backend).
func fileProblem(err error, paths ...string) bool {
	msg := err.Error()
	if strings.Contains(msg, "alloc") || strings.Contains(msg, "memory") {
		return false
	}
	for _, p := range paths {
		if p != "" && strings.Contains(msg, "graph: "+p+":") {
			return true
		}
	}
	return false
}

// checkFile reports a missing or unreadable file as an *InputError naming its role.
func checkFile(path, role string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return inputErrorf("runner: %s file %s does not exist", role, path)
		}
		return inputErrorf("runner: %s file: %v", role, err)
	}
	if !st.Mode().IsRegular() {
		return inputErrorf("runner: %s file %s is not a regular file", role, path)
	}
	return nil
}

// readMetadata checks the kinds of the two files and reads the tokenizer, chat template and image settings.
func (m *Model) readMetadata(modelPath, mmPath string, o Options) error {
	tf, err := gguf.Open(modelPath)
	if err != nil {
		return asInput(fmt.Errorf("runner: model file: %w", err))
	}
	defer tf.Close()
	if err := checkArch(tf, "llama", "model"); err != nil {
		return err
	}
	if err := checkTensorTypes(tf, "model"); err != nil {
		return err
	}
	if m.tok, err = NewTokenizer(tf); err != nil {
		return asInput(err)
	}
	m.name, _ = tf.Metadata.String("general.name")
	if m.name == "" {
		m.name = strings.TrimSuffix(filepath.Base(modelPath), ".gguf")
	}
	m.template, _ = tf.Metadata.String(keyChatTemplate)
	if m.template == "" {
		slog.Warn("runner: the model has no chat template; using Idefics2's", "model", modelPath)
		m.template = idefics2ChatTemplate
	}
	if m.chat, m.chatErr = processor.ParseChatTemplate(m.template); m.chatErr != nil {
		slog.Warn("runner: the model's chat template does not parse; only raw prompts work", "model", modelPath, "err", m.chatErr)
	}
	if id, ok := m.tok.TokenID(tokenImage); ok {
		m.imageTokenID = id
		m.banned = append(m.banned, id)
	}
	if id, ok := m.tok.TokenID(tokenFakeAroundImage); ok {
		m.banned = append(m.banned, id)
	}
	addStop := func(id int32) {
		if id < 0 {
			return
		}
		for _, s := range m.stopIDs {
			if s == id {
				return
			}
		}
		m.stopIDs = append(m.stopIDs, id)
	}
	addStop(m.tok.EOS())
	if id, err := optTokenID(tf.Metadata, keyEOT, m.tok.VocabSize()); err == nil {
		addStop(id)
	}
	for _, t := range []string{tokenEndOfUtterance, tokenEOS} {
		if id, ok := m.tok.TokenID(t); ok {
			addStop(id)
		}
	}
	if mmPath == "" {
		return nil
	}
	mf, err := gguf.Open(mmPath)
	if err != nil {
		return asInput(fmt.Errorf("runner: mmproj file: %w", err))
	}
	defer mf.Close()
	if err := checkArch(mf, "clip", "mmproj"); err != nil {
		return err
	}
	if err := checkTensorTypes(mf, "mmproj"); err != nil {
		return err
	}
	if m.imgCfg, err = ImageConfigFromGGUF(mf.Metadata, mmPath); err != nil {
		return asInput(err)
	}
	if o.NoSplit {
		m.imgCfg.DoImageSplitting = false
	}
	if m.imageTokenID < 0 {
		return inputErrorf("runner: %s has no %q token, so it cannot take images from %s", modelPath, tokenImage, mmPath)
	}
	th, err1 := tf.Metadata.Int("llama.embedding_length")
	mh, err2 := mf.Metadata.Int("idefics2.text_embedding_length")
	if err1 == nil && err2 == nil && th != mh {
		return inputErrorf("runner: %s projects to %d, but %s has hidden size %d: the files are not a pair", mmPath, mh, modelPath, th)
	}
	return nil
}

// checkTensorTypes refuses tensors of types no weight of this model can have, before ggml sees them (its CPU
// kernels abort the process on unsupported type combinations): 1-D tensors must be f32 (norms and biases, as every
// converter writes them) or i8 (this project's NF4 blocks, stored flat); matrices a float or block-quantized type
// or i8. i16, i32, i64 and f64 are never weights.
func checkTensorTypes(f *gguf.File, role string) error {
	for _, ti := range f.Tensors {
		ok := true
		switch {
		case ti.Type == gguf.TypeI16, ti.Type == gguf.TypeI32, ti.Type == gguf.TypeI64, ti.Type == gguf.TypeF64:
			ok = false
		case len(ti.Shape) == 1:
			ok = ti.Type == gguf.TypeF32 || ti.Type == gguf.TypeI8
		}
		if !ok {
			want := "a float or quantized type"
			if len(ti.Shape) == 1 {
				want = "f32 (1-D tensors: norms and biases) or i8 (NF4 blocks)"
			}
			return inputErrorf("runner: %s file %s: tensor %q has type %s, want %s", role, f.Path, ti.Name, ti.Type, want)
		}
	}
	return nil
}

// checkArch refuses a file of the wrong kind, saying which flag the file belongs to.
func checkArch(f *gguf.File, want, role string) error {
	a, err := f.Metadata.String("general.architecture")
	if err != nil {
		return asInput(fmt.Errorf("runner: %s file %s: %w", role, f.Path, err))
	}
	if a == want {
		return nil
	}
	switch {
	case role == "model" && a == "clip":
		return inputErrorf("runner: %s is an mmproj (vision) file, not a text model: pass it with --mmproj and the text model with -m", f.Path)
	case role == "mmproj" && a == "llama":
		return inputErrorf("runner: %s is a text model, not an mmproj (vision) file: pass it with -m", f.Path)
	}
	return inputErrorf("runner: %s file %s: architecture %q, want %q", role, f.Path, a, want)
}

// Close frees the model. Idempotent.
func (m *Model) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.g.Close()
	m.g = nil
}

// Graph returns the underlying graph model (hyper-parameters, GGUF files).
func (m *Model) Graph() *graph.Model { return m.g }

// Tokenizer returns the model's tokenizer.
func (m *Model) Tokenizer() *processor.Tokenizer { return m.tok }

// ImageConfig returns the image processor settings in use (from the mmproj, with NoSplit applied).
func (m *Model) ImageConfig() processor.ImageConfig { return m.imgCfg }

// ChatTemplate returns the Jinja chat template in use.
func (m *Model) ChatTemplate() string { return m.template }

// Name is the model's general.name (or its file name).
func (m *Model) Name() string { return m.name }

// HasVision reports whether an mmproj is loaded, so that prompts may hold images.
func (m *Model) HasVision() bool { return m.g != nil && m.g.HasVision }

// ContextLength is the model's maximum context (llama.context_length).
func (m *Model) ContextLength() int { return m.g.Text.ContextLength }

// StopTokens returns the ids that end generation (EOS, <end_of_utterance>, the GGUF's eot id).
func (m *Model) StopTokens() []int32 { return append([]int32(nil), m.stopIDs...) }

// isStop reports whether id ends generation.
func (m *Model) isStop(id int32) bool {
	for _, s := range m.stopIDs {
		if s == id {
			return true
		}
	}
	return false
}
