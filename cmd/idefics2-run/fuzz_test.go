package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// FuzzChatRequest: any request body either fails with a request error or gives messages and options; never a
// panic.
func FuzzChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}],"stop":["x"],"max_tokens":3}`,
		`{"messages":[{"role":"system","content":[{"type":"image_url","image_url":"data:,abc"}]}],"n":1,"seed":-4}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"/etc/passwd"}}]}]}`,
		`{"messages":[{"role":"user","content":null}],"stop":null,"temperature":1e308}`,
		`{"prompt":"<image>","images":["data:;base64,===="],"raw":true}`,
	} {
		f.Add([]byte(s))
	}
	pol, _ := newImagePolicy("", 3)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req chatRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		msgs, n, err := req.messages(pol)
		if err == nil && n > 3 {
			t.Fatalf("%d images accepted, limit 3", n)
		}
		if err == nil {
			for _, m := range msgs {
				if len(m.Content) == 0 || m.Role == "" {
					t.Fatalf("empty message accepted: %+v", m)
				}
			}
		}
		o, err := req.generateOptions(runner.GenerateOptions{MaxTokens: 8}, limits{maxTokens: 100})
		if err == nil && (o.MaxTokens < 0 || o.MaxTokens > 100 || o.Sampler.Validate() != nil) {
			t.Fatalf("bad options accepted: %+v", o)
		}
	})
}

// FuzzParseFlags: any command line of the one-shot front end either parses, asks for the help, or fails with a
// usage error; never a panic.
func FuzzParseFlags(f *testing.F) {
	f.Add("-m\x00x.gguf\x00-p\x00hi\x00--image\x00a.png\x00--temp=0.5\x00-n\x0010")
	f.Add("--json=maybe\x00--stop\x00\x00--seed\x00-1\x00--\x00-p")
	f.Add("-n\x00--top-p\x001e999\x00---\x00-")
	f.Add("-t\x002\x00-h")
	f.Fuzz(func(t *testing.T, joined string) {
		fs, rf := newRunFlags()
		if err := fs.Parse(strings.Split(joined, "\x00")); err != nil {
			if !errors.Is(err, cli.ErrHelp) && exitCode(err) != exitUsage {
				t.Fatalf("parse error %v is not a usage error", err)
			}
			return
		}
		if _, err := rf.sampling.options("fuzz"); err != nil && exitCode(err) != exitUsage {
			t.Fatalf("options error %v is not a usage error", err)
		}
	})
}

// FuzzDataURI: any data URI decodes to at most maxImageBytes bytes or fails with a 400 request error; a base64
// payload that decodes re-encodes to the same bytes.
func FuzzDataURI(f *testing.F) {
	f.Add("image/png;base64,iVBORw0KGgo=")
	f.Add(",%zz")
	f.Add(";base64")
	f.Add("image/jpeg;base64,/9j/4A\r\nAQ SkZJ\tRg==")
	f.Add("text/plain;charset=utf-8,hello%20world")
	f.Add(";base64,iVBORw0KGgo")
	f.Add("image/png;base64,iVBORw0KGgo-_")
	f.Fuzz(func(t *testing.T, s string) {
		img, err := decodeDataURI("data:" + s)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.status != 400 || !strings.HasPrefix(re.msg, "image data URI") {
				t.Fatalf("error %v is not a 400 naming the data URI", err)
			}
			return
		}
		comma := strings.IndexByte(s, ',')
		if comma < 0 {
			t.Fatalf("accepted %q without a comma", s)
		}
		if len(img.Data) > maxImageBytes || len(img.Data) > len(s) {
			t.Fatalf("%d bytes from a %d-byte URI", len(img.Data), len(s))
		}
		if strings.HasSuffix(s[:comma], ";base64") {
			enc := base64.StdEncoding.EncodeToString(img.Data)
			back, err := decodeDataURI("data:;base64," + enc)
			if err != nil || !bytes.Equal(back.Data, img.Data) {
				t.Fatalf("re-encoded payload does not decode to the same bytes: %v", err)
			}
		}
	})
}

// FuzzBatchLine answers arbitrary JSONL batch lines on the tiny p1 model (a 96-position context, local images
// confined to a folder holding one picture and one junk file): every line gives exactly one result, either an error
// object with a type and a message that names the line, or a complete answer whose usage adds up, whose stop reason
// is one of the runner's, and that stays within the context. The result always encodes as one JSON line.
func FuzzBatchLine(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"messages":[{"role":"user","content":"hi"}],"max_tokens":3}`,
		`{"id":"a","prompt":"<image>What?","images":["pic.png"],"max_tokens":2}`,
		`{"id":[1],"prompt":"<image><image>","images":["pic.png"],"raw":true}`,
		`{"id":null,"prompt":"hello","raw":true,"max_tokens":1000000000000,"stop":["o"]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"junk.png"}}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"../../etc/passwd"}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image","image":"data:image/png;base64,iVBORw0KGgo="}]}],"temperature":0.7,"seed":3,"top_k":5}`,
		`{"prompt":"x","messages":[{"role":"user","content":"y"}]}`,
		`{"prompt":"` + strings.Repeat("long ", 120) + `","max_tokens":1}`,
		`{"stream":true,"prompt":"x"}`,
		`{"prompt":"\xff\xfe","max_tokens":2,"top_p":0.5,"min_p":0.1,"repetition_penalty":1.3}`,
		`[]`, `{`, `"text"`, `{"id":{"x":1},"prompt":""}`,
	} {
		f.Add([]byte(s))
	}
	model, mm := pair(f, "p1")
	m, err := runner.Load(context.Background(), runner.Options{ModelPath: model, MMProjPath: mm, Device: "cpu", Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewScheduler(runner.SchedulerOptions{Parallel: 2, CtxSize: 96, CacheMem: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	dir := f.TempDir()
	pic, err := os.ReadFile(demoPNG("demo_00.png"))
	if err != nil {
		f.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "pic.png"), pic, 0o644)
	os.WriteFile(filepath.Join(dir, "junk.png"), []byte("junk"), 0o644)
	pol, err := newImagePolicy(dir, 4)
	if err != nil {
		f.Fatal(err)
	}
	pol.allowLocal = true
	def := runner.GenerateOptions{MaxTokens: 4}
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > 1<<16 {
			return
		}
		res := batchOne(context.Background(), m, s, line, 7, def, pol)
		b, err := json.Marshal(res)
		if err != nil || bytes.ContainsRune(b, '\n') {
			t.Fatalf("result does not encode as one line: %v %q", err, b)
		}
		if res.Error != nil {
			if res.Error.Type == "" || !strings.HasPrefix(res.Error.Message, "line 7: ") || res.Text != nil {
				t.Fatalf("bad error object %+v", res.Error)
			}
			return
		}
		if res.Text == nil || res.Tokens == nil || res.Usage == nil || res.Timings == nil {
			t.Fatalf("incomplete result %s", b)
		}
		u := res.Usage
		gen := len(*res.Tokens)
		if res.Choices != nil {
			gen = 0
			for _, c := range res.Choices {
				gen += len(c.Tokens)
			}
		}
		if u.CompletionTokens != gen || u.TotalTokens != u.PromptTokens+u.CompletionTokens || u.PromptTokens > s.CtxSize() {
			t.Fatalf("usage %+v does not add up (context %d)", *u, s.CtxSize())
		}
		switch runner.StopReason(res.StopReason) {
		case runner.StopToken, runner.StopString, runner.StopLength, runner.StopContext:
		default:
			t.Fatalf("stop reason %q", res.StopReason)
		}
	})
}
