package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestBatchParallel answers the same JSONL requests with --parallel 1, --parallel 4 and --parallel 4 --unordered:
// every request gets the same result; the first two write them in input order, the unordered run in any order.
func TestBatchParallel(t *testing.T) {
	var lines []string
	prompts := []string{"What shape is in the picture?", "Describe the picture.", "What color is it?", "Is there a circle?", "hi"}
	for i, p := range prompts {
		img := ""
		if i%2 == 0 {
			img = fmt.Sprintf(`,"images":[%q]`, demoPNG(fmt.Sprintf("demo_%02d.png", i)))
		}
		lines = append(lines, fmt.Sprintf(`{"id":%d,"prompt":%q%s,"max_tokens":12,"logprobs":true,"top_logprobs":2}`, i, p, img))
	}
	lines = append(lines, `{"id":"bad","prompt":"x","n":9}`, `{"id":"n3","prompt":"Tell me a story.","n":3,"temperature":1,"seed":5,"max_tokens":6}`)
	stdin := strings.Join(lines, "\n") + "\n"
	type result struct {
		ID       json.RawMessage `json:"id"`
		Text     *string         `json:"text"`
		Tokens   []int32         `json:"tokens"`
		Logprobs []struct {
			Logprob float64 `json:"logprob"`
			Top     []struct {
				Logprob float64 `json:"logprob"`
			} `json:"top_logprobs"`
		} `json:"logprobs"`
		Choices []batchChoice `json:"choices"`
		Error   *apiError     `json:"error"`
	}
	runBatch := func(args ...string) ([]string, map[string]result) {
		code, out, errs := runCmd(t, stdin, append(append([]string{"batch"}, modelArgs(t, "demo")...), args...)...)
		noPanic(t, errs)
		if code != exitRuntime { // the "bad" line fails
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		var order []string
		byID := map[string]result{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var r result
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%v: %q: %v", args, l, err)
			}
			order = append(order, string(r.ID))
			byID[string(r.ID)] = r
		}
		return order, byID
	}
	wantOrder := []string{"0", "1", "2", "3", "4", `"bad"`, `"n3"`}
	order1, base := runBatch("--parallel", "3")
	if !slices.Equal(order1, wantOrder) {
		t.Fatalf("order %v, want %v", order1, wantOrder)
	}
	for i := range prompts {
		r := base[fmt.Sprint(i)]
		if r.Error != nil || r.Text == nil || len(r.Logprobs) != len(r.Tokens) || len(r.Tokens) == 0 {
			t.Fatalf("line %d: %+v", i, r)
		}
		for _, lp := range r.Logprobs {
			if len(lp.Top) != 2 || lp.Top[0].Logprob != lp.Logprob || lp.Logprob > 0 {
				t.Fatalf("line %d: logprobs %+v", i, r.Logprobs)
			}
		}
	}
	if r := base[`"bad"`]; r.Error == nil || !strings.Contains(r.Error.Message, "n 9") {
		t.Errorf("n 9: %+v", r)
	}
	if r := base[`"n3"`]; len(r.Choices) != 3 || !slices.Equal(r.Choices[0].Tokens, r.Tokens) {
		t.Errorf("n 3: %+v", r)
	}
	for _, args := range [][]string{{"--parallel", "1"}, {"--parallel", "4", "--unordered"}} {
		order, got := runBatch(args...)
		if args[len(args)-1] != "--unordered" && !slices.Equal(order, wantOrder) {
			t.Errorf("%v: order %v, want %v", args, order, wantOrder)
		}
		if len(got) != len(wantOrder) {
			t.Fatalf("%v: %d results, want %d", args, len(got), len(wantOrder))
		}
		for id, want := range base {
			g := got[id]
			if id == `"bad"` {
				if g.Error == nil {
					t.Errorf("%v: line %s did not fail", args, id)
				}
				continue
			}
			if id == `"n3"` && args[1] == "1" {
				continue // n 3 needs 3 parallel sequences
			}
			if fmt.Sprint(g.Tokens, g.Choices) != fmt.Sprint(want.Tokens, want.Choices) {
				t.Errorf("%v: line %s: %v %v, want %v %v", args, id, g.Tokens, g.Choices, want.Tokens, want.Choices)
			}
		}
	}
}

// TestRunChoices checks --n-choices with --json: seeded answers differ, greedy ones are equal; and the flag's bad
// values.
func TestRunChoices(t *testing.T) {
	args := append(modelArgs(t, "demo"), "--image", demoPNG("demo_00.png"), "-p", "What shape is in the picture?", "-n", "8", "--json", "--n-choices", "3")
	for _, tc := range []struct {
		name     string
		extra    []string
		distinct bool
	}{{"greedy", nil, false}, {"seeded", []string{"--temp", "5", "--seed", "3"}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "", append(slices.Clone(args), tc.extra...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var o runOutput
			if err := json.Unmarshal([]byte(out), &o); err != nil || len(o.Choices) != 3 {
				t.Fatalf("%v: %s", err, out)
			}
			a, b, c := fmt.Sprint(o.Choices[0].Tokens), fmt.Sprint(o.Choices[1].Tokens), fmt.Sprint(o.Choices[2].Tokens)
			if tc.distinct != (a != b && b != c && a != c) || (!tc.distinct && (a != b || b != c)) {
				t.Errorf("answers %s / %s / %s", a, b, c)
			}
			if o.Usage.CompletionTokens != len(o.Choices[0].Tokens)+len(o.Choices[1].Tokens)+len(o.Choices[2].Tokens) {
				t.Errorf("usage %+v", o.Usage)
			}
		})
	}
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{[]string{"--n-choices", "0"}, "--n-choices 0"},
		{[]string{"--logprobs"}, "add --json"},
		{[]string{"--json", "--top-logprobs", "3"}, "add --logprobs"},
		{[]string{"--json", "--logprobs", "--top-logprobs", "30"}, "--top-logprobs 30"},
	} {
		code, _, errs := runCmd(t, "", append(append(modelArgs(t, "demo"), "-p", "hi"), tc.extra...)...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d: %s", tc.extra, code, errs)
		}
	}
}

// TestServerChoicesLogprobs asks a server with --parallel 3 for n = 2 answers with logprobs, as JSON and streamed:
// two greedy choices with equal text, each with its logprobs, and stream chunks that name their choice.
func TestServerChoicesLogprobs(t *testing.T) {
	_, url := startServer(t, "demo", func(c *serverConfig) { c.parallel = 3 })
	body := `{"n":2,"logprobs":true,"top_logprobs":3,"max_tokens":6,"messages":[{"role":"user","content":"What shape is a ball?"}]}`
	code, _, b := post(t, url+"/v1/chat/completions", body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	var r struct {
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Logprobs *struct {
				Content []struct {
					Token   string  `json:"token"`
					Logprob float64 `json:"logprob"`
					Top     []struct {
						Logprob float64 `json:"logprob"`
					} `json:"top_logprobs"`
				} `json:"content"`
			} `json:"logprobs"`
		} `json:"choices"`
		Usage tokenUsage `json:"usage"`
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 2 {
		t.Fatalf("%v: %s", err, b)
	}
	for i, c := range r.Choices {
		if c.Index != i || c.Message.Content != r.Choices[0].Message.Content || c.Logprobs == nil || len(c.Logprobs.Content) == 0 ||
			len(c.Logprobs.Content[0].Top) != 3 {
			t.Fatalf("choice %d: %+v", i, c)
		}
	}
	code, _, b = post(t, url+"/v1/chat/completions", strings.Replace(body, `"n":2`, `"n":2,"stream":true`, 1))
	if code != 200 {
		t.Fatalf("stream: status %d: %s", code, b)
	}
	text := map[int]string{}
	finished := map[int]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c chatResponse
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				text[ch.Index] += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				finished[ch.Index] = true
			}
		}
	}
	for i := 0; i < 2; i++ {
		if text[i] != r.Choices[0].Message.Content || !finished[i] {
			t.Errorf("streamed choice %d: %q (finished %v), want %q", i, text[i], finished[i], r.Choices[0].Message.Content)
		}
	}
	if code, _, b := post(t, url+"/v1/chat/completions", strings.Replace(body, `"n":2`, `"n":4`, 1)); code != 400 || !strings.Contains(string(b), "n 4") {
		t.Errorf("n 4: %d %s", code, b)
	}
}
