package runner

import (
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/idefics2-go/idefics2/processor"
)

// PartType is the kind of a message part.
type PartType string

// Message part kinds, as chat templates name them.
const (
	PartText  PartType = "text"
	PartImage PartType = "image"
)

// Image is an encoded image file (JPEG, PNG, GIF, WebP, BMP or TIFF) and a name for messages.
type Image struct {
	Name string
	Data []byte
}

// LoadImage reads the image file at path (it is decoded when a prompt is built).
func LoadImage(path string) (Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Image{}, inputErrorf("runner: image %s does not exist", path)
		}
		return Image{}, inputErrorf("runner: image %s: %v", path, err)
	}
	return Image{Name: path, Data: b}, nil
}

// Part is one piece of a message: text, or an image.
type Part struct {
	Type  PartType
	Text  string
	Image *Image
}

// TextPart returns a text part.
func TextPart(s string) Part { return Part{Type: PartText, Text: s} }

// ImagePart returns an image part.
func ImagePart(img Image) Part { return Part{Type: PartImage, Image: &img} }

// Message is one chat turn: a role (user, assistant, system) and its parts in order.
type Message struct {
	Role    string
	Content []Part
}

// UserMessage builds the user turn for a one-shot prompt: the text's <image> markers say where the images go (as
// many markers as images); without markers the images come first, then the text — the layout of the Idefics2
// examples. An empty text with no images is an error.
func UserMessage(text string, images []Image) (Message, error) {
	msg := Message{Role: "user"}
	k := strings.Count(text, tokenImage)
	switch {
	case k == 0:
		for _, img := range images {
			msg.Content = append(msg.Content, ImagePart(img))
		}
		if text != "" {
			msg.Content = append(msg.Content, TextPart(text))
		}
	case k != len(images):
		return msg, inputErrorf("runner: %s", processor.MarkerMismatch(k, len(images)))
	default:
		segs := strings.Split(text, tokenImage)
		for i, s := range segs {
			if s != "" {
				msg.Content = append(msg.Content, TextPart(s))
			}
			if i < len(images) {
				msg.Content = append(msg.Content, ImagePart(images[i]))
			}
		}
	}
	if len(msg.Content) == 0 {
		return msg, inputErrorf("runner: the prompt is empty")
	}
	return msg, nil
}

// badUTF8 is the offset of the first byte of s that does not start a valid UTF-8 sequence (len(s) when s is valid).
func badUTF8(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return i
			}
		}
	}
	return len(s)
}

// PromptOptions control how a prompt is built.
type PromptOptions struct {
	// NoGenerationPrompt leaves out the template's generation prompt ("Assistant:").
	NoGenerationPrompt bool
	// NoSplit turns image splitting off for this prompt.
	NoSplit bool
	// MaxImagePixels refuses an image whose header declares more than this many pixels (width × height) before
	// it is decoded; 0 means processor.DefaultMaxImagePixels.
	MaxImagePixels int
	// Image changes the image processor settings for this prompt (splitting, edges; see Model.ImageConfigWith).
	Image ImageSettings
}

// Prompt is a model input: token ids with their images preprocessed.
type Prompt struct {
	// Text is the model input before image expansion: the rendered template, or the raw text.
	Text string
	// Tokens are the ids, BOS included, with every image expanded to its <image> tokens.
	Tokens []int32
	// Images is the preprocessed batch of every (sub-)image in order (nil without images): the pixel values HF's
	// processor gives for the same prompt.
	Images *processor.ImageBatch
	// NumImages is the number of input images (before splitting).
	NumImages int
	// ImageConfig is the image processor settings the images were preprocessed with (nil without images).
	ImageConfig *processor.ImageConfig

	subKeys []uint64 // identity of each sub-image's features (image bytes, crop, padded size)
}

var imageHashSeed = maphash.MakeSeed()

// ChatPrompt renders msgs with the model's chat template, expands the images and tokenizes the result.
func (m *Model) ChatPrompt(msgs []Message, o PromptOptions) (*Prompt, error) {
	if len(msgs) == 0 {
		return nil, inputErrorf("runner: no messages")
	}
	if m.chat == nil {
		return nil, inputErrorf("runner: the model's chat template cannot be used (%v); use a raw prompt", m.chatErr)
	}
	var images []Image
	pm := make([]processor.Message, len(msgs))
	for i, msg := range msgs {
		if msg.Role == "" {
			return nil, inputErrorf("runner: message %d has no role", i)
		}
		pm[i].Role = msg.Role
		for j, p := range msg.Content {
			switch p.Type {
			case PartText:
				pm[i].Content = append(pm[i].Content, processor.ContentPart{Type: processor.PartText, Text: p.Text})
			case PartImage:
				if p.Image == nil {
					return nil, inputErrorf("runner: message %d part %d: image part without an image", i, j)
				}
				pm[i].Content = append(pm[i].Content, processor.ContentPart{Type: processor.PartImage})
				images = append(images, *p.Image)
			default:
				return nil, inputErrorf("runner: message %d part %d: unknown part type %q (want text or image)", i, j, p.Type)
			}
		}
		if len(pm[i].Content) == 0 {
			return nil, inputErrorf("runner: message %d (%s) is empty", i, msg.Role)
		}
	}
	text, err := m.chat.Render(pm, !o.NoGenerationPrompt, m.tok.ChatTemplateVars())
	if err != nil {
		return nil, asInput(fmt.Errorf("runner: %w", err))
	}
	return m.build(text, images, o)
}

// RawPrompt takes text as the exact model input (no template): only its <image> markers are expanded, one per
// image in order, and BOS is added as the tokenizer does.
func (m *Model) RawPrompt(text string, images []Image, o PromptOptions) (*Prompt, error) {
	if text == "" && len(images) == 0 {
		return nil, inputErrorf("runner: the prompt is empty")
	}
	return m.build(text, images, o)
}

func (m *Model) build(text string, images []Image, o PromptOptions) (*Prompt, error) {
	p := &Prompt{Text: text, NumImages: len(images)}
	if !utf8.ValidString(text) {
		return nil, inputErrorf("runner: the prompt is not valid UTF-8 (first bad byte at offset %d)", badUTF8(text))
	}
	markers := strings.Count(text, tokenImage)
	if len(images) > 0 && !m.HasVision() {
		return nil, inputErrorf("runner: %s but the model has no mmproj (vision) file: pass --mmproj", imagesGiven(len(images)))
	}
	if markers != len(images) {
		return nil, inputErrorf("runner: %s", processor.MarkerMismatch(markers, len(images)))
	}
	cfg, err := m.ImageConfigWith(o.Image)
	if err != nil {
		return nil, err
	}
	if o.NoSplit {
		cfg.DoImageSplitting = false
	}
	// Like Idefics2Processor, expand even without images: doubled <fake_token_around_image> collapse anyway.
	expanded, err := processor.ExpandImageTokens(text, len(images), max(m.seqLen, 1), cfg.DoImageSplitting)
	if err != nil {
		return nil, asInput(fmt.Errorf("runner: %w", err))
	}
	ids, err := m.tok.Encode(expanded, true)
	if err != nil {
		return nil, asInput(fmt.Errorf("runner: tokenizing the prompt: %w", err))
	}
	if len(ids) == 0 {
		return nil, inputErrorf("runner: the prompt is empty")
	}
	p.Tokens = ids
	if len(images) == 0 {
		return p, nil
	}
	decoded := make([]*processor.RGBImage, len(images))
	hashes := make([]uint64, len(images))
	for i, img := range images {
		name := img.Name
		if name == "" {
			name = fmt.Sprintf("image %d", i+1)
		}
		if decoded[i], err = processor.DecodeImage(img.Data, processor.DecodeOptions{Name: name, MaxPixels: max(o.MaxImagePixels, 0)}); err != nil {
			return nil, asInput(err)
		}
		hashes[i] = maphash.Bytes(imageHashSeed, img.Data)
	}
	b, err := cfg.Preprocess(decoded)
	if err != nil {
		return nil, asInput(fmt.Errorf("runner: preprocessing the images: %w", err))
	}
	patch := m.g.Vision.Patch
	if b.H < patch || b.W < patch {
		return nil, inputErrorf("runner: the images are %d×%d pixels after resizing, smaller than one %d×%d patch", b.W, b.H, patch, patch)
	}
	p.Images = b
	p.ImageConfig = &cfg
	for i, per := range b.PerImage {
		for j := 0; j < per; j++ {
			var h maphash.Hash
			h.SetSeed(imageHashSeed)
			fmt.Fprintf(&h, "%x/%d/%d/%d/%d/%v", hashes[i], j, per, b.H, b.W, cfg)
			p.subKeys = append(p.subKeys, h.Sum64())
		}
	}
	nImg := 0
	for _, t := range ids {
		if t == m.imageTokenID {
			nImg++
		}
	}
	if nImg != b.N*m.seqLen {
		return nil, inputErrorf("runner: the prompt holds %d %s tokens, want %d for %d (sub-)images of %d tokens (does the text contain %s itself?)",
			nImg, tokenImage, b.N*m.seqLen, b.N, m.seqLen, tokenImage)
	}
	return p, nil
}
