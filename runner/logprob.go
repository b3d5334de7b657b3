package runner

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// TokenLogprob is one generated token's log-probability in OpenAI's chat format: the token's text, its natural
// log-probability, its UTF-8 bytes and the most likely alternatives at its position.
type TokenLogprob struct {
	ID      int32        `json:"-"`
	Token   string       `json:"token"`
	Logprob float64      `json:"logprob"`
	Bytes   []int        `json:"bytes"`
	Top     []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is one alternative at a position (TokenLogprob.Top), most likely first.
type TopLogprob struct {
	ID      int32   `json:"-"`
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// checkOptions checks what every generation path shares: limits, stop strings, n and the logprob options;
// maxN is the most answers the caller can give.
func (m *Model) checkOptions(o GenerateOptions, maxN int) error {
	switch {
	case o.MaxTokens < 0:
		return inputErrorf("runner: max tokens %d: want 0 or more", o.MaxTokens)
	case o.N < 0:
		return inputErrorf("runner: n %d: want 1 or more", o.N)
	case o.N > maxN && maxN == 1:
		return inputErrorf("runner: n %d: several answers need the scheduler (serve, batch or --n)", o.N)
	case o.N > maxN:
		return inputErrorf("runner: n %d: at most %d (the parallel sequences)", o.N, maxN)
	case o.N > 1 && o.OnText != nil:
		return inputErrorf("runner: n %d: stream several answers with OnChoiceText, not OnText", o.N)
	case o.TopLogprobs < 0 || o.TopLogprobs > MaxTopLogprobs:
		return inputErrorf("runner: top_logprobs %d: want 0…%d", o.TopLogprobs, MaxTopLogprobs)
	case o.TopLogprobs > 0 && !o.Logprobs:
		return inputErrorf("runner: top_logprobs %d needs logprobs", o.TopLogprobs)
	}
	for i, st := range o.Stop {
		if st == "" {
			return inputErrorf("runner: stop string %d is empty", i)
		}
	}
	return nil
}

// logprob is the log-softmax of logits (float64 sums, with the maximum subtracted first) at id, with the top
// alternatives: the natural log-probabilities of the distribution the token was drawn from before temperature.
func (m *Model) logprob(logits []float32, id int32, top int) TokenLogprob {
	maxL := math.Inf(-1)
	for _, l := range logits {
		if v := float64(l); v > maxL {
			maxL = v
		}
	}
	sum := 0.0
	for _, l := range logits {
		if !math.IsInf(float64(l), -1) && !math.IsNaN(float64(l)) {
			sum += math.Exp(float64(l) - maxL)
		}
	}
	lse := maxL + math.Log(sum)
	lp := func(i int32) float64 { return float64(logits[i]) - lse }
	t := TokenLogprob{ID: id, Logprob: lp(id)}
	t.Token, t.Bytes = m.tokenText(id)
	if top > 0 {
		ids := make([]int32, 0, top+1)
		for i := range logits {
			l := logits[i]
			if math.IsInf(float64(l), -1) || math.IsNaN(float64(l)) {
				continue
			}
			// Keep the top ids sorted, most likely first (ties by lower id).
			if len(ids) == top && l <= logits[ids[top-1]] {
				continue
			}
			k, _ := slices.BinarySearchFunc(ids, int32(i), func(a, b int32) int {
				switch {
				case logits[a] > logits[b]:
					return -1
				case logits[a] < logits[b]:
					return 1
				}
				return int(a - b)
			})
			ids = slices.Insert(ids, k, int32(i))
			if len(ids) > top {
				ids = ids[:top]
			}
		}
		for _, j := range ids {
			tl := TopLogprob{ID: j, Logprob: lp(j)}
			tl.Token, tl.Bytes = m.tokenText(j)
			t.Top = append(t.Top, tl)
		}
	}
	if t.Top == nil {
		t.Top = []TopLogprob{}
	}
	return t
}

// tokenText is a token's text as it adds to the output — SentencePiece's "▁" as a space, a byte-fallback piece
// <0xNN> as that byte (then possibly part of a UTF-8 sequence: OpenAI's bytes field gives it exactly), a special
// token as its piece — and its bytes.
func (m *Model) tokenText(id int32) (string, []int) {
	piece := m.tok.Piece(id)
	var s string
	switch {
	case m.tok.IsSpecial(id):
		s = piece
	case len(piece) == 6 && strings.HasPrefix(piece, "<0x") && piece[5] == '>':
		if v, err := strconv.ParseUint(piece[3:5], 16, 8); err == nil {
			s = string([]byte{byte(v)})
		} else {
			s = piece
		}
	default:
		s = strings.ReplaceAll(piece, "\u2581", " ")
	}
	b := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		b[i] = int(s[i])
	}
	return s, b
}
