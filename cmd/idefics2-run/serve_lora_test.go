package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/runner"
	"github.com/idefics2-go/idefics2/runner/testmodels"
)

// TestServerAdapters serves p2 with the p2_all_rslora adapter applied at run time: /lora-adapters lists it, a request
// without "lora" uses it at its loaded scale, {"id": 0, "scale": 0} answers as the bare base does, and a bad "lora"
// list is a 400 naming the element.
func TestServerAdapters(t *testing.T) {
	model, mm := pair(t, "p2")
	ad, adMM, err := testmodels.Adapter("p2_all_rslora", "p2")
	if err != nil {
		t.Fatal(err)
	}
	m, err := runner.Load(context.Background(), runner.Options{ModelPath: model, MMProjPath: mm, Device: "cpu", Threads: 1,
		Adapters: []runner.Adapter{{Path: ad, Scale: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pol, _ := newImagePolicy("", 4)
	srv, err := newServer(m, serverConfig{defaults: runner.GenerateOptions{MaxTokens: 8}, tokenLimit: 4000, maxBody: 1 << 20,
		timeout: time.Minute, queue: 4, policy: pol, ctxSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer func() {
		hs.Close()
		srv.close()
	}()

	resp, err := http.Get(hs.URL + "/lora-adapters")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var list []struct {
		ID     int     `json:"id"`
		Path   string  `json:"path"`
		MMProj string  `json:"mmproj"`
		Scale  float32 `json:"scale"`
	}
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 1 || list[0].ID != 0 || list[0].Path != ad || list[0].MMProj != adMM || list[0].Scale != 1 {
		t.Fatalf("/lora-adapters: %s (%v); want adapter 0 = %s with mmproj %s at scale 1", b, err, ad, adMM)
	}

	ask := func(url, extra string) string {
		t.Helper()
		body := `{"temperature":0,"max_tokens":8,"messages":[{"role":"user","content":"The quick brown fox"}]` + extra + `}`
		code, _, b := post(t, url+"/v1/chat/completions", body)
		var r chatResponse
		if code != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
			t.Fatalf("status %d: %s", code, b)
		}
		return *r.Choices[0].Message.Content
	}
	_, baseURL := startServer(t, "p2", nil)
	base := ask(baseURL, "")
	adapted := ask(hs.URL, "")
	if adapted == base {
		t.Fatalf("the adapter changes nothing: %q", adapted)
	}
	if got := ask(hs.URL, `,"lora":[{"id":0,"scale":0}]`); got != base {
		t.Errorf("scale 0: %q, want the base's %q", got, base)
	}
	if got := ask(hs.URL, `,"lora":[]`); got != base {
		t.Errorf("empty list: %q, want the base's %q", got, base)
	}
	if got := ask(hs.URL, `,"lora":[{"id":0,"scale":1}]`); got != adapted {
		t.Errorf("scale 1: %q, want %q", got, adapted)
	}
	if got := ask(hs.URL, ""); got != adapted {
		t.Errorf("after other scales, no lora: %q, want %q", got, adapted)
	}
	for _, bad := range []struct{ lora, want string }{
		{`[{"id":1,"scale":1}]`, "lora[0].id: 1 is not a loaded adapter"},
		{`[{"id":0}]`, "lora[0].scale: missing"},
		{`[{"scale":1}]`, "lora[0].id: missing"},
		{`[{"id":0,"scale":1},{"id":0,"scale":2}]`, "lora[1].id: adapter 0 is listed twice"},
		{`[{"id":0,"scale":1e300}]`, "lora[0].scale"},
	} {
		code, _, b := post(t, hs.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"lora":`+bad.lora+`}`)
		if code != 400 || !strings.Contains(string(b), bad.want) {
			t.Errorf("lora %s: status %d %s; want 400 naming %q", bad.lora, code, b, bad.want)
		}
	}
}
