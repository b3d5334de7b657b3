package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/idefics2-go/idefics2/constrain"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// chatRequest is an OpenAI chat completion request (the fields this server honours), also the line format of
// `batch` (which adds id, and prompt/images/raw as an alternative to messages).
type chatRequest struct {
	ID                  json.RawMessage `json:"id,omitempty"`
	Model               string          `json:"model,omitempty"`
	Messages            []apiMessage    `json:"messages"`
	Prompt              *string         `json:"prompt,omitempty"`
	Images              []string        `json:"images,omitempty"`
	Raw                 bool            `json:"raw,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	TopK                *int            `json:"top_k,omitempty"`
	MinP                *float64        `json:"min_p,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	Stop                stopList        `json:"stop,omitempty"`
	PresencePenalty     *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty,omitempty"`
	RepetitionPenalty   *float64        `json:"repetition_penalty,omitempty"`
	RepeatPenalty       *float64        `json:"repeat_penalty,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options,omitempty"`
	NoSplit bool `json:"no_split,omitempty"`
	// ImageSplitting, LongestEdge and ShortestEdge change the image processor settings for this request
	// (extensions; runner.ImageSettings).
	ImageSplitting *bool `json:"image_splitting,omitempty"`
	LongestEdge    *int  `json:"longest_edge,omitempty"`
	ShortestEdge   *int  `json:"shortest_edge,omitempty"`
	// ResponseFormat is OpenAI's {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}.
	ResponseFormat *responseFormat `json:"response_format,omitempty"`
	// Grammar is a GBNF grammar the answer must follow (an extension, as in llama.cpp's server).
	Grammar *string `json:"grammar,omitempty"`
	// Fields of the OpenAI API this server does not implement: present, they are refused (unsupportedFields).
	Tools             json.RawMessage `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	Functions         json.RawMessage `json:"functions,omitempty"`
	FunctionCall      json.RawMessage `json:"function_call,omitempty"`
	ParallelToolCalls json.RawMessage `json:"parallel_tool_calls,omitempty"`
	LogitBias         json.RawMessage `json:"logit_bias,omitempty"`
	// Logprobs asks for each generated token's log-probability, TopLogprobs (0…20, with logprobs) for that many
	// alternatives at each position (OpenAI's choices[].logprobs.content).
	Logprobs    *bool `json:"logprobs,omitempty"`
	TopLogprobs *int  `json:"top_logprobs,omitempty"`
	// Lora chooses the scale of each run-time adapter loaded with --lora, as llama.cpp's server takes it: a list of
	// {"id": index of the --lora flag, "scale": s}; a loaded adapter the list leaves out is off. Absent: every
	// adapter at the scale it was loaded with.
	Lora []loraChoice `json:"lora,omitempty"`
}

// responseFormat is OpenAI's response_format object.
type responseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict,omitempty"`
	} `json:"json_schema,omitempty"`
}

// unsupportedFields refuses request fields this server does not implement, naming the first one present (null
// and false count as absent: they ask for nothing).
func (r *chatRequest) unsupportedFields() error {
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"tools", r.Tools}, {"tool_choice", r.ToolChoice}, {"functions", r.Functions}, {"function_call", r.FunctionCall},
		{"parallel_tool_calls", r.ParallelToolCalls}, {"logit_bias", r.LogitBias}} {
		v := string(bytes.TrimSpace(f.v))
		if v == "" || v == "null" || v == "false" {
			continue
		}
		return badRequest("%s: not supported by this server", f.name)
	}
	return nil
}

// constraint compiles the request's response_format or grammar; nil when it asks for neither.
func (r *chatRequest) constraint() (*constrain.Grammar, error) {
	if r.Grammar != nil && r.ResponseFormat != nil && r.ResponseFormat.Type != "text" {
		return nil, badRequest("grammar and response_format %q: give one of them", r.ResponseFormat.Type)
	}
	if r.Grammar != nil {
		g, err := constrain.ParseGBNF(*r.Grammar)
		if err != nil {
			return nil, badRequest("grammar: %s", strings.TrimPrefix(err.Error(), "constrain: "))
		}
		return g, nil
	}
	f := r.ResponseFormat
	if f == nil {
		return nil, nil
	}
	switch f.Type {
	case "text":
		if f.JSONSchema != nil {
			return nil, badRequest("response_format.json_schema: only with type json_schema")
		}
		return nil, nil
	case "json_object":
		if f.JSONSchema != nil {
			return nil, badRequest("response_format.json_schema: only with type json_schema")
		}
		return constrain.ParseGBNF(constrain.JSONObjectGBNF)
	case "json_schema":
		js := f.JSONSchema
		if js == nil {
			return nil, badRequest("response_format.json_schema: missing (type json_schema needs it)")
		}
		if js.Name == "" {
			return nil, badRequest("response_format.json_schema.name: missing")
		}
		schema := bytes.TrimSpace(js.Schema)
		if len(schema) == 0 || string(schema) == "null" {
			return nil, badRequest("response_format.json_schema.schema: missing")
		}
		g, err := constrain.CompileJSONSchema(schema)
		if err != nil {
			return nil, badRequest("response_format.json_schema.schema: %s", strings.TrimPrefix(err.Error(), "constrain: "))
		}
		return g, nil
	}
	return nil, badRequest("response_format.type %q: want text, json_object or json_schema", f.Type)
}

// loraChoice is one element of chatRequest.Lora.
type loraChoice struct {
	ID    *int     `json:"id"`
	Scale *float64 `json:"scale"`
}

// adapterScales returns the adapter scales the request asks for (nil: the loaded ones) among n loaded adapters.
func (r *chatRequest) adapterScales(n int) ([]float32, error) {
	if r.Lora == nil {
		return nil, nil
	}
	if n == 0 && len(r.Lora) > 0 {
		return nil, badRequest("lora: no run-time adapters are loaded (start with --lora FILE)")
	}
	scales := make([]float32, n)
	seen := make([]bool, n)
	for i, c := range r.Lora {
		switch {
		case c.ID == nil:
			return nil, badRequest("lora[%d].id: missing", i)
		case *c.ID < 0 || *c.ID >= n:
			return nil, badRequest("lora[%d].id: %d is not a loaded adapter (%d loaded, ids 0 to %d; see /lora-adapters)", i, *c.ID, n, n-1)
		case seen[*c.ID]:
			return nil, badRequest("lora[%d].id: adapter %d is listed twice", i, *c.ID)
		case c.Scale == nil:
			return nil, badRequest("lora[%d].scale: missing", i)
		case math.IsNaN(*c.Scale) || math.IsInf(*c.Scale, 0) || math.Abs(*c.Scale) > math.MaxFloat32:
			return nil, badRequest("lora[%d].scale: %v is not a finite number", i, *c.Scale)
		}
		seen[*c.ID] = true
		scales[*c.ID] = float32(*c.Scale)
	}
	return scales, nil
}

// apiMessage is one message; content is a string or a list of parts.
type apiMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type apiPart struct {
	Type     string          `json:"type"`
	Text     *string         `json:"text,omitempty"`
	ImageURL json.RawMessage `json:"image_url,omitempty"`
	Image    json.RawMessage `json:"image,omitempty"`
}

// stopList accepts a string or a list of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop: want a string or a list of strings")
	}
	*s = many
	return nil
}

// requestError is a client error: HTTP 400 (or the given status) with an OpenAI-style error object.
type requestError struct {
	status      int
	typ         string
	msg         string
	param, code string // OpenAI's param and code ("" when they do not apply)
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: 400, typ: "invalid_request_error", msg: fmt.Sprintf(format, args...)}
}

// tooLarge is a request error with status 413 (an image over the byte limit).
func tooLarge(format string, args ...any) error {
	return &requestError{status: 413, typ: "invalid_request_error", msg: fmt.Sprintf(format, args...)}
}

// imagePolicy says where images may come from: data: URIs always; local files only when allowed, and then only
// inside root when root is set.
type imagePolicy struct {
	allowLocal bool
	root       string // resolved (symlink-free) absolute folder, or "" for anywhere
	maxImages  int    // 0: no limit
	maxBytes   int    // bytes of one image file; 0: maxImageBytes
	maxPixels  int    // width × height of one image; 0: processor.DefaultMaxImagePixels
	// remote fetches http(s) URLs (--allow-remote-images); nil refuses them.
	remote *remoteFetcher
}

// byteLimit is the most bytes one image may have.
func (p imagePolicy) byteLimit() int {
	if p.maxBytes > 0 {
		return min(p.maxBytes, maxImageBytes)
	}
	return maxImageBytes
}

// newImagePolicy confines local images to dir ("" refuses them).
func newImagePolicy(dir string, maxImages int) (imagePolicy, error) {
	p := imagePolicy{maxImages: maxImages}
	if dir == "" {
		return p, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return p, cli.Usagef("--allow-local-images %s: %v", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return p, cli.Usagef("--allow-local-images %s: %v", dir, err)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return p, cli.Usagef("--allow-local-images %s: not a folder", dir)
	}
	p.allowLocal, p.root = true, real
	return p, nil
}

// resolve turns an image reference into image bytes.
func (p imagePolicy) resolve(ref string) (runner.Image, error) {
	ref = strings.TrimSpace(ref)
	switch {
	case ref == "":
		return runner.Image{}, badRequest("empty image url")
	case strings.HasPrefix(ref, "data:"):
		img, err := decodeDataURI(ref)
		if err == nil && len(img.Data) > p.byteLimit() {
			return runner.Image{}, tooLarge("image data URI: %d bytes, more than this server's limit of %d", len(img.Data), p.byteLimit())
		}
		return img, err
	case (strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://")) && p.remote != nil:
		return p.remote.fetch(context.Background(), ref)
	case strings.HasPrefix(ref, "http://"), strings.HasPrefix(ref, "https://"):
		return runner.Image{}, badRequest("image url %s: remote images are not fetched unless the server is started with --allow-remote-images; send the image as a data: URI", shortRef(ref))
	}
	path := ref
	if strings.HasPrefix(ref, "file://") {
		u, err := url.Parse(ref)
		if err != nil {
			return runner.Image{}, badRequest("image url %s: %v", shortRef(ref), err)
		}
		path = u.Path
	}
	if !p.allowLocal {
		return runner.Image{}, badRequest("image %s: local files are refused (start the server with --allow-local-images DIR to allow a folder); send a data: URI", shortRef(ref))
	}
	full, err := p.confine(path)
	if err != nil {
		return runner.Image{}, err
	}
	st, err := os.Stat(full)
	if err != nil {
		return runner.Image{}, badRequest("image %s: %v", shortRef(ref), errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return runner.Image{}, badRequest("image %s: not a regular file", shortRef(ref))
	}
	if st.Size() > int64(p.byteLimit()) {
		return runner.Image{}, tooLarge("image %s: %d bytes, more than the limit of %d", shortRef(ref), st.Size(), p.byteLimit())
	}
	b, err := os.ReadFile(full)
	if err != nil {
		return runner.Image{}, badRequest("image %s: %v", shortRef(ref), errors.Unwrap(err))
	}
	return runner.Image{Name: path, Data: b}, nil
}

// confine resolves path against the policy's root and refuses anything outside it: ".." elements, absolute paths
// elsewhere, and symbolic links that lead out.
func (p imagePolicy) confine(path string) (string, error) {
	if p.root == "" {
		return path, nil
	}
	for _, el := range strings.Split(filepath.ToSlash(path), "/") {
		if el == ".." {
			return "", badRequest("image %s: \"..\" is not allowed in local image paths", shortRef(path))
		}
	}
	full := path
	if !filepath.IsAbs(full) {
		full = filepath.Join(p.root, full)
	}
	real, err := filepath.EvalSymlinks(full)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", badRequest("image %s does not exist", shortRef(path))
		}
		return "", badRequest("image %s: %v", shortRef(path), errors.Unwrap(err))
	}
	rel, err := filepath.Rel(p.root, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", badRequest("image %s is outside the allowed folder", shortRef(path))
	}
	return real, nil
}

func shortRef(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q…", s[:77])
	}
	return fmt.Sprintf("%q", s)
}

// decodeDataURI decodes "data:[<media type>][;base64],<data>".
func decodeDataURI(s string) (runner.Image, error) {
	comma := strings.IndexByte(s, ',')
	if comma < 0 {
		return runner.Image{}, badRequest("image data URI has no comma")
	}
	meta, data := s[len("data:"):comma], s[comma+1:]
	if !strings.HasSuffix(meta, ";base64") {
		u, err := url.PathUnescape(data)
		if err != nil {
			return runner.Image{}, badRequest("image data URI: %v", err)
		}
		return runner.Image{Name: "data URI", Data: []byte(u)}, nil
	}
	if base64.StdEncoding.DecodedLen(len(data)) > maxImageBytes {
		return runner.Image{}, badRequest("image data URI: larger than %d MiB", maxImageBytes>>20)
	}
	data = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, data)
	var b []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err = enc.DecodeString(data); err == nil {
			break
		}
	}
	if err != nil {
		return runner.Image{}, badRequest("image data URI: invalid base64: %v", err)
	}
	return runner.Image{Name: "data URI (" + strings.TrimSuffix(meta, ";base64") + ")", Data: b}, nil
}

// messages converts the request's messages into runner messages, resolving images with pol.
func (r *chatRequest) messages(pol imagePolicy) ([]runner.Message, int, error) {
	var out []runner.Message
	nImages := 0
	addImage := func(ref string) (runner.Part, error) {
		nImages++
		if pol.maxImages > 0 && nImages > pol.maxImages {
			return runner.Part{}, badRequest("more than %s in the request", plural(pol.maxImages, "image"))
		}
		img, err := pol.resolve(ref)
		if err != nil {
			return runner.Part{}, err
		}
		return runner.ImagePart(img), nil
	}
	for i, m := range r.Messages {
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer":
			role = "system"
		case "":
			return nil, 0, badRequest("messages[%d]: no role", i)
		default:
			return nil, 0, badRequest("messages[%d]: role %q is not supported (want system, user or assistant)", i, m.Role)
		}
		msg := runner.Message{Role: role}
		c := bytes.TrimSpace(m.Content)
		switch {
		case len(c) == 0 || bytes.Equal(c, []byte("null")):
			return nil, 0, badRequest("messages[%d]: no content", i)
		case c[0] == '"':
			var s string
			if err := json.Unmarshal(c, &s); err != nil {
				return nil, 0, badRequest("messages[%d].content: %v", i, err)
			}
			msg.Content = []runner.Part{runner.TextPart(s)}
		case c[0] == '[':
			var parts []apiPart
			if err := json.Unmarshal(c, &parts); err != nil {
				return nil, 0, badRequest("messages[%d].content: %v", i, err)
			}
			for j, p := range parts {
				switch p.Type {
				case "text":
					if p.Text == nil {
						return nil, 0, badRequest("messages[%d].content[%d]: text part without text", i, j)
					}
					msg.Content = append(msg.Content, runner.TextPart(*p.Text))
				case "image_url", "image":
					raw := p.ImageURL
					if p.Type == "image" && len(raw) == 0 {
						raw = p.Image
					}
					ref, err := imageRef(raw)
					if err != nil {
						return nil, 0, badRequest("messages[%d].content[%d]: %v", i, j, err)
					}
					part, err := addImage(ref)
					if err != nil {
						return nil, 0, prefixErr(fmt.Sprintf("messages[%d].content[%d]: ", i, j), err)
					}
					msg.Content = append(msg.Content, part)
				default:
					return nil, 0, badRequest("messages[%d].content[%d]: part type %q is not supported (want text or image_url)", i, j, p.Type)
				}
			}
		default:
			return nil, 0, badRequest("messages[%d].content: want a string or a list of parts", i)
		}
		if len(msg.Content) == 0 {
			return nil, 0, badRequest("messages[%d]: empty content", i)
		}
		out = append(out, msg)
	}
	return out, nImages, nil
}

// imageRef reads an image_url value: {"url": "..."} or a plain string.
func imageRef(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", errors.New("image part without image_url")
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var o struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", fmt.Errorf("image_url: %v", err)
	}
	if o.URL == "" {
		return "", errors.New("image_url without url")
	}
	return o.URL, nil
}

func prefixErr(prefix string, err error) error {
	var re *requestError
	if errors.As(err, &re) {
		return &requestError{status: re.status, typ: re.typ, msg: prefix + re.msg, param: re.param, code: re.code}
	}
	return err
}

// limits bound what one request may ask for.
type limits struct {
	maxTokens int // the most tokens a request may generate
}

// generateOptions merges the request's sampling fields over the defaults.
func (r *chatRequest) generateOptions(def runner.GenerateOptions, lim limits) (runner.GenerateOptions, error) {
	o := def
	o.Stop = append([]string(nil), def.Stop...)
	if err := r.checkOpenAIRanges(); err != nil {
		return o, err
	}
	if r.N != nil {
		if *r.N < 1 {
			return o, badRequest("n %d: want 1 or more", *r.N)
		}
		o.N = *r.N
	}
	if r.Logprobs != nil {
		o.Logprobs = *r.Logprobs
	}
	if r.TopLogprobs != nil {
		if *r.TopLogprobs < 0 || *r.TopLogprobs > runner.MaxTopLogprobs {
			return o, badRequest("top_logprobs %d: want 0…%d", *r.TopLogprobs, runner.MaxTopLogprobs)
		}
		if *r.TopLogprobs > 0 && !o.Logprobs {
			return o, badRequest("top_logprobs %d: set logprobs to true as well", *r.TopLogprobs)
		}
		o.TopLogprobs = *r.TopLogprobs
	}
	if err := r.unsupportedFields(); err != nil {
		return o, err
	}
	g, err := r.constraint()
	if err != nil {
		return o, err
	}
	if r.Grammar != nil || r.ResponseFormat != nil {
		o.Constraint = g // the request's own choice replaces the default, "text" included
	}
	mt := r.MaxTokens
	if r.MaxCompletionTokens != nil {
		mt = r.MaxCompletionTokens
	}
	if mt != nil {
		if *mt < 0 {
			return o, badRequest("max_tokens %d: want 0 or more", *mt)
		}
		o.MaxTokens = *mt
	}
	if lim.maxTokens > 0 && o.MaxTokens > lim.maxTokens {
		return o, badRequest("max_tokens %d exceeds this server's limit of %d", o.MaxTokens, lim.maxTokens)
	}
	s := &o.Sampler
	if r.Temperature != nil {
		s.Temperature = *r.Temperature
	}
	if r.TopP != nil {
		s.TopP = *r.TopP
	}
	if r.TopK != nil {
		s.TopK = *r.TopK
	}
	if r.MinP != nil {
		s.MinP = *r.MinP
	}
	if r.PresencePenalty != nil {
		s.PresencePenalty = *r.PresencePenalty
	}
	if r.FrequencyPenalty != nil {
		s.FrequencyPenalty = *r.FrequencyPenalty
	}
	if r.RepetitionPenalty != nil {
		s.RepeatPenalty = *r.RepetitionPenalty
	}
	if r.RepeatPenalty != nil {
		s.RepeatPenalty = *r.RepeatPenalty
	}
	if r.Seed != nil {
		if *r.Seed < 0 {
			return o, badRequest("seed %d: want 0 or more", *r.Seed)
		}
		s.Seed = uint64(*r.Seed)
	} else if !s.Greedy() {
		s.Seed = seedValue(-1)
	}
	if err := s.Validate(); err != nil {
		return o, badRequest("%s", strings.TrimPrefix(err.Error(), "runner: sampler: "))
	}
	if len(r.Stop) > 0 {
		o.Stop = o.Stop[:0]
		for i, st := range r.Stop {
			if st == "" {
				return o, badRequest("stop[%d] is empty", i)
			}
			o.Stop = append(o.Stop, st)
		}
	}
	return o, nil
}

// prompt builds the model input of a request.
func (r *chatRequest) prompt(m *runner.Model, pol imagePolicy) (*runner.Prompt, error) {
	po := runner.PromptOptions{NoSplit: r.NoSplit, MaxImagePixels: pol.maxPixels}
	if r.NoSplit && r.ImageSplitting != nil && *r.ImageSplitting {
		return nil, badRequest("no_split and image_splitting true: give one of them")
	}
	var err error
	if po.Image, err = requestImageSettings(r.ImageSplitting, r.LongestEdge, r.ShortestEdge); err != nil {
		return nil, err
	}
	if r.Prompt != nil {
		if len(r.Messages) > 0 {
			return nil, badRequest("give messages or prompt, not both")
		}
		if pol.maxImages > 0 && len(r.Images) > pol.maxImages {
			return nil, badRequest("more than %s in the request", plural(pol.maxImages, "image"))
		}
		var imgs []runner.Image
		for i, ref := range r.Images {
			img, err := pol.resolve(ref)
			if err != nil {
				return nil, prefixErr(fmt.Sprintf("images[%d]: ", i), err)
			}
			imgs = append(imgs, img)
		}
		if r.Raw {
			return m.RawPrompt(*r.Prompt, imgs, po)
		}
		u, err := runner.UserMessage(*r.Prompt, imgs)
		if err != nil {
			return nil, err
		}
		return m.ChatPrompt([]runner.Message{u}, po)
	}
	if len(r.Messages) == 0 {
		return nil, badRequest("no messages")
	}
	msgs, _, err := r.messages(pol)
	if err != nil {
		return nil, err
	}
	return m.ChatPrompt(msgs, po)
}
