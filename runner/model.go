package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// Device is auto, cpu, cuda[:N], metal, vulkan[:N] or a device name (ggml.SelectDevice).
	Device string
	// Threads is the number of CPU threads; 0 means the physical cores.
	Threads int
	// Attention is the decoder's attention kernel (AttnFlash: ggml's flash attention with an F16 cache).
	Attention AttnKernel
	// GELU is the vision tower's GELU (GELUTable: ggml's fp16 table, ~1e-3 relative error).
	GELU GELU
	// BatchSize is the number of prompt tokens per decoder graph; 0 means graph.DefaultBatchSize.
	BatchSize int
	// NoSplit turns image splitting off whatever the mmproj says (fewer image tokens, less detail).
	NoSplit bool
	// Image changes the mmproj's image processor settings for every prompt (splitting, edges; see
	// ApplyImageSettings); NoSplit, when set, still turns splitting off.
	Image ImageSettings
	// Adapters are run-time LoRA adapters (convert --lora-only), applied in order. An adapter without MMProjPath
	// takes FindMMProj(Path) when the model's mmproj is loaded.
	Adapters []Adapter
}

// Adapter is one run-time LoRA adapter: its text GGUF, its mmproj part and its scale (graph.Adapter).
type Adapter = graph.Adapter

// Adapters returns the run-time adapters the model was loaded with (Options.Adapters, mmproj parts resolved).
func (m *Model) Adapters() []Adapter { return slices.Clone(m.g.Options().Adapters) }

// ParseAdapter parses "FILE[:SCALE]" (--lora). A suffix after the last colon that is not a number is part of the
// file name.
func ParseAdapter(s string) (Adapter, error) {
	a := Adapter{Path: s, Scale: 1}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if v, err := strconv.ParseFloat(s[i+1:], 32); err == nil {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return Adapter{}, inputErrorf("runner: --lora %s: scale %s is not a finite number", s, s[i+1:])
			}
			a.Path, a.Scale = s[:i], float32(v)
		}
	}
	if a.Path == "" {
		return Adapter{}, inputErrorf("runner: --lora %q: no adapter file", s)
	}
	return a, nil
}

// AttnKernel is how the decoder computes attention (graph.AttnKernel).
type AttnKernel = graph.AttnKernel

// Attention kernels.
const (
	AttnAuto  = graph.AttnAuto  // this project's fused CPU kernel for generation steps where the CPU runs it
	AttnFlash = graph.AttnFlash // ggml's flash attention (F16 KV cache)
	AttnGGML  = graph.AttnGGML  // ggml's separate products and softmax
)

// GELU is the vision tower's GELU (graph.GELU).
type GELU = graph.GELU

// GELU forms.
const (
	GELUAuto  = graph.GELUAuto  // exact for an F32 mmproj, the table otherwise
	GELUExact = graph.GELUExact // the tanh form in float32
	GELUTable = graph.GELUTable // ggml's fp16 table
)

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

	defaultScales []float32 // the run-time adapters' scales as loaded (Options.Adapters)

	imageTokenID int32   // -1 when the vocabulary has no <image>
	stopIDs      []int32 // ids that end generation
	banned       []int32 // ids never generated
	seqLen       int     // image tokens per (sub-)image

	cvocab constraintVocab // the vocabulary of constrained generation, built on first use

	mu       sync.Mutex // serializes graph computations
	features *featureCache

	// LoadTime is how long Load took.
	LoadTime time.Duration
}

// Load opens and checks the model pair described by o and places the weights on the chosen device. Problems with
// the files or the options (missing file, wrong file kind, mismatched pair, misshapen weight, unknown device) are
// *InputError.
func Load(ctx context.Context, o Options) (*Model, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.ModelPath == "" {
		return nil, inputErrorf("runner: no model file given")
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
	adapters := slices.Clone(o.Adapters)
	for i := range adapters {
		a := &adapters[i]
		if err := checkFile(a.Path, "adapter"); err != nil {
			return nil, err
		}
		if a.MMProjPath == "" && mmPath != "" {
			a.MMProjPath = FindMMProj(a.Path)
		}
		if a.MMProjPath != "" {
			if mmPath == "" {
				return nil, inputErrorf("runner: adapter mmproj %s: the model has no mmproj loaded", a.MMProjPath)
			}
			if err := checkFile(a.MMProjPath, "adapter mmproj"); err != nil {
				return nil, err
			}
		}
	}
	g, err := graph.Load(o.ModelPath, mmPath, graph.Options{Device: o.Device, Threads: o.Threads, BatchSize: o.BatchSize,
		TextAttn: o.Attention, GELU: o.GELU, Adapters: adapters})
	if err != nil {
		return nil, classifyLoadError(fmt.Errorf("runner: loading %s: %w", o.ModelPath, err))
	}
	m := &Model{g: g, imageTokenID: -1, features: newFeatureCache(64), defaultScales: g.AdapterScales()}
	if err := m.readMetadata(o); err != nil {
		g.Close()
		return nil, err
	}
	m.LoadTime = time.Since(start)
	slog.Debug("runner: model loaded", "model", o.ModelPath, "mmproj", mmPath, "device", g.Device.Name, "ms", m.LoadTime.Milliseconds())
	return m, nil
}

// DefaultBatchSize is the number of prompt tokens per decoder graph when Options.BatchSize is 0.
const DefaultBatchSize = graph.DefaultBatchSize

// MaxThreads is the most CPU threads Load accepts (graph.MaxThreads): ggml starts one OS thread per compute
// thread, and an absurd count would start that many.
const MaxThreads = graph.MaxThreads

// classifyLoadError marks errors about the files' content or the options as *InputError: graph's file and weight
// errors, malformed GGUF files and device choices that cannot be had. Failures of the device itself (memory,
// backend) stay plain errors.
func classifyLoadError(err error) error {
	var fe graph.FileError
	var de *graph.DeviceError
	var ge *gguf.FormatError
	var ue *gguf.UnsupportedError
	if errors.As(err, &fe) || errors.As(err, &de) || errors.As(err, &ge) || errors.As(err, &ue) ||
		errors.Is(err, gguf.ErrNotGGUF) || errors.Is(err, gguf.ErrKeyNotFound) || errors.Is(err, gguf.ErrWrongType) ||
		errors.Is(err, graph.ErrBadOptions) {
		return asInput(err)
	}
	return err
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

// readMetadata reads the tokenizer, chat template, stop tokens and image settings from the loaded files.
func (m *Model) readMetadata(o Options) error {
	tf := m.g.TextFile
	var err error
	if m.tok, err = NewTokenizer(tf); err != nil {
		return asInput(err)
	}
	if tv := m.tok.VocabSize(); tv != m.g.Text.VocabSize {
		return inputErrorf("runner: %s: tokenizer has %d tokens but the model's vocabulary is %d", tf.Path, tv, m.g.Text.VocabSize)
	}
	m.name, _ = tf.Metadata.String("general.name")
	if m.name == "" {
		m.name = strings.TrimSuffix(filepath.Base(tf.Path), ".gguf")
	}
	m.template, _ = tf.Metadata.String(keyChatTemplate)
	if m.template == "" {
		slog.Warn("runner: the model has no chat template; using Idefics2's", "model", tf.Path)
		m.template = idefics2ChatTemplate
	}
	if m.chat, m.chatErr = processor.ParseChatTemplate(m.template); m.chatErr != nil {
		slog.Warn("runner: the model's chat template does not parse; only raw prompts work", "model", tf.Path, "err", m.chatErr)
	}
	m.imageTokenID, m.stopIDs, m.banned = tokenRoles(m.tok, tf.Metadata)
	mf := m.g.MMProj
	if mf == nil {
		if !o.Image.IsZero() {
			return inputErrorf("runner: image settings given but no mmproj (vision) file is loaded")
		}
		return nil
	}
	if m.imgCfg, err = ImageConfigFromGGUF(mf.Metadata, mf.Path); err != nil {
		return asInput(err)
	}
	if m.imgCfg, err = ApplyImageSettings(m.imgCfg, o.Image, m.g.Vision.Patch, m.g.Vision.ImageSize); err != nil {
		return err
	}
	if o.NoSplit {
		m.imgCfg.DoImageSplitting = false
	}
	m.seqLen = m.g.Connector.ImageSeqLen
	return nil
}

// tokenRoles finds the image token (−1 when absent), the ids that end generation (EOS, EOT, <end_of_utterance>)
// and the ids never generated (the image placeholders) of a vocabulary.
func tokenRoles(tok *processor.Tokenizer, md gguf.Metadata) (image int32, stops, banned []int32) {
	image = -1
	if id, ok := tok.TokenID(tokenImage); ok {
		image = id
		banned = append(banned, id)
	}
	if id, ok := tok.TokenID(tokenFakeAroundImage); ok {
		banned = append(banned, id)
	}
	addStop := func(id int32) {
		if id >= 0 && !slices.Contains(stops, id) {
			stops = append(stops, id)
		}
	}
	addStop(tok.EOS())
	if id, err := optTokenID(md, keyEOT, tok.VocabSize()); err == nil {
		addStop(id)
	}
	for _, t := range []string{tokenEndOfUtterance, tokenEOS} {
		if id, ok := tok.TokenID(t); ok {
			addStop(id)
		}
	}
	return image, stops, banned
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

// Placement describes where the weights went, as the placement plan decided for this device
// (graph.Model.PlacementReport).
func (m *Model) Placement() []string { return m.g.PlacementReport() }

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
func (m *Model) isStop(id int32) bool { return slices.Contains(m.stopIDs, id) }

// AdapterInfo describes a LoRA adapter GGUF (graph.AdapterInfo).
type AdapterInfo = graph.AdapterInfo

// DescribeAdapter reads an adapter file's architecture, alpha and pairs (graph.DescribeAdapter); a file that is not a
// LoRA adapter is an *InputError.
func DescribeAdapter(f *gguf.File) (*AdapterInfo, error) {
	info, err := graph.DescribeAdapter(f)
	if err != nil {
		return nil, &InputError{Err: fmt.Errorf("runner: %w", err)}
	}
	return info, nil
}

// CheckAdapterBase checks an adapter against a base model file without loading either (graph.CheckAdapterBase); a
// mismatch is an *InputError naming the tensor.
func CheckAdapterBase(info *AdapterInfo, adapterPath string, base *gguf.File) error {
	if err := graph.CheckAdapterBase(info, adapterPath, base); err != nil {
		return &InputError{Err: fmt.Errorf("runner: %w", err)}
	}
	return nil
}
