package runner

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SamplerOptions choose how the next token is picked from the logits. The zero value is greedy decoding with no
// penalties.
//
// The order of the steps follows transformers' generate (v4.44): repetition penalty, then (an OpenAI-style
// extension) presence and frequency penalties, then the banned tokens are masked, then — when sampling —
// temperature, top-k, top-p and min-p, and a draw from what is left.
type SamplerOptions struct {
	// Temperature divides the logits; 0 (or less) means greedy decoding (argmax), ignoring TopK/TopP/MinP/Seed.
	Temperature float64
	// TopK keeps the k most likely tokens; 0 disables it.
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability reaches p (0 < p ≤ 1); 0 or 1 disables it.
	TopP float64
	// MinP drops tokens whose probability is below MinP × the top probability; 0 disables it.
	MinP float64
	// RepeatPenalty divides positive logits and multiplies negative ones of tokens seen in the penalty window
	// (transformers' RepetitionPenaltyLogitsProcessor); 0 or 1 disables it.
	RepeatPenalty float64
	// PresencePenalty is subtracted once from the logit of every token seen in the window (OpenAI semantics).
	PresencePenalty float64
	// FrequencyPenalty is subtracted from a token's logit once per occurrence in the window (OpenAI semantics).
	FrequencyPenalty float64
	// RepeatLastN is the penalty window: the last N tokens of prompt and output; 0 means 64 (llama.cpp's default),
	// a negative value the whole context.
	RepeatLastN int
	// Seed seeds the PCG generator used for sampling: the same seed, options and model give the same output.
	Seed uint64
}

// Validate reports options outside their ranges, naming the option.
func (o SamplerOptions) Validate() error {
	bad := func(name string, v any, want string) error {
		return fmt.Errorf("runner: sampler: %s %v: want %s", name, v, want)
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !finite(o.Temperature) || o.Temperature < 0:
		return bad("temperature", o.Temperature, "a number ≥ 0")
	case o.TopK < 0:
		return bad("top_k", o.TopK, "an integer ≥ 0")
	case !finite(o.TopP) || o.TopP < 0 || o.TopP > 1:
		return bad("top_p", o.TopP, "a number in [0, 1]")
	case !finite(o.MinP) || o.MinP < 0 || o.MinP > 1:
		return bad("min_p", o.MinP, "a number in [0, 1]")
	case o.RepeatLastN < -1:
		return bad("repeat_last_n", o.RepeatLastN, "-1 (whole context), 0 (64) or more")
	case !finite(o.RepeatPenalty) || o.RepeatPenalty < 0:
		return bad("repeat_penalty", o.RepeatPenalty, "a number ≥ 0 (1 = off)")
	case !finite(o.PresencePenalty) || math.Abs(o.PresencePenalty) > 100:
		return bad("presence_penalty", o.PresencePenalty, "a number in [-100, 100]")
	case !finite(o.FrequencyPenalty) || math.Abs(o.FrequencyPenalty) > 100:
		return bad("frequency_penalty", o.FrequencyPenalty, "a number in [-100, 100]")
	}
	return nil
}

// Greedy reports whether the options pick the argmax.
func (o SamplerOptions) Greedy() bool { return o.Temperature <= 0 }

type candidate struct {
	id    int32
	logit float32
	p     float64
}

// Sampler picks tokens from logits. It keeps its buffers between calls so that sampling a token allocates
// nothing. It is not safe for concurrent use.
type Sampler struct {
	opts   SamplerOptions
	rng    *rand.Rand
	banned []int32 // ids never to produce (image placeholders)
	cands  []candidate
	counts []int32 // occurrences per id in the penalty window (only ids in touched are non-zero)
	touch  []int32
}

// NewSampler returns a sampler for a vocabulary of vocab ids; banned ids get −∞ logits.
func NewSampler(o SamplerOptions, vocab int, banned []int32) (*Sampler, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if vocab <= 0 {
		return nil, errors.New("runner: sampler: empty vocabulary")
	}
	if o.RepeatLastN == 0 {
		o.RepeatLastN = 64
	}
	s := &Sampler{opts: o, banned: banned}
	// The stream constant is arbitrary but fixed so that a seed always names the same sequence.
	s.rng = rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	if o.penalized() {
		s.counts = make([]int32, vocab)
	}
	if !o.Greedy() {
		s.cands = make([]candidate, 0, vocab)
	}
	return s, nil
}

func (o SamplerOptions) penalized() bool {
	return (o.RepeatPenalty != 0 && o.RepeatPenalty != 1) || o.PresencePenalty != 0 || o.FrequencyPenalty != 0
}

// Sample modifies logits in place (penalties, banned ids) and returns the chosen id. history is the sequence so
// far (prompt and generated tokens); only its last RepeatLastN entries matter.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	o := &s.opts
	if o.penalized() {
		s.applyPenalties(logits, history)
	}
	ninf := float32(math.Inf(-1))
	for _, id := range s.banned {
		if int(id) < len(logits) && id >= 0 {
			logits[id] = ninf
		}
	}
	if o.Greedy() {
		return argmax(logits)
	}
	return s.sample(logits)
}

func (s *Sampler) applyPenalties(logits []float32, history []int32) {
	o := &s.opts
	w := history
	if o.RepeatLastN > 0 && len(w) > o.RepeatLastN {
		w = w[len(w)-o.RepeatLastN:]
	}
	for _, id := range w {
		if id < 0 || int(id) >= len(s.counts) || int(id) >= len(logits) {
			continue
		}
		if s.counts[id] == 0 {
			s.touch = append(s.touch, id)
		}
		s.counts[id]++
	}
	rp := float32(o.RepeatPenalty)
	for _, id := range s.touch {
		l := logits[id]
		if rp != 0 && rp != 1 {
			if l > 0 {
				l /= rp
			} else {
				l *= rp
			}
		}
		l -= float32(o.PresencePenalty) + float32(o.FrequencyPenalty)*float32(s.counts[id])
		logits[id] = l
		s.counts[id] = 0
	}
	s.touch = s.touch[:0]
}

// argmax returns the first index of the largest value (NaN never wins).
func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] || (math.IsNaN(float64(v[best])) && !math.IsNaN(float64(x))) {
			best = i
		}
	}
	return int32(best)
}

func (s *Sampler) sample(logits []float32) int32 {
	o := &s.opts
	inv := 1 / o.Temperature
	c := s.cands[:0]
	for i, l := range logits {
		if math.IsInf(float64(l), -1) || math.IsNaN(float64(l)) {
			continue
		}
		c = append(c, candidate{id: int32(i), logit: float32(float64(l) * inv)})
	}
	s.cands = c
	if len(c) == 0 {
		return argmax(logits)
	}
	// Descending by logit, ties by id, so that the result does not depend on the sort's stability.
	byLogit := func(a, b candidate) int {
		if r := cmp.Compare(b.logit, a.logit); r != 0 {
			return r
		}
		return cmp.Compare(a.id, b.id)
	}
	if o.TopK > 0 && o.TopK < len(c) {
		partialTop(c, o.TopK, byLogit)
		c = c[:o.TopK]
	}
	slices.SortFunc(c, byLogit)
	// Softmax over what is left.
	maxL := float64(c[0].logit)
	sum := 0.0
	for i := range c {
		c[i].p = math.Exp(float64(c[i].logit) - maxL)
		sum += c[i].p
	}
	for i := range c {
		c[i].p /= sum
	}
	if o.TopP > 0 && o.TopP < 1 {
		// transformers' TopPLogitsWarper keeps tokens until the cumulative probability reaches top_p, and always
		// at least one.
		cum := 0.0
		for i := range c {
			cum += c[i].p
			if cum >= o.TopP {
				c = c[:i+1]
				break
			}
		}
	}
	if o.MinP > 0 {
		thr := o.MinP * c[0].p
		n := 1
		for n < len(c) && c[n].p >= thr {
			n++
		}
		c = c[:n]
	}
	total := 0.0
	for i := range c {
		total += c[i].p
	}
	r := s.rng.Float64() * total
	for i := range c {
		r -= c[i].p
		if r < 0 {
			return c[i].id
		}
	}
	return c[len(c)-1].id
}

// partialTop moves the k first elements of c in cmp order to the front (in any order), by quickselect.
func partialTop(c []candidate, k int, less func(a, b candidate) int) {
	lo, hi := 0, len(c)-1
	for lo < hi {
		// Median of three as pivot.
		mid := lo + (hi-lo)/2
		if less(c[mid], c[lo]) < 0 {
			c[mid], c[lo] = c[lo], c[mid]
		}
		if less(c[hi], c[lo]) < 0 {
			c[hi], c[lo] = c[lo], c[hi]
		}
		if less(c[hi], c[mid]) < 0 {
			c[hi], c[mid] = c[mid], c[hi]
		}
		pivot := c[mid]
		i, j := lo, hi
		for i <= j {
			for less(c[i], pivot) < 0 {
				i++
			}
			for less(pivot, c[j]) < 0 {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		switch {
		case k-1 <= j:
			hi = j
		case k-1 >= i:
			lo = i
		default:
			return
		}
	}
}
