package runner

import (
	"math"
	"strings"
	"testing"
)

func TestSamplerGreedyAndBanned(t *testing.T) {
	s, err := NewSampler(SamplerOptions{}, 5, []int32{3})
	if err != nil {
		t.Fatal(err)
	}
	logits := []float32{0, 1, 2, 9, float32(math.NaN())}
	if got := s.Sample(logits, nil); got != 2 {
		t.Fatalf("greedy with id 3 banned: got %d, want 2", got)
	}
}

func TestSamplerPenalties(t *testing.T) {
	tests := []struct {
		name    string
		o       SamplerOptions
		history []int32
		want    []float32
	}{
		{"repeat", SamplerOptions{RepeatPenalty: 2}, []int32{0, 1, 1}, []float32{-4, 1, 3}},
		{"presence", SamplerOptions{PresencePenalty: 0.5}, []int32{1, 1, 2}, []float32{-2, 1.5, 2.5}},
		{"frequency", SamplerOptions{FrequencyPenalty: 0.5}, []int32{1, 1, 2}, []float32{-2, 1, 2.5}},
		{"window", SamplerOptions{RepeatPenalty: 2, RepeatLastN: 1}, []int32{0, 1, 2}, []float32{-2, 2, 1.5}},
		{"whole context", SamplerOptions{RepeatPenalty: 2, RepeatLastN: -1}, []int32{0, 1, 2}, []float32{-4, 1, 1.5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSampler(tc.o, 3, nil)
			if err != nil {
				t.Fatal(err)
			}
			logits := []float32{-2, 2, 3}
			s.Sample(logits, tc.history)
			for i := range logits {
				if math.Abs(float64(logits[i]-tc.want[i])) > 1e-6 {
					t.Fatalf("logits %v, want %v", logits, tc.want)
				}
			}
			// The counts are cleared for the next call.
			logits = []float32{-2, 2, 3}
			s.Sample(logits, nil)
			if logits[0] != -2 || logits[1] != 2 || logits[2] != 3 {
				t.Fatalf("penalties leaked into the next call: %v", logits)
			}
		})
	}
}

func sampleMany(t *testing.T, o SamplerOptions, logits []float32, n int) map[int32]int {
	t.Helper()
	s, err := NewSampler(o, len(logits), nil)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int32]int{}
	buf := make([]float32, len(logits))
	for i := 0; i < n; i++ {
		copy(buf, logits)
		counts[s.Sample(buf, nil)]++
	}
	return counts
}

func TestSamplerFilters(t *testing.T) {
	logits := []float32{1, 3, 2, 0, 2.5}
	tests := []struct {
		name    string
		o       SamplerOptions
		allowed []int32
	}{
		{"top-k 2", SamplerOptions{Temperature: 1, TopK: 2}, []int32{1, 4}},
		{"top-k 1", SamplerOptions{Temperature: 5, TopK: 1}, []int32{1}},
		// softmax: p(1)≈0.46, p(4)≈0.28, p(2)≈0.17: 0.46 < 0.6 ≤ 0.74.
		{"top-p", SamplerOptions{Temperature: 1, TopP: 0.6}, []int32{1, 4}},
		// p(4)/p(1) = e^-0.5 ≈ 0.61, p(2)/p(1) = e^-1 ≈ 0.37.
		{"min-p", SamplerOptions{Temperature: 1, MinP: 0.5}, []int32{1, 4}},
		{"all", SamplerOptions{Temperature: 1}, []int32{0, 1, 2, 3, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			counts := sampleMany(t, tc.o, logits, 3000)
			for id := range counts {
				ok := false
				for _, a := range tc.allowed {
					ok = ok || a == id
				}
				if !ok {
					t.Fatalf("sampled id %d, allowed %v (counts %v)", id, tc.allowed, counts)
				}
			}
			if len(counts) != len(tc.allowed) {
				t.Fatalf("sampled %v, want every one of %v", counts, tc.allowed)
			}
		})
	}
	// Temperature 1 follows the softmax: p(1) = e³/Σ ≈ 0.463.
	counts := sampleMany(t, SamplerOptions{Temperature: 1, Seed: 7}, logits, 20000)
	if f := float64(counts[1]) / 20000; math.Abs(f-0.463) > 0.02 {
		t.Fatalf("frequency of the top token %.3f, want ≈0.463", f)
	}
}

func TestSamplerSeed(t *testing.T) {
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)))
	}
	run := func(seed uint64) []int32 {
		s, err := NewSampler(SamplerOptions{Temperature: 1.5, TopK: 100, TopP: 0.95, Seed: seed}, len(logits), nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []int32
		buf := make([]float32, len(logits))
		for i := 0; i < 50; i++ {
			copy(buf, logits)
			out = append(out, s.Sample(buf, out))
		}
		return out
	}
	a, b, c := run(42), run(42), run(43)
	if !equalIDs(a, b) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a, b)
	}
	if equalIDs(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same 50 tokens")
	}
}

func TestSamplerNoAllocs(t *testing.T) {
	logits := make([]float32, 32003)
	for i := range logits {
		logits[i] = float32(i%97) / 10
	}
	history := []int32{1, 2, 3, 4, 5}
	for _, o := range []SamplerOptions{{}, {Temperature: 0.8, TopK: 40, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.1, PresencePenalty: 0.2}} {
		s, err := NewSampler(o, len(logits), []int32{10, 11})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]float32, len(logits))
		if n := testing.AllocsPerRun(20, func() { copy(buf, logits); s.Sample(buf, history) }); n != 0 {
			t.Errorf("%+v: %v allocations per token, want 0", o, n)
		}
	}
}

func TestSamplerOptionsValidate(t *testing.T) {
	tests := []struct {
		o    SamplerOptions
		want string
	}{
		{SamplerOptions{Temperature: -1}, "temperature"},
		{SamplerOptions{Temperature: math.NaN()}, "temperature"},
		{SamplerOptions{TopK: -1}, "top_k"},
		{SamplerOptions{TopP: 1.5}, "top_p"},
		{SamplerOptions{MinP: -0.1}, "min_p"},
		{SamplerOptions{RepeatPenalty: -1}, "repeat_penalty"},
		{SamplerOptions{PresencePenalty: 1000}, "presence_penalty"},
		{SamplerOptions{FrequencyPenalty: math.Inf(1)}, "frequency_penalty"},
	}
	for _, tc := range tests {
		err := tc.o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want one naming %s", tc.o, err, tc.want)
		}
	}
}

func TestPartialTop(t *testing.T) {
	for n := 1; n < 60; n++ {
		for k := 1; k <= n; k++ {
			c := make([]candidate, n)
			for i := range c {
				c[i] = candidate{id: int32(i), logit: float32((i * 37) % 11)}
			}
			partialTop(c, k, func(a, b candidate) int {
				if a.logit != b.logit {
					if a.logit > b.logit {
						return -1
					}
					return 1
				}
				return int(a.id - b.id)
			})
			// Every kept element ranks before every dropped one.
			for _, a := range c[:k] {
				for _, b := range c[k:] {
					if a.logit < b.logit || (a.logit == b.logit && a.id > b.id) {
						t.Fatalf("n=%d k=%d: kept %v before dropped %v", n, k, a, b)
					}
				}
			}
		}
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStopper(t *testing.T) {
	tests := []struct {
		name   string
		stops  []string
		chunks []string
		out    string // concatenation of what was released
		text   string
		hit    bool
	}{
		{"none", nil, []string{"ab", "c"}, "abc", "abc", false},
		{"inside a chunk", []string{"XY"}, []string{"abXYcd"}, "ab", "ab", true},
		{"across chunks", []string{"XYZ"}, []string{"abX", "Y", "Zq"}, "ab", "ab", true},
		{"false start released", []string{"XYZ"}, []string{"abX", "Yq"}, "abXYq", "abXYq", false},
		{"earliest of two", []string{"cd", "b"}, []string{"abcd"}, "a", "a", true},
		{"held at the end is released", []string{"XYZ"}, []string{"abXY"}, "abXY", "abXY", false},
		{"multibyte", []string{"é!"}, []string{"café", "!x"}, "caf", "caf", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStopper(tc.stops)
			var out strings.Builder
			hit := false
			for _, c := range tc.chunks {
				o, h := s.add(c, false)
				out.WriteString(o)
				if hit = h; h {
					break
				}
			}
			if !hit {
				o, _ := s.add("", true)
				out.WriteString(o)
			}
			if out.String() != tc.out || s.text() != tc.text || hit != tc.hit {
				t.Fatalf("released %q, text %q, hit %v; want %q, %q, %v", out.String(), s.text(), hit, tc.out, tc.text, tc.hit)
			}
		})
	}
}
