//go:build llamacpp

package llamacpptest

/*
#cgo CXXFLAGS: -std=c++17
#include <stdio.h>
#include <stdlib.h>
#include "llama.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

// quietLog keeps llama.cpp's warnings and errors and drops its per-load info chatter.
static void quietLog(enum ggml_log_level level, const char * text, void * user_data) {
	(void) user_data;
	if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
		fputs(text, stderr);
	}
}

static void setQuietLog(void) { llama_log_set(quietLog, NULL); }

// onlyLastLogits asks for the logits of the batch's last position only.
static void onlyLastLogits(struct llama_batch * b, int n) {
	for (int i = 0; i < n; i++) {
		b->logits[i] = i == n - 1;
	}
}

// batchSetSeq puts token tok of sequence seq at position pos into slot i, with its logits when logits is set.
static void batchSetSeq(struct llama_batch * b, int i, llama_token tok, llama_pos pos, llama_seq_id seq, int logits) {
	b->token[i] = tok;
	b->pos[i] = pos;
	b->n_seq_id[i] = 1;
	b->seq_id[i][0] = seq;
	b->logits[i] = logits != 0;
}

static void batchSet(struct llama_batch * b, int i, llama_token tok, llama_pos pos) {
	if (b->token != NULL) {
		b->token[i] = tok;
	}
	b->pos[i] = pos;
	b->n_seq_id[i] = 1;
	b->seq_id[i][0] = 0;
	b->logits[i] = 1;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	// llama.cpp's core library (src/ and src/models/) and ggml, compiled by cgo from the pinned ollama module.
	_ "github.com/ollama/ollama/llama/llama.cpp/src"
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"
)

var initOnce sync.Once

// LlamaModel is a model.gguf loaded by llama.cpp with one context (one sequence) on the CPU.
type LlamaModel struct {
	model  *C.struct_llama_model
	ctx    *C.struct_llama_context
	vocab  *C.struct_llama_vocab
	NVocab int // vocabulary size (logits per position)
	NEmbd  int // hidden size (width of an embedding row)
	NSWA   int // sliding window llama.cpp applies (0: none)
}

// LoadLlama loads path with llama.cpp (memory-mapped, no GPU layers) and creates a context of nCtx positions that
// computes with threads CPU threads, flash attention off and a KV cache of kvType ("f32" or "f16").
func LoadLlama(path string, nCtx, threads int, kvType string) (*LlamaModel, error) {
	return LoadLlamaSeqs(path, nCtx, 1, threads, kvType)
}

// LoadLlamaSeqs is LoadLlama with a context for nSeq sequences sharing a unified KV cache of nCtx positions (as
// llama-batched-bench sets it up).
func LoadLlamaSeqs(path string, nCtx, nSeq, threads int, kvType string) (*LlamaModel, error) {
	initOnce.Do(func() {
		C.setQuietLog()
		C.llama_backend_init()
	})
	var typ C.enum_ggml_type
	switch kvType {
	case "f32":
		typ = C.GGML_TYPE_F32
	case "f16":
		typ = C.GGML_TYPE_F16
	default:
		return nil, fmt.Errorf("llamacpptest: KV cache type %q, want f32 or f16", kvType)
	}
	mp := C.llama_model_default_params()
	mp.n_gpu_layers = 0
	mp.use_mmap = true
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	m := &LlamaModel{model: C.llama_model_load_from_file(cpath, mp)}
	if m.model == nil {
		return nil, fmt.Errorf("llamacpptest: llama.cpp could not load %s (see its log above)", path)
	}
	cp := C.llama_context_default_params()
	cp.n_ctx = C.uint32_t(nCtx)
	cp.n_batch = C.uint32_t(nCtx)
	cp.n_ubatch = C.uint32_t(nCtx)
	cp.n_seq_max = C.uint32_t(nSeq)
	cp.kv_unified = nSeq > 1
	cp.n_threads = C.int32_t(threads)
	cp.n_threads_batch = C.int32_t(threads)
	cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	cp.type_k = typ
	cp.type_v = typ
	cp.no_perf = true
	m.ctx = C.llama_init_from_model(m.model, cp)
	if m.ctx == nil {
		m.Close()
		return nil, fmt.Errorf("llamacpptest: llama.cpp could not create a context for %s", path)
	}
	m.vocab = C.llama_model_get_vocab(m.model)
	m.NVocab = int(C.llama_vocab_n_tokens(m.vocab))
	m.NEmbd = int(C.llama_model_n_embd(m.model))
	m.NSWA = int(C.llama_model_n_swa(m.model))
	return m, nil
}

// SetLoRA loads a LoRA adapter GGUF with llama.cpp's own loader (llama_adapter_lora_init, which checks every
// pair against the model's tensors) and applies it to the context at scale (llama_set_adapter_lora). The adapter
// is freed with the model.
func (m *LlamaModel) SetLoRA(path string, scale float32) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	a := C.llama_adapter_lora_init(m.model, cpath)
	if a == nil {
		return fmt.Errorf("llama.cpp: %s: llama_adapter_lora_init refused the adapter", path)
	}
	if rc := C.llama_set_adapter_lora(m.ctx, a, C.float(scale)); rc != 0 {
		return fmt.Errorf("llama.cpp: %s: llama_set_adapter_lora returned %d", path, int(rc))
	}
	return nil
}

// Close frees the context and the model. Idempotent.
func (m *LlamaModel) Close() {
	if m == nil {
		return
	}
	if m.ctx != nil {
		C.llama_free(m.ctx)
		m.ctx = nil
	}
	if m.model != nil {
		C.llama_model_free(m.model)
		m.model = nil
	}
}

// Meta returns the string form of GGUF metadata key as llama.cpp read it, and whether it is present.
func (m *LlamaModel) Meta(key string) (string, bool) {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	buf := make([]byte, 256)
	n := C.llama_model_meta_val_str(m.model, ck, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return "", false
	}
	return string(buf[:min(int(n), len(buf)-1)]), true
}

// Tokenize encodes text with llama.cpp's tokenizer built from the GGUF vocabulary, adding BOS as the file asks
// and parsing special tokens.
func (m *LlamaModel) Tokenize(text string) ([]int32, error) {
	ct := C.CString(text)
	defer C.free(unsafe.Pointer(ct))
	out := make([]int32, len(text)+8)
	n := C.llama_tokenize(m.vocab, ct, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&out[0])),
		C.int32_t(len(out)), true, true)
	if n < 0 {
		return nil, fmt.Errorf("llamacpptest: tokenize %q: llama_tokenize returned %d", text, n)
	}
	return out[:n], nil
}

// DecodeTokens appends tokens at positions pos0… and returns the logits of every one ([len][NVocab]).
func (m *LlamaModel) DecodeTokens(tokens []int32, pos0 int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, errors.New("llamacpptest: no tokens")
	}
	b := C.llama_batch_init(C.int32_t(len(tokens)), 0, 1)
	defer C.llama_batch_free(b)
	for i, t := range tokens {
		C.batchSet(&b, C.int(i), C.llama_token(t), C.llama_pos(pos0+i))
	}
	b.n_tokens = C.int32_t(len(tokens))
	return m.decode(b, len(tokens))
}

// DecodeEmbeddings appends n input embeddings (rows of NEmbd values, used in place of token embeddings, as
// llama.cpp's multimodal path does for image features) at positions pos0… and returns the logits of every one.
func (m *LlamaModel) DecodeEmbeddings(rows []float32, pos0 int) ([]float32, error) {
	n := len(rows) / m.NEmbd
	if n == 0 || n*m.NEmbd != len(rows) {
		return nil, fmt.Errorf("llamacpptest: %d embedding values are not whole rows of %d", len(rows), m.NEmbd)
	}
	b := C.llama_batch_init(C.int32_t(n), C.int32_t(m.NEmbd), 1)
	defer C.llama_batch_free(b)
	copy(unsafe.Slice((*float32)(unsafe.Pointer(b.embd)), len(rows)), rows)
	for i := 0; i < n; i++ {
		C.batchSet(&b, C.int(i), 0, C.llama_pos(pos0+i))
	}
	b.n_tokens = C.int32_t(n)
	return m.decode(b, n)
}

func (m *LlamaModel) decode(b C.struct_llama_batch, n int) ([]float32, error) {
	if rc := C.llama_decode(m.ctx, b); rc != 0 {
		return nil, fmt.Errorf("llamacpptest: llama_decode of %d positions returned %d", n, rc)
	}
	out := make([]float32, 0, n*m.NVocab)
	for i := 0; i < n; i++ {
		p := C.llama_get_logits_ith(m.ctx, C.int32_t(i))
		if p == nil {
			return nil, fmt.Errorf("llamacpptest: no logits for batch position %d", i)
		}
		out = append(out, unsafe.Slice((*float32)(unsafe.Pointer(p)), m.NVocab)...)
	}
	return out, nil
}

// LoadCPUVariants registers the CPU variant libraries of dir (libggml-cpu-*.so, as scripts/ggml-cpu-variants.sh
// builds them) with ggml's registry, which keeps the best one this CPU supports. The registry orders devices by
// the variant's score, ahead of the portable backend compiled into the binary (score −1), so llama.cpp, which
// takes the first CPU device, then computes with the variant. It returns the number of CPU devices registered
// and whether the CPU device llama.cpp takes is a loaded variant.
func LoadCPUVariants(dir string) (cpuDevices int, variant bool) {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	C.ggml_backend_load_all_from_path(cdir)
	for i := 0; i < int(C.ggml_backend_dev_count()); i++ {
		if C.ggml_backend_dev_type(C.ggml_backend_dev_get(C.size_t(i))) == C.GGML_BACKEND_DEVICE_TYPE_CPU {
			cpuDevices++
		}
	}
	builtin := C.ggml_backend_reg_dev_get(C.ggml_backend_cpu_reg(), 0)
	return cpuDevices, C.ggml_backend_dev_by_type(C.GGML_BACKEND_DEVICE_TYPE_CPU) != builtin
}

// DecodeLast appends tokens at positions pos0… computing logits for the last one only (as llama-bench does) and
// returns nothing; for timing.
func (m *LlamaModel) DecodeLast(tokens []int32, pos0 int) error {
	if len(tokens) == 0 {
		return errors.New("llamacpptest: no tokens")
	}
	b := C.llama_batch_init(C.int32_t(len(tokens)), 0, 1)
	defer C.llama_batch_free(b)
	for i, t := range tokens {
		C.batchSet(&b, C.int(i), C.llama_token(t), C.llama_pos(pos0+i))
	}
	C.onlyLastLogits(&b, C.int(len(tokens)))
	b.n_tokens = C.int32_t(len(tokens))
	if rc := C.llama_decode(m.ctx, b); rc != 0 {
		return fmt.Errorf("llamacpptest: llama_decode of %d positions returned %d", len(tokens), rc)
	}
	return nil
}

// SeqToken is one token of a multi-sequence batch: its sequence, position and whether its logits are wanted.
type SeqToken struct {
	Seq    int
	Token  int32
	Pos    int
	Logits bool
}

// DecodeSeqs decodes one batch of tokens of several sequences (llama_decode splits it into micro-batches as it
// needs); for timing, the logits are computed where asked and not returned.
func (m *LlamaModel) DecodeSeqs(toks []SeqToken) error {
	if len(toks) == 0 {
		return errors.New("llamacpptest: no tokens")
	}
	b := C.llama_batch_init(C.int32_t(len(toks)), 0, 1)
	defer C.llama_batch_free(b)
	for i, t := range toks {
		l := 0
		if t.Logits {
			l = 1
		}
		C.batchSetSeq(&b, C.int(i), C.llama_token(t.Token), C.llama_pos(t.Pos), C.llama_seq_id(t.Seq), C.int(l))
	}
	b.n_tokens = C.int32_t(len(toks))
	if rc := C.llama_decode(m.ctx, b); rc != 0 {
		return fmt.Errorf("llamacpptest: llama_decode of %d positions returned %d", len(toks), rc)
	}
	return nil
}

// ClearCache empties the context's KV cache (every sequence).
func (m *LlamaModel) ClearCache() { C.llama_memory_clear(C.llama_get_memory(m.ctx), C.bool(true)) }

// Quantize runs llama.cpp's quantizer (what llama-quantize does) on the GGUF in, writing out with the given file
// type ("q4_0", "q4_k_m" or "q8_0") and threads.
func Quantize(in, out, ftype string, threads int) error {
	p := C.llama_model_quantize_default_params()
	switch ftype {
	case "q4_0":
		p.ftype = C.LLAMA_FTYPE_MOSTLY_Q4_0
	case "q4_k_m":
		p.ftype = C.LLAMA_FTYPE_MOSTLY_Q4_K_M
	case "q8_0":
		p.ftype = C.LLAMA_FTYPE_MOSTLY_Q8_0
	default:
		return fmt.Errorf("llamacpptest: quantize type %q, want q4_0, q4_k_m or q8_0", ftype)
	}
	p.nthread = C.int32_t(threads)
	initOnce.Do(func() {
		C.setQuietLog()
		C.llama_backend_init()
	})
	cin, cout := C.CString(in), C.CString(out)
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(cout))
	if rc := C.llama_model_quantize(cin, cout, &p); rc != 0 {
		return fmt.Errorf("llamacpptest: llama_model_quantize %s → %s returned %d", in, out, rc)
	}
	return nil
}
