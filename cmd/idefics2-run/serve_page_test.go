package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/runner"
)

// TestPage checks the chat page: served at GET / without an API key, self-contained (no address of another host in
// it, a Content-Security-Policy that allows only this origin), while the API it calls still needs the key.
func TestPage(t *testing.T) {
	_, url := startServer(t, "demo", func(c *serverConfig) { c.apiKey = "sesame" })
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q: want only this origin", csp)
	}
	for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
		if bytes.Contains(body, []byte(bad)) {
			t.Errorf("the page contains %q: it must load nothing from elsewhere", bad)
		}
	}
	for _, want := range []string{`id="file"`, `id="stop"`, `id="new"`, `id="temperature"`, `id="maxTokens"`, `id="splitting"`,
		`id="schema"`, "/v1/images/preview", "/v1/chat/completions", "Authorization", "TTFT", "tok/s"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("the page lacks %s", want)
		}
	}
	for _, tc := range []struct {
		path, key string
		want      int
	}{
		{"/v1/images/settings", "", 401},
		{"/v1/images/settings", "wrong", 401},
		{"/v1/images/settings", "sesame", 200},
		{"/nowhere", "", 404},
	} {
		req, _ := http.NewRequest("GET", url+tc.path, nil)
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with key %q: %d, want %d", tc.path, tc.key, resp.StatusCode, tc.want)
		}
	}
}

// TestImageSettingsEndpoint checks what GET /v1/images/settings reports for the demo model.
func TestImageSettingsEndpoint(t *testing.T) {
	_, url := startServer(t, "demo", nil)
	resp, err := http.Get(url + "/v1/images/settings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"vision": true, "image_splitting": false, "longest_edge": 112.0, "shortest_edge": 42.0,
		"patch_size": 14.0, "image_size": 112.0, "max_tokens": 24.0, "token_limit": 4000.0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

// TestPreviewEndpoint checks POST /v1/images/preview: the sub-images, their sizes and drawings, and bad requests
// with the field they name.
func TestPreviewEndpoint(t *testing.T) {
	srv, url := startServer(t, "demo", nil)
	img := dataURI(t, demoPNG("demo_00.png"))
	seq := srv.m.ImageSeqLen()
	for _, tc := range []struct {
		name              string
		extra             string
		subs, padW, padH  int
		first             string
		split             bool
		longest, shortest int
	}{
		// demo_00.png is 96×96; the demo's settings (112/42) keep it as is.
		{"model settings", ``, 1, 96, 96, "image", false, 112, 42},
		{"split", `,"image_splitting":true`, 5, 96, 96, "crop 1 (top-left)", true, 112, 42},
		{"smaller", `,"longest_edge":28,"shortest_edge":14`, 1, 28, 28, "image", false, 28, 14},
		{"split and smaller", `,"image_splitting":true,"longest_edge":42`, 5, 42, 42, "crop 1 (top-left)", true, 42, 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := post(t, url+"/v1/images/preview", fmt.Sprintf(`{"images":[%q]%s}`, img, tc.extra))
			if code != 200 {
				t.Fatalf("%d: %s", code, body)
			}
			var r previewResponse
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			if r.PatchSize != 14 || len(r.Images) != 1 || len(r.Images[0].SubImages) != tc.subs || r.ImageTokens != tc.subs*seq {
				t.Fatalf("patch %d, %d images, %d tokens: %+v", r.PatchSize, len(r.Images), r.ImageTokens, r)
			}
			if s := r.Settings; s.ImageSplitting != tc.split || s.LongestEdge != tc.longest || s.ShortestEdge != tc.shortest {
				t.Errorf("settings %+v", *s)
			}
			if r.Images[0].Width != 96 || r.Images[0].Height != 96 {
				t.Errorf("original size %dx%d, want 96x96", r.Images[0].Width, r.Images[0].Height)
			}
			si := r.Images[0].SubImages
			if si[0].Label != tc.first {
				t.Errorf("first label %q, want %q", si[0].Label, tc.first)
			}
			for _, s := range si {
				if s.PaddedWidth != tc.padW || s.PaddedHeight != tc.padH || s.GridCols != tc.padW/14 || s.GridRows != tc.padH/14 {
					t.Errorf("%s: padded %dx%d grid %dx%d, want %dx%d", s.Label, s.PaddedWidth, s.PaddedHeight, s.GridCols, s.GridRows, tc.padW, tc.padH)
				}
				b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.PNG, "data:image/png;base64,"))
				if err != nil {
					t.Fatal(err)
				}
				im, err := png.Decode(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("%s: %v", s.Label, err)
				}
				if im.Bounds().Dx() != tc.padW || im.Bounds().Dy() != tc.padH {
					t.Errorf("%s: drawing %v, want %dx%d", s.Label, im.Bounds(), tc.padW, tc.padH)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"no images", `{"images":[]}`, 400, "images: at least one image"},
		{"unknown field", `{"images":[%q],"longest":3}`, 400, "unknown field"},
		{"zero edge", `{"images":[%q],"longest_edge":0}`, 400, "longest_edge 0"},
		{"negative edge", `{"images":[%q],"shortest_edge":-3}`, 400, "shortest_edge -3"},
		{"edge above the tower", `{"images":[%q],"longest_edge":113}`, 400, "larger than the vision tower's image size 112"},
		{"edge below a patch", `{"images":[%q],"longest_edge":13,"shortest_edge":13}`, 400, "smaller than one 14-pixel patch"},
		{"bad image", `{"images":["data:image/png;base64,AAAA"]}`, 400, "unknown image format"},
		{"remote image", `{"images":["https://example.com/a.png"]}`, 400, "images[0]"},
		{"too many", `{"images":["a","b","c","d","e"]}`, 400, "more than 4 images"},
		{"not JSON", `{`, 400, "not a valid preview request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if strings.Contains(body, "%q") {
				body = fmt.Sprintf(body, img)
			}
			code, _, b := post(t, url+"/v1/images/preview", body)
			if code != tc.status || !strings.Contains(string(b), tc.want) {
				t.Errorf("%d %s, want %d with %q", code, b, tc.status, tc.want)
			}
		})
	}
	resp, err := http.Get(url + "/v1/images/preview")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/images/preview: %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestChatImageSettings checks the request extension fields: splitting on adds four crops' tokens, smaller edges
// change nothing in the token count, and sizes the model cannot take are refused naming the setting.
func TestChatImageSettings(t *testing.T) {
	srv, url := startServer(t, "demo", nil)
	seq := srv.m.ImageSeqLen()
	tokens := func(extra string) int {
		t.Helper()
		code, _, body := post(t, url+"/v1/chat/completions", chatBody(t, demoPNG("demo_00.png"), question, `,"max_tokens":1`+extra))
		if code != 200 {
			t.Fatalf("%s: %d %s", extra, code, body)
		}
		var r chatResponse
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		return r.Usage.PromptTokens
	}
	plain := tokens("")
	// Each of the four crops adds its <image> tokens and one <fake_token_around_image> after them.
	if got := tokens(`,"image_splitting":true`); got != plain+4*(seq+1) {
		t.Errorf("image_splitting true: %d prompt tokens, want %d + 4×(%d+1)", got, plain, seq)
	}
	if got := tokens(`,"longest_edge":56,"shortest_edge":28`); got != plain {
		t.Errorf("smaller edges: %d prompt tokens, want %d", got, plain)
	}
	for _, tc := range []struct{ extra, want string }{
		{`,"longest_edge":500`, "larger than the vision tower's image size 112"},
		{`,"longest_edge":-1`, "longest_edge -1"},
		{`,"image_splitting":"yes"`, "image_splitting"},
		{`,"no_split":true,"image_splitting":true`, "no_split and image_splitting"},
	} {
		code, _, body := post(t, url+"/v1/chat/completions", chatBody(t, demoPNG("demo_00.png"), question, tc.extra))
		if code != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.extra, code, body, tc.want)
		}
	}
}

// TestCORS checks --cors-origins: listed origins get the headers and preflight answers, others and servers without
// the option get none.
func TestCORS(t *testing.T) {
	for _, tc := range []struct {
		name, list, origin string
		allowed            bool
	}{
		{"none by default", "", "https://app.example", false},
		{"listed", "https://app.example, http://localhost:3000", "http://localhost:3000", true},
		{"not listed", "https://app.example", "https://evil.example", false},
		{"any", "*", "https://evil.example", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cors, err := parseCORSOrigins(tc.list)
			if err != nil {
				t.Fatal(err)
			}
			_, url := startServer(t, "demo", func(c *serverConfig) { c.cors = cors })
			req, _ := http.NewRequest(http.MethodOptions, url+"/v1/chat/completions", nil)
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("Access-Control-Allow-Origin")
			if tc.allowed != (got == tc.origin) || (tc.allowed && resp.StatusCode != 204) {
				t.Errorf("preflight: %d, Allow-Origin %q; allowed %v", resp.StatusCode, got, tc.allowed)
			}
			if tc.allowed && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Errorf("preflight: Allow-Headers %q lacks Authorization", resp.Header.Get("Access-Control-Allow-Headers"))
			}
			req, _ = http.NewRequest(http.MethodGet, url+"/v1/models", nil)
			req.Header.Set("Origin", tc.origin)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Access-Control-Allow-Origin"); tc.allowed != (got == tc.origin) || resp.StatusCode != 200 {
				t.Errorf("GET: %d, Allow-Origin %q; allowed %v", resp.StatusCode, got, tc.allowed)
			}
		})
	}
	for _, bad := range []string{"app.example", "https://app.example/path", "ftp://x"} {
		if _, err := parseCORSOrigins(bad); err == nil || !strings.Contains(err.Error(), "--cors-origins") {
			t.Errorf("parseCORSOrigins(%q): %v, want an error naming --cors-origins", bad, err)
		}
	}
}

// FuzzCORSOrigins: any --cors-origins value gives an error or a list of http(s) origins without paths or "*".
func FuzzCORSOrigins(f *testing.F) {
	for _, s := range []string{"", "*", "https://a.example", "http://localhost:3000, https://b.example", "a,,b", "https://a/b", " , "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCORSOrigins(s)
		if err != nil {
			return
		}
		for _, o := range c {
			if o != "*" && !(strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://")) {
				t.Fatalf("%q: origin %q", s, o)
			}
		}
	})
}

// FuzzPreviewRequest: any body to POST /v1/images/preview gets 200 with one or five drawings per image, or a 4xx
// error object; never a panic or a 500.
func FuzzPreviewRequest(f *testing.F) {
	data, err := os.ReadFile(demoPNG("demo_00.png"))
	if err != nil {
		f.Fatal(err)
	}
	png := "data:image/png;base64," + base64.StdEncoding.EncodeToString(data)
	for _, s := range []string{
		`{"images":["` + png + `"]}`,
		`{"images":["` + png + `"],"image_splitting":true,"longest_edge":28,"shortest_edge":14}`,
		`{"images":["` + png + `","` + png + `"],"longest_edge":14}`,
		`{"images":["data:,abc"]}`,
		`{"images":[],"longest_edge":-1}`,
		`{"images":["/etc/passwd"],"image_splitting":"on"}`,
		`{"images":null}`,
		`[1,2]`,
	} {
		f.Add([]byte(s))
	}
	pol, _ := newImagePolicy("", 3)
	model, mm := pair(f, "demo")
	m, err := runner.Load(context.Background(), runner.Options{ModelPath: model, MMProjPath: mm, Device: "cpu", Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := newServer(m, serverConfig{maxBody: 1 << 20, queue: 1, policy: pol, ctxSize: 512})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		srv.close()
		m.Close()
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequest(http.MethodPost, "/v1/images/preview", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			var r previewResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatalf("200 with a body that does not decode: %v", err)
			}
			for _, im := range r.Images {
				if n := len(im.SubImages); n != 1 && n != 5 {
					t.Fatalf("%d sub-images", n)
				}
			}
		case 400, 413:
			if !bytes.Contains(rec.Body.Bytes(), []byte(`"error"`)) {
				t.Fatalf("%d without an error object: %s", rec.Code, rec.Body)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
