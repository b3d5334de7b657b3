package main

import (
	"encoding/json"
	"strings"
	"testing"

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

// FuzzParseFlags: any command line either parses or fails with a usage error; never a panic.
func FuzzParseFlags(f *testing.F) {
	f.Add("-m\x00x.gguf\x00-p\x00hi\x00--image\x00a.png\x00--temp=0.5\x00-n\x0010")
	f.Add("--json=maybe\x00--stop\x00\x00--seed\x00-1\x00--\x00-p")
	f.Add("-n\x00--top-p\x001e999\x00---\x00-")
	f.Fuzz(func(t *testing.T, joined string) {
		var mf modelFlags
		var sf samplingFlags
		fs := newFlagSet("fuzz")
		mf.register(fs)
		sf.register(fs)
		var raw bool
		var images []string
		fs.Bool(&raw, "raw", "")
		fs.List(&images, "image", "")
		if err := fs.parse(strings.Split(joined, "\x00")); err != nil {
			if exitCode(err) != exitUsage {
				t.Fatalf("parse error %v is not a usage error", err)
			}
			return
		}
		if _, err := sf.options("fuzz"); err != nil && exitCode(err) != exitUsage {
			t.Fatalf("options error %v is not a usage error", err)
		}
	})
}

func FuzzDataURI(f *testing.F) {
	f.Add("data:image/png;base64,iVBORw0KGgo=")
	f.Add("data:,%zz")
	f.Add("data:;base64")
	f.Fuzz(func(t *testing.T, s string) {
		img, err := decodeDataURI("data:" + s)
		if err == nil && img.Data == nil && !strings.Contains(s, ",") {
			t.Fatalf("accepted %q without data", s)
		}
	})
}
