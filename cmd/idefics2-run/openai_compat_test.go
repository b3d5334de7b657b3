package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/idefics2-go/idefics2/gguf"
)

// TestOpenAIRanges: parameters outside OpenAI's ranges are refused as OpenAI refuses them, with message, type,
// param and code; values on the bounds are accepted.
func TestOpenAIRanges(t *testing.T) {
	_, url := startServer(t, "p1", nil)
	msgs := `"messages":[{"role":"user","content":"hi"}],"max_tokens":1`
	tests := []struct {
		name, fields string
		param, code  string // "" param: accepted
		msg          string
	}{
		{"temperature above 2", `"temperature":2.5`, "temperature", "decimal_above_max_value", "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."},
		{"temperature below 0", `"temperature":-0.1`, "temperature", "decimal_below_min_value", "Expected a value >= 0, but got -0.1 instead."},
		{"top_p above 1", `"top_p":1.01`, "top_p", "decimal_above_max_value", "Invalid 'top_p'"},
		{"top_p below 0", `"top_p":-1`, "top_p", "decimal_below_min_value", "Invalid 'top_p'"},
		{"presence_penalty above 2", `"presence_penalty":3`, "presence_penalty", "decimal_above_max_value", "<= 2, but got 3"},
		{"frequency_penalty below -2", `"frequency_penalty":-2.5`, "frequency_penalty", "decimal_below_min_value", ">= -2, but got -2.5"},
		{"n below 1", `"n":0`, "n", "integer_below_min_value", "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead."},
		{"bounds accepted", `"temperature":2,"top_p":1,"presence_penalty":-2,"frequency_penalty":2,"seed":1`, "", "", ""},
		{"zero accepted", `"temperature":0,"top_p":0`, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, b := post(t, url+"/v1/chat/completions", "{"+msgs+","+tc.fields+"}")
			if tc.param == "" {
				if code != 200 {
					t.Fatalf("status %d: %s", code, b)
				}
				return
			}
			var e struct {
				Error map[string]*string `json:"error"`
			}
			if code != 400 || json.Unmarshal(b, &e) != nil {
				t.Fatalf("status %d: %s; want 400 and an error object", code, b)
			}
			for _, k := range []string{"message", "type", "param", "code"} {
				if _, ok := e.Error[k]; !ok {
					t.Errorf("error object without %q: %s", k, b)
				}
			}
			got := func(k string) string {
				if v := e.Error[k]; v != nil {
					return *v
				}
				return "<null>"
			}
			if got("type") != "invalid_request_error" || got("param") != tc.param || got("code") != tc.code || !strings.Contains(got("message"), tc.msg) {
				t.Fatalf("error %s, want param %q code %q message containing %q", b, tc.param, tc.code, tc.msg)
			}
		})
	}
	// Every error object has param and code, null when they do not apply.
	code, _, b := post(t, url+"/v1/chat/completions", `{"messages":[]}`)
	if code != 400 || !bytes.Contains(b, []byte(`"param":null,"code":null`)) {
		t.Fatalf("status %d: %s; want param and code as null", code, b)
	}
}

// TestModelRoute: GET /v1/models/{id} answers the served model under its general.name and 404 model_not_found
// otherwise; the list names the same id.
func TestModelRoute(t *testing.T) {
	srv, url := startServer(t, "p1", nil)
	model, _ := pair(t, "p1")
	f, err := gguf.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	name, err := f.Metadata.String("general.name")
	f.Close()
	if err != nil || name == "" {
		t.Fatalf("p1 has no general.name: %v", err)
	}
	if srv.m.Name() != name {
		t.Fatalf("model id %q, want general.name %q", srv.m.Name(), name)
	}
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode, v
	}
	code, v := get("/v1/models/" + name)
	if code != 200 || v["id"] != name || v["object"] != "model" || v["owned_by"] == nil || v["created"] == nil {
		t.Fatalf("GET /v1/models/%s: %d %v", name, code, v)
	}
	_, list := get("/v1/models")
	if d, _ := list["data"].([]any); len(d) != 1 || d[0].(map[string]any)["id"] != name {
		t.Fatalf("GET /v1/models: %v", list)
	}
	code, v = get("/v1/models/gpt-4o")
	e, _ := v["error"].(map[string]any)
	if code != 404 || e["code"] != "model_not_found" || e["param"] != "model" || !strings.Contains(e["message"].(string), "'gpt-4o' does not exist") {
		t.Fatalf("unknown model: %d %v", code, v)
	}
	resp, err := http.Post(url+"/v1/models/"+name, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("POST /v1/models/%s: %d, want 405", name, resp.StatusCode)
	}
}

// chunks reads the data lines of an SSE response, up to [DONE].
func chunks(t *testing.T, resp *http.Response) []chatResponse {
	t.Helper()
	cs, _ := chunksRaw(t, resp)
	return cs
}

// chunksRaw is chunks with the data of each chunk as sent.
func chunksRaw(t *testing.T, resp *http.Response) ([]chatResponse, []string) {
	t.Helper()
	var out []chatResponse
	var raw []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return out, raw
		}
		var c chatResponse
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		out, raw = append(out, c), append(raw, data)
	}
	t.Fatal("no data: [DONE]")
	return nil, nil
}

// TestStreamUsage: a stream carries usage only with stream_options.include_usage, and then only in one extra last
// chunk with empty choices after the finish chunk, every other chunk having "usage": null, as OpenAI sends it.
func TestStreamUsage(t *testing.T) {
	_, url := startServer(t, "p1", nil)
	for _, tc := range []struct {
		name, extra string
		usage       bool
	}{
		{"without", ``, false},
		{"include_usage false", `,"stream_options":{"include_usage":false}`, false},
		{"include_usage", `,"stream_options":{"include_usage":true}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(url+"/v1/chat/completions", "application/json",
				strings.NewReader(`{"stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]`+tc.extra+`}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			cs, raw := chunksRaw(t, resp)
			for i, r := range raw[:len(raw)-1] {
				if has := strings.Contains(r, `"usage":null`); has != tc.usage {
					t.Fatalf("chunk %d %s: usage null %v, want %v", i, r, has, tc.usage)
				}
			}
			withUsage := 0
			for i, c := range cs {
				if c.Usage == nil {
					continue
				}
				withUsage++
				if i != len(cs)-1 || c.Choices == nil || len(c.Choices) != 0 || c.Usage.CompletionTokens != 4 {
					t.Fatalf("chunk %d of %d carries usage %+v with choices %+v", i, len(cs), c.Usage, c.Choices)
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tc.usage]; withUsage != want {
				t.Fatalf("%d chunks with usage, want %d", withUsage, want)
			}
			last := cs[len(cs)-1]
			if tc.usage {
				last = cs[len(cs)-2]
			}
			if len(last.Choices) != 1 || last.Choices[0].FinishReason == nil || *last.Choices[0].FinishReason != "length" {
				t.Fatalf("finish chunk %+v", last)
			}
		})
	}
}

// TestStreamTimeout: a streamed answer cut by the request timeout ends with a chunk whose finish_reason is
// "timeout", after the text generated so far.
func TestStreamTimeout(t *testing.T) {
	_, url := startServer(t, "p1", func(c *serverConfig) { c.timeout = 500 * time.Millisecond })
	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"stream":true,"max_tokens":3900,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me everything."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cs := chunks(t, resp)
	if len(cs) < 3 {
		t.Fatalf("%d chunks", len(cs))
	}
	fin := cs[len(cs)-2]
	if len(fin.Choices) != 1 || fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != finishTimeout {
		t.Fatalf("finish chunk %+v, want finish_reason %q", fin, finishTimeout)
	}
	if u := cs[len(cs)-1].Usage; u == nil || u.CompletionTokens == 0 || u.CompletionTokens >= 3900 {
		t.Fatalf("usage %+v", u)
	}
}

// TestRequestLog: one log line per request, as text or JSON, with the id the response carries (X-Request-Id and
// the completion's id), the status, the images, prompt and generated tokens, the time to first token and the total.
func TestRequestLog(t *testing.T) {
	img := demoPNG("demo_00.png")
	for _, format := range []string{logFormatJSON, logFormatText} {
		t.Run(format, func(t *testing.T) {
			var buf lockedBuffer
			lg, err := newRequestLogger(&buf, format)
			if err != nil {
				t.Fatal(err)
			}
			_, url := startServer(t, "demo", func(c *serverConfig) { c.log = lg })
			code, h, b := post(t, url+"/v1/chat/completions", chatBody(t, img, question, `,"max_tokens":3`))
			var r chatResponse
			if code != 200 || json.Unmarshal(b, &r) != nil {
				t.Fatalf("status %d: %s", code, b)
			}
			if h.Get("X-Request-Id") != r.ID {
				t.Fatalf("X-Request-Id %q, completion id %q", h.Get("X-Request-Id"), r.ID)
			}
			code, _, _ = post(t, url+"/v1/chat/completions", `{"temperature":9,"messages":[{"role":"user","content":"hi"}]}`)
			if code != 400 {
				t.Fatalf("status %d", code)
			}
			if resp, err := http.Get(url + "/health"); err == nil {
				resp.Body.Close()
			}
			// A line is written once its handler has returned, which may be just after the client read the answer.
			var lines []string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
				if len(lines) >= 3 || time.Now().After(deadline) {
					break
				}
			}
			if len(lines) != 3 {
				t.Fatalf("%d log lines, want 3:\n%s", len(lines), buf.String())
			}
			fields := make([]map[string]string, len(lines))
			for i, l := range lines {
				fields[i] = logFields(t, format, l)
			}
			want := map[string]string{"msg": "request", "id": r.ID, "method": "POST", "path": "/v1/chat/completions", "status": "200",
				"images": "1", "prompt_tokens": itoa(r.Usage.PromptTokens), "completion_tokens": "3", "finish_reason": "length"}
			for k, v := range want {
				if fields[0][k] != v {
					t.Errorf("line 1: %s=%q, want %q (%s)", k, fields[0][k], v, lines[0])
				}
			}
			for _, k := range []string{"ttft_ms", "total_ms"} {
				if fields[0][k] == "" || fields[0][k] == "0" {
					t.Errorf("line 1: no %s (%s)", k, lines[0])
				}
			}
			if fields[1]["status"] != "400" || fields[1]["completion_tokens"] != "" || !strings.HasPrefix(fields[1]["id"], "chatcmpl-") {
				t.Errorf("line 2: %s", lines[1])
			}
			if fields[2]["path"] != "/health" || fields[2]["status"] != "200" || fields[2]["images"] != "" || !strings.HasPrefix(fields[2]["id"], "req-") {
				t.Errorf("line 3: %s", lines[2])
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

var textField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logFields reads one log line (slog's JSON or text form) into strings.
func logFields(t *testing.T, format, line string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if format == logFormatJSON {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		for k, x := range v {
			b, _ := json.Marshal(x)
			out[k] = strings.Trim(string(b), `"`)
		}
		return out
	}
	for _, m := range textField.FindAllStringSubmatch(line, -1) {
		out[m[1]] = strings.Trim(m[2], `"`)
	}
	return out
}

func TestExposedHostWarning(t *testing.T) {
	for _, tc := range []struct {
		host, key string
		warn      bool
	}{
		{"127.0.0.1", "", false}, {"localhost", "", false}, {"::1", "", false}, {"[::1]", "", false}, {"127.0.0.2", "", false},
		{"0.0.0.0", "", true}, {"", "", true}, {"::", "", true}, {"192.168.1.5", "", true}, {"example.org", "", true},
		{"0.0.0.0", "secret", false},
	} {
		w := exposedHostWarning(tc.host, tc.key, 8080)
		if (w != "") != tc.warn || (tc.warn && !strings.Contains(w, "--api-key")) {
			t.Errorf("host %q key %q: warning %q, want %v", tc.host, tc.key, w, tc.warn)
		}
	}
}

// TestServeDefaultMaxTokens: serve's help shows the default max tokens that applies (that of --token-limit).
func TestServeDefaultMaxTokens(t *testing.T) {
	code, out, _ := runCmd(t, "", "serve", "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	want := map[string]string{"--max-tokens": "", "--token-limit": ""}
	for _, l := range strings.Split(out, "\n") {
		for k := range want {
			if strings.HasPrefix(strings.TrimSpace(l), k) {
				want[k] = l
			}
		}
	}
	for k, l := range want {
		if !strings.Contains(l, "(default "+itoa(serveTokenLimit)+")") {
			t.Errorf("%s: %q, want default %d", k, l, serveTokenLimit)
		}
	}
	code, _, errOut := runCmd(t, "", "serve", "-m", "x.gguf", "--log-format", "xml")
	if code != exitUsage || !strings.Contains(errOut, "--log-format") {
		t.Errorf("--log-format xml: exit %d, %q", code, errOut)
	}
}
