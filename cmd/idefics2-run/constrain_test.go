package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// pictureSchema is the JSON Schema of a one-shape description of a demo picture.
const pictureSchema = `{"type":"object","properties":{"shape":{"enum":["circle","square","triangle","star","cross"]},"colour":{"enum":["red","green","blue","yellow","purple","orange","white","black"]}},"required":["shape","colour"],"additionalProperties":false}`

// shapeGrammar is a GBNF grammar for answers such as "A red circle."
const shapeGrammar = `root ::= "A " colour " " shape "."
colour ::= "red" | "green" | "blue" | "yellow" | "purple" | "orange" | "white" | "black"
shape ::= "circle" | "square" | "triangle" | "star" | "cross"
`

func schemaValidator(t *testing.T, schema string) func(text string) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("s.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("s.json")
	if err != nil {
		t.Fatal(err)
	}
	return func(text string) error {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
		if err != nil {
			return fmt.Errorf("%q is not JSON: %w", text, err)
		}
		return s.Validate(v)
	}
}

var shapeAnswer = func(s string) bool {
	var colour, shape string
	n, _ := fmt.Sscanf(strings.TrimSuffix(s, "."), "A %s %s", &colour, &shape)
	return n == 2 && strings.HasSuffix(s, ".") && strings.Contains(shapeGrammar, `"`+colour+`"`) && strings.Contains(shapeGrammar, `"`+shape+`"`)
}

// TestConstrainedCLI: run and batch follow --json-schema, --grammar and the per-line response_format/grammar.
func TestConstrainedCLI(t *testing.T) {
	valid := schemaValidator(t, pictureSchema)
	img := demoPNG("demo_00.png")
	dir := t.TempDir()
	schemaFile := filepath.Join(dir, "picture.schema.json")
	grammarFile := filepath.Join(dir, "shape.gbnf")
	if err := os.WriteFile(schemaFile, []byte(pictureSchema), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(grammarFile, []byte(shapeGrammar), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(modelArgs(t, "demo"), "--image", img, "-p", "Describe the picture as JSON", "-n", "48")
	for _, schema := range []string{pictureSchema, schemaFile} {
		code, out, errOut := runCmd(t, "", append(args, "--json-schema", schema)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if err := valid(strings.TrimSuffix(out, "\n")); err != nil {
			t.Errorf("--json-schema %.20s…: %v", schema, err)
		}
	}
	code, out, errOut := runCmd(t, "", append(args, "--grammar", grammarFile)...)
	if code != 0 || !shapeAnswer(strings.TrimSuffix(out, "\n")) {
		t.Errorf("--grammar: exit %d, answer %q (%s)", code, out, errOut)
	}

	// chat: the constraint holds for every answer.
	script := "/image " + img + "\nDescribe the picture as JSON\nAnd again?\n/quit\n"
	code, out, errOut = runCmd(t, script, append([]string{"chat"}, append(modelArgs(t, "demo"), "-n", "48", "--json-schema", schemaFile)...)...)
	answers := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(answers) != 2 {
		t.Fatalf("chat: exit %d, answers %q: %s", code, answers, errOut)
	}
	for i, a := range answers {
		if err := valid(a); err != nil {
			t.Errorf("chat answer %d: %v", i, err)
		}
	}

	// batch: one line per kind of constraint.
	line := func(extra string) string {
		return fmt.Sprintf(`{"prompt":"Describe the picture as JSON","images":[%q],"max_tokens":48%s}`, img, extra)
	}
	rf, _ := json.Marshal(map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "picture", "schema": json.RawMessage(pictureSchema), "strict": true}})
	g, _ := json.Marshal(shapeGrammar)
	in := line(`,"response_format":`+string(rf)) + "\n" + line(`,"grammar":`+string(g)) + "\n" + line(`,"response_format":{"type":"json_object"}`) + "\n"
	code, out, errOut = runCmd(t, in, append([]string{"batch"}, modelArgs(t, "demo")...)...)
	if code != 0 {
		t.Fatalf("batch: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("batch: %d lines, want 3:\n%s", len(lines), out)
	}
	var texts []string
	for _, l := range lines {
		var r struct {
			Text  *string   `json:"text"`
			Error *apiError `json:"error"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Text == nil {
			t.Fatalf("batch line %s: %v", l, err)
		}
		texts = append(texts, *r.Text)
	}
	if err := valid(texts[0]); err != nil {
		t.Errorf("batch json_schema: %v", err)
	}
	if !shapeAnswer(texts[1]) {
		t.Errorf("batch grammar: %q", texts[1])
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(texts[2]), &obj); err != nil {
		t.Errorf("batch json_object: %q: %v", texts[2], err)
	}
}

func TestConstrainedCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	badGrammar := filepath.Join(dir, "bad.gbnf")
	if err := os.WriteFile(badGrammar, []byte("root ::= \"a\" undefined-rule\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := append(modelArgs(t, "demo"), "-p", "hi", "-n", "4")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--json-schema", `{"type":"string","pattern":"a+"}`}, `keyword "pattern"`},
		{[]string{"--json-schema", `{"type":`}, "not valid JSON"},
		{[]string{"--json-schema", filepath.Join(dir, "missing.json")}, "--json-schema: open"},
		{[]string{"--grammar", badGrammar}, `--grammar ` + badGrammar + `: grammar: rule "root": line 1 col 14: rule "undefined-rule" is not defined`},
		{[]string{"--grammar", filepath.Join(dir, "none.gbnf")}, "--grammar: open"},
		{[]string{"--grammar", badGrammar, "--json-schema", "{}"}, "give one of them"},
	}
	for _, tc := range tests {
		code, _, errOut := runCmd(t, "", append(base, tc.args...)...)
		noPanic(t, errOut)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}

// TestConstrainedServer: response_format json_schema / json_object and grammar, streamed and not; unsupported
// fields and bad constraints are 400 naming the field.
func TestConstrainedServer(t *testing.T) {
	valid := schemaValidator(t, pictureSchema)
	_, url := startServer(t, "demo", func(c *serverConfig) { c.defaults.MaxTokens = 48 })
	chat := url + "/v1/chat/completions"
	img := demoPNG("demo_00.png")
	rf := `,"response_format":{"type":"json_schema","json_schema":{"name":"picture","strict":true,"schema":` + pictureSchema + `}}`
	for _, stream := range []bool{false, true} {
		body := chatBody(t, img, "Describe the picture as JSON", rf+fmt.Sprintf(`,"stream":%v`, stream))
		text := serverText(t, chat, body, stream)
		if err := valid(text); err != nil {
			t.Errorf("stream %v: %v", stream, err)
		}
	}
	text := serverText(t, chat, chatBody(t, img, "Describe the picture", `,"response_format":{"type":"json_object"},"stream":true`), true)
	var obj map[string]any
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		t.Errorf("json_object: %q: %v", text, err)
	}
	g, _ := json.Marshal(shapeGrammar)
	if text := serverText(t, chat, chatBody(t, img, "What shape is in the picture?", `,"grammar":`+string(g)), false); !shapeAnswer(text) {
		t.Errorf("grammar: %q", text)
	}

	bad := []struct{ extra, want string }{
		{`,"tools":[{"type":"function","function":{"name":"f"}}]`, "tools: not supported"},
		{`,"tool_choice":"auto"`, "tool_choice: not supported"},
		{`,"functions":[{"name":"f"}]`, "functions: not supported"},
		{`,"logit_bias":{"50":-100}`, "logit_bias: not supported"},
		{`,"top_logprobs":3`, "set logprobs to true"},
		{`,"response_format":{"type":"xml"}`, `response_format.type "xml"`},
		{`,"response_format":{"type":"json_schema"}`, "response_format.json_schema: missing"},
		{`,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"a"}}}`, `response_format.json_schema.schema: json schema #: keyword "pattern"`},
		{`,"response_format":{"type":"json_schema","json_schema":{"schema":{}}}`, "response_format.json_schema.name: missing"},
		{`,"grammar":"root ::= (\"a\""`, "grammar: grammar line 1 col"},
		{`,"grammar":"root ::= \"a\"","response_format":{"type":"json_object"}`, "give one of them"},
	}
	for _, b := range bad {
		status, _, resp := post(t, chat, chatBody(t, img, "hi", b.extra))
		var e struct {
			Error apiError `json:"error"`
		}
		_ = json.Unmarshal(resp, &e)
		if status != http.StatusBadRequest || !strings.Contains(e.Error.Message, b.want) {
			t.Errorf("%s: status %d, body %s; want 400 and %q", b.extra, status, resp, b.want)
		}
	}
	// Absent-equivalent values ask for nothing and are accepted.
	if status, _, resp := post(t, chat, chatBody(t, img, "hi", `,"tools":null,"logprobs":false,"max_tokens":2`)); status != 200 {
		t.Errorf("null tools: status %d: %s", status, resp)
	}
}

// serverText posts body and returns the answer's text (the concatenated chunks when streaming).
func serverText(t *testing.T, url, body string, stream bool) string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b.String())
	}
	if stream {
		text, finish, _ := sse(t, resp.Body)
		if finish != "stop" {
			t.Errorf("finish_reason %q, want stop", finish)
		}
		return text
	}
	var c chatResponse
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message == nil {
		t.Fatalf("response %+v", c)
	}
	return *c.Choices[0].Message.Content
}

// openAIScript asks the server through the official OpenAI Node client with response_format json_schema, not
// streamed and streamed, and prints both answers as a JSON array.
const openAIScript = `import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE_URL + "/v1", apiKey: "unused" });
const schema = JSON.parse(process.env.SCHEMA);
const messages = [{ role: "user", content: [
  { type: "image_url", image_url: { url: process.env.IMAGE } },
  { type: "text", text: "Describe the picture as JSON" } ] }];
const response_format = { type: "json_schema", json_schema: { name: "picture", schema, strict: true } };
const one = await client.chat.completions.create({ model: "demo", messages, response_format, max_tokens: 48 });
let streamed = "";
const stream = await client.chat.completions.create({ model: "demo", messages, response_format, max_tokens: 48, stream: true });
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
console.log(JSON.stringify([one.choices[0].message.content, streamed, one.choices[0].finish_reason]));
`

// TestOpenAINodeClient runs the official OpenAI Node client (npm "openai", installed into a temporary folder)
// against the server: both answers must parse and validate against the schema.
func TestOpenAINodeClient(t *testing.T) {
	npm, errNPM := exec.LookPath("npm")
	node, errNode := exec.LookPath("node")
	if errNPM != nil || errNode != nil {
		t.Skip("npm or node is not installed: the OpenAI Node client test needs both")
	}
	if testing.Short() {
		t.Skip("installs the openai npm package")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--silent", "openai@^4")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm install openai: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "client.mjs")
	if err := os.WriteFile(script, []byte(openAIScript), 0o644); err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, "demo", nil)
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE_URL="+url, "SCHEMA="+pictureSchema, "IMAGE="+dataURI(t, demoPNG("demo_01.png")))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client: %v\n%s", err, stderr.String())
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 3 {
		t.Fatalf("client output %q: %v", out, err)
	}
	valid := schemaValidator(t, pictureSchema)
	for i, text := range got[:2] {
		if err := valid(text); err != nil {
			t.Errorf("answer %d (%s): %v", i, []string{"plain", "streamed"}[i], err)
		}
	}
	if got[2] != "stop" {
		t.Errorf("finish_reason %q, want stop", got[2])
	}
	t.Logf("answers: %q", got)
}
