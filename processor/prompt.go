package processor

import (
	"errors"
	"fmt"
	"strings"
)

// Texts of the tokens idefics2 adds to the Mistral vocabulary (IDEFICS2.md §3). Token ids are
// looked up by these texts (Tokenizer.TokenID), never hard-coded.
const (
	TokenFakeImage      = "<fake_token_around_image>"
	TokenImage          = "<image>"
	TokenEndOfUtterance = "<end_of_utterance>"
)

// maxExpandedPrompt bounds the expanded prompt (bytes); real prompts are a few KiB per image.
const maxExpandedPrompt = 1 << 28

// ErrPromptImages is matched (errors.Is) by the error ExpandImageTokens returns when the number
// of <image> markers in the prompt differs from the number of images.
var ErrPromptImages = errors.New("processor: prompt: image count mismatch")

// ExpandImageTokens expands the <image> markers of prompt as Idefics2Processor.__call__ does:
// each "<image>" becomes "<fake_token_around_image>" + "<image>"×seqLen +
// "<fake_token_around_image>" (that string 5 times when split: 4 crops, then the whole image),
// then every "<fake_token_around_image><fake_token_around_image>" becomes one, in a single left to
// right pass without overlap (Python's str.replace), which merges the markers of adjacent images
// and crops. numImages must equal the number of "<image>" markers (counted as Python's str.count
// does); seqLen is image_seq_len (the perceiver's latents per image, 64 for idefics2-8b).
func ExpandImageTokens(prompt string, numImages int, seqLen int, split bool) (string, error) {
	if seqLen < 1 {
		return "", fmt.Errorf("processor: prompt: image_seq_len %d, want >= 1", seqLen)
	}
	if numImages < 0 {
		return "", fmt.Errorf("processor: prompt: %d images, want >= 0", numImages)
	}
	markers := strings.Count(prompt, TokenImage)
	if markers != numImages {
		return "", fmt.Errorf("%w: %s", ErrPromptImages, MarkerMismatch(markers, numImages))
	}
	repeat := 1
	if split {
		repeat = 5
	}
	per := int64(repeat) * (2*int64(len(TokenFakeImage)) + int64(seqLen)*int64(len(TokenImage)))
	if int64(len(prompt))+int64(markers)*per > maxExpandedPrompt {
		return "", fmt.Errorf("processor: prompt: expanding %d images with image_seq_len %d exceeds %d bytes", markers, seqLen, maxExpandedPrompt)
	}
	if markers == 0 {
		// transformers still collapses doubled fake tokens present in the text.
		return strings.ReplaceAll(prompt, TokenFakeImage+TokenFakeImage, TokenFakeImage), nil
	}
	one := TokenFakeImage + strings.Repeat(TokenImage, seqLen) + TokenFakeImage
	expanded := strings.ReplaceAll(prompt, TokenImage, strings.Repeat(one, repeat))
	return strings.ReplaceAll(expanded, TokenFakeImage+TokenFakeImage, TokenFakeImage), nil
}
