package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Tokenizer file names.
const (
	tokenizerJSONFile      = "tokenizer.json"
	tokenizerModelFile     = "tokenizer.model"
	tokenizerConfigFile    = "tokenizer_config.json"
	specialTokensMapFile   = "special_tokens_map.json"
	addedTokensFile        = "added_tokens.json"
	maxTokenizerModelBytes = 64 << 20
)

// Token types of tokenizer.ggml.token_type: SentencePiece's ModelProto.SentencePiece.Type, which
// llama.cpp's llama_token_type copies.
const (
	tokenNormal      int32 = 1
	tokenUnknown     int32 = 2
	tokenControl     int32 = 3
	tokenUserDefined int32 = 4
	tokenUnused      int32 = 5
	tokenByte        int32 = 6
)

// addedTokenScore is the score llama.cpp's converter gives added tokens and padding entries
// (convert_hf_to_gguf.py, _create_vocab_sentencepiece). Control tokens never take part in merges,
// so the value only keeps them out of the way.
const addedTokenScore = -1000

// Texts of the tokens the runtime looks up by text.
const (
	imageToken          = "<image>"
	fakeImageToken      = "<fake_token_around_image>"
	endOfUtteranceToken = "<end_of_utterance>"
)

// vocab is a llama-type GGUF vocabulary (tokenizer.ggml.*).
type vocab struct {
	tokens []string
	scores []float32
	types  []int32

	bos, eos, unk, pad, eot int32 // −1 when absent

	addBOS, addEOS, addSpacePrefix bool

	source string // file the pieces came from, for the plan
}

// addedToken is one entry of tokenizer.json added_tokens or tokenizer_config.json
// added_tokens_decoder.
type addedToken struct {
	id      int
	content string
	special bool
	from    string // file that listed it first, for messages
}

// buildVocab reads the tokenizer of a checkpoint: pieces, scores and types from tokenizer.model
// when present, otherwise from tokenizer.json (scores derived from the merges, see
// scoresFromMerges); added tokens from tokenizer.json / tokenizer_config.json; special ids and
// flags from tokenizer_config.json, special_tokens_map.json and the models themselves. The list
// is padded to vocabSize (text_config.vocab_size) with unused "[PAD{id}]" entries as llama.cpp
// does.
func buildVocab(dir string, vocabSize int, log *slog.Logger) (*vocab, *jsonObject, error) {
	tokJSON, hasJSON, err := readJSONObject(dir, tokenizerJSONFile, true)
	if err != nil {
		return nil, nil, err
	}
	var sp *spModel
	raw, err := readFileLimited(filepath.Join(dir, tokenizerModelFile), maxTokenizerModelBytes)
	switch {
	case err == nil:
		if sp, err = parseSentencePiece(raw); err != nil {
			return nil, nil, inputErrorf("convert: %s: %v", tokenizerModelFile, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, nil, inputErrorf("convert: %s: %v", tokenizerModelFile, err)
	}
	if sp == nil && !hasJSON {
		return nil, nil, inputErrorf("convert: %s: no tokenizer (neither %s nor %s)", dir, tokenizerJSONFile, tokenizerModelFile)
	}
	tokCfg, _, err := readJSONObject(dir, tokenizerConfigFile, true)
	if err != nil {
		return nil, nil, err
	}
	specialMap, _, err := readJSONObject(dir, specialTokensMapFile, true)
	if err != nil {
		return nil, nil, err
	}

	v := &vocab{bos: -1, eos: -1, unk: -1, pad: -1, eot: -1}
	var jsonModel *jsonObject
	if hasJSON {
		if jsonModel, err = tokenizerJSONModel(tokJSON); err != nil {
			return nil, nil, err
		}
	}
	if sp != nil {
		if sp.modelType != spModelBPE {
			return nil, nil, inputErrorf("convert: %s: model_type %d is not supported (want BPE, 2)", tokenizerModelFile, sp.modelType)
		}
		v.source = tokenizerModelFile
		v.tokens, v.scores, v.types = sp.pieces, sp.scores, sp.types
		v.addSpacePrefix = sp.addDummyPrefix
	} else {
		v.source = tokenizerJSONFile
		if err := v.fromTokenizerJSON(tokJSON, jsonModel); err != nil {
			return nil, nil, err
		}
	}

	added, err := collectAddedTokens(tokJSON, tokCfg, dir)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range added {
		// Checked before setAdded pads the list up to the id, so that a hostile id cannot drive
		// the allocation.
		if a.id >= vocabSize {
			return nil, nil, inputErrorf("convert: %s: added token %q: id %d is outside config.json text_config.vocab_size %d", a.from, a.content, a.id, vocabSize)
		}
		if err := v.setAdded(a, log); err != nil {
			return nil, nil, err
		}
	}
	if len(v.tokens) > vocabSize {
		return nil, nil, inputErrorf("convert: %s: %d tokens exceed config.json text_config.vocab_size %d", v.source, len(v.tokens), vocabSize)
	}
	for id := len(v.tokens); id < vocabSize; id++ {
		v.tokens = append(v.tokens, fmt.Sprintf("[PAD%d]", id))
		v.scores = append(v.scores, addedTokenScore)
		v.types = append(v.types, tokenUnused)
	}

	if err := v.setSpecialIDs(tokCfg, specialMap, jsonModel, sp); err != nil {
		return nil, nil, err
	}
	if err := v.setFlags(tokJSON, tokCfg); err != nil {
		return nil, nil, err
	}
	v.eot = v.lookup(endOfUtteranceToken)
	return v, tokCfg, nil
}

// tokenizerJSONModel returns the "model" object of tokenizer.json and checks it is a BPE model.
func tokenizerJSONModel(tokJSON *jsonObject) (*jsonObject, error) {
	model, ok, err := tokJSON.object("model")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, tokJSON.errorf("model", "missing")
	}
	typ, err := required[string](model, "type")
	if err != nil {
		return nil, err
	}
	if typ != "BPE" {
		return nil, model.errorf("type", "%q is not supported (want \"BPE\", a SentencePiece-style Llama tokenizer)", typ)
	}
	return model, nil
}

// fromTokenizerJSON fills tokens, types, scores and addSpacePrefix from a tokenizer.json BPE
// model.
func (v *vocab) fromTokenizerJSON(tokJSON, model *jsonObject) error {
	pieces, err := required[map[string]int](model, "vocab")
	if err != nil {
		return err
	}
	if len(pieces) == 0 {
		return model.errorf("vocab", "empty")
	}
	if len(pieces) > 1<<24 {
		return model.errorf("vocab", "%d entries is more than this converter accepts", len(pieces))
	}
	n := len(pieces)
	v.tokens = make([]string, n)
	seen := make([]bool, n)
	for p, id := range pieces {
		if id < 0 || id >= n {
			return model.errorf("vocab", "id %d of %q outside 0..%d (ids must be contiguous)", id, p, n-1)
		}
		if seen[id] {
			return model.errorf("vocab", "id %d used twice", id)
		}
		seen[id] = true
		v.tokens[id] = p
	}
	byteFallback, err := withDefault(model, "byte_fallback", false)
	if err != nil {
		return err
	}
	unkText, _, err := optional[string](model, "unk_token")
	if err != nil {
		return err
	}
	v.types = make([]int32, n)
	for id, p := range v.tokens {
		switch {
		case unkText != "" && p == unkText:
			v.types[id] = tokenUnknown
		case byteFallback && isBytePiece(p):
			v.types[id] = tokenByte
		default:
			v.types[id] = tokenNormal
		}
	}
	if v.scores, err = scoresFromMerges(model, pieces, v.tokens, v.types); err != nil {
		return err
	}
	v.addSpacePrefix, err = spacePrefixFromJSON(tokJSON)
	return err
}

// isBytePiece reports whether p spells a byte-fallback piece "<0xNN>" (upper-case hex, as
// SentencePiece and HF's BPE write them).
func isBytePiece(p string) bool {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return false
	}
	_, err := strconv.ParseUint(p[3:5], 16, 8)
	return err == nil && strings.ToUpper(p[3:5]) == p[3:5]
}

// scoresFromMerges derives SentencePiece scores from the merge list of a tokenizer.json BPE model
// so that score-based BPE (repeatedly merge the adjacent pair whose merged piece has the highest
// score, leftmost first on ties; what llama.cpp and processor.Tokenizer do) reproduces HF's
// merge-rank BPE:
//
//   - a piece produced by a merge scores −(rank of the first merge that produces it), so a merge
//     that comes earlier in the list always wins;
//   - pieces no merge produces score 0 when they are single characters, byte pieces or
//     non-normal tokens (they are never the result of a merge, so the value does not matter);
//   - a normal multi-character piece that no merge produces (unreachable for HF's BPE) scores
//     −len(merges), below every merged piece, so a score-based tokenizer forms it last if at all.
//
// For tokenizers converted from SentencePiece (Llama, Mistral), transformers lists merges sorted
// by the merged piece's score, so the ranks reproduce the original scores' order.
func scoresFromMerges(model *jsonObject, pieces map[string]int, tokens []string, types []int32) ([]float32, error) {
	merges, err := required[[]json.RawMessage](model, "merges")
	if err != nil {
		return nil, err
	}
	const unset = 1 // scores are ≤ 0; 1 marks "not produced by any merge yet"
	scores := make([]float32, len(tokens))
	for i := range scores {
		scores[i] = unset
	}
	for r, raw := range merges {
		left, right, ok := parseMerge(raw)
		if !ok {
			return nil, model.errorf(fmt.Sprintf("merges[%d]", r), "%s is neither \"left right\" nor [left, right]", truncate(string(raw), 40))
		}
		if _, ok := pieces[left]; !ok {
			return nil, model.errorf(fmt.Sprintf("merges[%d]", r), "piece %q is not in the vocab", left)
		}
		if _, ok := pieces[right]; !ok {
			return nil, model.errorf(fmt.Sprintf("merges[%d]", r), "piece %q is not in the vocab", right)
		}
		id, ok := pieces[left+right]
		if !ok {
			return nil, model.errorf(fmt.Sprintf("merges[%d]", r), "merged piece %q is not in the vocab", left+right)
		}
		if scores[id] == unset {
			scores[id] = float32(-r) // integer negation: rank 0 scores +0, not −0
		}
	}
	for id, s := range scores {
		if s != unset {
			continue
		}
		if types[id] == tokenNormal && utf8.RuneCountInString(tokens[id]) > 1 {
			scores[id] = float32(-len(merges))
		} else {
			scores[id] = 0
		}
	}
	return scores, nil
}

// parseMerge decodes one merges entry: "left right" (tokenizers < 0.20) or ["left", "right"].
func parseMerge(raw json.RawMessage) (string, string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		l, r, ok := strings.Cut(s, " ")
		return l, r, ok && l != "" && r != ""
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err == nil && len(pair) == 2 {
		return pair[0], pair[1], pair[0] != "" && pair[1] != ""
	}
	return "", "", false
}

// spacePrefixFromJSON tells whether tokenizer.json prepends "▁" to text: the legacy Llama
// normalizer (Prepend "▁") or a Metaspace pre-tokenizer that prepends.
func spacePrefixFromJSON(tokJSON *jsonObject) (bool, error) {
	type component struct {
		Type          string      `json:"type"`
		Prepend       string      `json:"prepend"`
		PrependScheme string      `json:"prepend_scheme"`
		AddPrefix     *bool       `json:"add_prefix_space"`
		Normalizers   []component `json:"normalizers"`
		PreTokenizers []component `json:"pretokenizers"`
	}
	var visit func(c component) bool
	visit = func(c component) bool {
		switch c.Type {
		case "Prepend":
			return c.Prepend == "\u2581"
		case "Metaspace":
			if c.PrependScheme != "" {
				return c.PrependScheme != "never"
			}
			return c.AddPrefix == nil || *c.AddPrefix
		case "Sequence":
			for _, s := range append(c.Normalizers, c.PreTokenizers...) {
				if visit(s) {
					return true
				}
			}
		}
		return false
	}
	for _, key := range []string{"normalizer", "pre_tokenizer"} {
		c, ok, err := optional[component](tokJSON, key)
		if err != nil {
			return false, err
		}
		if ok && visit(c) {
			return true, nil
		}
	}
	return false, nil
}

// collectAddedTokens gathers added tokens from tokenizer.json added_tokens,
// tokenizer_config.json added_tokens_decoder and added_tokens.json, checking that they agree.
func collectAddedTokens(tokJSON, tokCfg *jsonObject, dir string) ([]addedToken, error) {
	byID := map[int]addedToken{}
	where := map[int]string{}
	add := func(a addedToken, from string) error {
		if a.id < 0 {
			return inputErrorf("convert: %s: added token %q has negative id %d", from, a.content, a.id)
		}
		if a.content == "" {
			return inputErrorf("convert: %s: added token %d has empty content", from, a.id)
		}
		if old, ok := byID[a.id]; ok {
			if old.content != a.content {
				return inputErrorf("convert: %s: added token %d is %q, but %s has %q", from, a.id, a.content, where[a.id], old.content)
			}
			a.special = a.special || old.special
			a.from = old.from
		} else {
			where[a.id] = from
			a.from = from
		}
		byID[a.id] = a
		return nil
	}
	if tokJSON != nil {
		list, _, err := optional[[]struct {
			ID      *int   `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		}](tokJSON, "added_tokens")
		if err != nil {
			return nil, err
		}
		for i, t := range list {
			if t.ID == nil {
				return nil, tokJSON.errorf(fmt.Sprintf("added_tokens[%d]", i), "no id")
			}
			if err := add(addedToken{id: *t.ID, content: t.Content, special: t.Special}, tokenizerJSONFile); err != nil {
				return nil, err
			}
		}
	}
	if tokCfg != nil {
		dec, _, err := optional[map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		}](tokCfg, "added_tokens_decoder")
		if err != nil {
			return nil, err
		}
		for k, t := range dec {
			id, err := strconv.Atoi(k)
			if err != nil {
				return nil, tokCfg.errorf("added_tokens_decoder", "key %q is not a token id", k)
			}
			if err := add(addedToken{id: id, content: t.Content, special: t.Special}, tokenizerConfigFile); err != nil {
				return nil, err
			}
		}
	}
	// added_tokens.json maps content to id; it carries no "special" flag (transformers treats
	// these as ordinary added tokens unless another file marks them special).
	if o, ok, err := readJSONObject(dir, addedTokensFile, true); err != nil {
		return nil, err
	} else if ok {
		for content := range o.m {
			id, err := required[int](o, content)
			if err != nil {
				return nil, err
			}
			if err := add(addedToken{id: id, content: content}, addedTokensFile); err != nil {
				return nil, err
			}
		}
	}
	out := make([]addedToken, 0, len(byID))
	for _, a := range byID {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// setAdded records an added token as llama.cpp's converter does: special ones are CONTROL,
// others USER_DEFINED, both with score −1000; ids past the end extend the list, with unused
// "[PAD{id}]" entries filling any gap.
func (v *vocab) setAdded(a addedToken, log *slog.Logger) error {
	if a.id >= 1<<24 {
		return inputErrorf("convert: added token %q: id %d is too large", a.content, a.id)
	}
	for len(v.tokens) <= a.id {
		v.tokens = append(v.tokens, fmt.Sprintf("[PAD%d]", len(v.tokens)))
		v.scores = append(v.scores, addedTokenScore)
		v.types = append(v.types, tokenUnused)
	}
	if old := v.tokens[a.id]; old != a.content && v.types[a.id] != tokenUnused && log != nil {
		log.Warn("convert: added token replaces a vocabulary piece", "id", a.id, "piece", old, "added", a.content)
	}
	v.tokens[a.id] = a.content
	v.scores[a.id] = addedTokenScore
	if a.special {
		v.types[a.id] = tokenControl
	} else {
		v.types[a.id] = tokenUserDefined
	}
	return nil
}

// lookup returns the id of the token with exactly this text (preferring added/control tokens,
// which is what HF's added-token matching finds first), or −1.
func (v *vocab) lookup(text string) int32 {
	found := int32(-1)
	for id, t := range v.tokens {
		if t != text {
			continue
		}
		if v.types[id] == tokenControl || v.types[id] == tokenUserDefined {
			return int32(id)
		}
		if found < 0 {
			found = int32(id)
		}
	}
	return found
}

// specialText reads a special token given as a string or as {"content": …}.
func specialText(o *jsonObject, key string) (string, bool, error) {
	if o == nil || !o.has(key) {
		return "", false, nil
	}
	if s, ok, err := optional[string](o, key); err == nil && ok {
		return s, true, nil
	}
	obj, err := required[struct {
		Content *string `json:"content"`
	}](o, key)
	if err != nil || obj.Content == nil {
		return "", false, o.errorf(key, "neither a string nor an object with \"content\"")
	}
	return *obj.Content, true, nil
}

// setSpecialIDs resolves bos/eos/unk/pad: the token texts of tokenizer_config.json, else
// special_tokens_map.json; unk also from tokenizer.json's model.unk_token; finally the ids of
// the SentencePiece trainer spec.
func (v *vocab) setSpecialIDs(tokCfg, specialMap, jsonModel *jsonObject, sp *spModel) error {
	for _, s := range []struct {
		key  string
		dst  *int32
		spID func() int32
	}{
		{"bos_token", &v.bos, func() int32 { return sp.bosID }},
		{"eos_token", &v.eos, func() int32 { return sp.eosID }},
		{"unk_token", &v.unk, func() int32 { return sp.unkID }},
		{"pad_token", &v.pad, func() int32 { return sp.padID }},
	} {
		found := false
		for _, o := range []*jsonObject{tokCfg, specialMap} {
			text, ok, err := specialText(o, s.key)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			id := v.lookup(text)
			if id < 0 {
				return o.errorf(s.key, "token %q is not in the vocabulary", text)
			}
			*s.dst, found = id, true
			break
		}
		if found {
			continue
		}
		if s.key == "unk_token" && jsonModel != nil {
			if text, ok, err := optional[string](jsonModel, "unk_token"); err != nil {
				return err
			} else if ok {
				if id := v.lookup(text); id >= 0 {
					*s.dst = id
					continue
				}
			}
		}
		if sp != nil {
			if id := s.spID(); id >= 0 && int(id) < len(v.tokens) {
				*s.dst = id
			}
		}
	}
	return nil
}

// setFlags sets add_bos / add_eos from tokenizer_config.json (LlamaTokenizer defaults:
// add_bos_token=True, add_eos_token=False), or, without that file, from tokenizer.json's
// TemplateProcessing post-processor.
func (v *vocab) setFlags(tokJSON, tokCfg *jsonObject) error {
	v.addBOS, v.addEOS = true, false
	if tokCfg == nil && tokJSON != nil {
		type piece struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
		}
		pp, ok, err := optional[struct {
			Type   string  `json:"type"`
			Single []piece `json:"single"`
		}](tokJSON, "post_processor")
		if err != nil {
			return err
		}
		if ok && pp.Type == "TemplateProcessing" {
			v.addBOS, v.addEOS = false, false
			for i, p := range pp.Single {
				if p.SpecialToken == nil {
					continue
				}
				id := v.lookup(p.SpecialToken.ID)
				if i == 0 && id == v.bos && id >= 0 {
					v.addBOS = true
				}
				if i == len(pp.Single)-1 && id == v.eos && id >= 0 {
					v.addEOS = true
				}
			}
		}
		// Without a TemplateProcessing post-processor the LlamaTokenizer default stays; it must
		// not reach the GGUF without a BOS id (found by FuzzTokenizerConfig).
		if v.addBOS && v.bos < 0 {
			return inputErrorf("convert: %s: add_bos_token defaults to true without %s, but no bos_token is known", tokenizerJSONFile, tokenizerConfigFile)
		}
		return nil
	}
	if tokCfg != nil {
		var err error
		if v.addBOS, err = withDefault(tokCfg, "add_bos_token", true); err != nil {
			return err
		}
		if v.addEOS, err = withDefault(tokCfg, "add_eos_token", false); err != nil {
			return err
		}
	}
	if v.addBOS && v.bos < 0 {
		return inputErrorf("convert: %s: add_bos_token is set but there is no bos_token", tokenizerConfigFile)
	}
	if v.addEOS && v.eos < 0 {
		return inputErrorf("convert: %s: add_eos_token is set but there is no eos_token", tokenizerConfigFile)
	}
	return nil
}
