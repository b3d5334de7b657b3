// Package compare measures third-party Go Jinja engines against jinja2 and this repository's
// engine (the measurement behind internal/jinja/doc.go). It is a module of its own so that the
// engines it compares never enter the main module's build:
//
//	cd internal/jinja/compare && go test -count=1 -v .
//
// It renders ../testdata/cases.json and ../testdata/random.json (jinja2's outputs) and every
// chat template of the fixtures (with realistic conversations, against internal/jinja's output,
// itself checked against transformers by processor's tests) through each engine, configured as close to transformers'
// environment as its API allows, and counts identical renderings, different outputs, error
// mismatches, panics and hangs. $JINJA_COMPARE_REPORT names a file for the per-case details;
// $JINJA_COMPARE_FIXTURES adds a fixture folder to scan (besides the repository's testdata).
package compare

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	ardan "github.com/ardanlabs/jinja"
	gonja "github.com/nikolalohinski/gonja/v2"
	gconfig "github.com/nikolalohinski/gonja/v2/config"
	gexec "github.com/nikolalohinski/gonja/v2/exec"
	gloaders "github.com/nikolalohinski/gonja/v2/loaders"

	"github.com/idefics2-go/idefics2/internal/jinja"
	"github.com/idefics2-go/idefics2/internal/jinja/jinjacases"
)

// ours renders with this repository's engine (the reference for the fixture templates: it
// reproduces transformers' output on the fixtures' recorded conversations).
func oursRender(src string, vars map[string]any) (string, error) {
	t, err := jinja.Parse(src, jinja.DefaultOptions())
	if err != nil {
		return "", err
	}
	data := make(map[string]any, len(vars))
	for k, v := range vars {
		data[k] = oursValue(v)
	}
	return t.Render(data)
}

// oursValue builds *jinja.Dict for JSON objects, keeping their key order.
var oursValue = jinjacases.Builder{Object: func(keys []string, values []any) any {
	d := jinja.NewDict()
	for i, k := range keys {
		if err := d.Set(k, values[i]); err != nil {
			panic(err)
		}
	}
	return d
}}.Build

// cmpEngine renders a template source with variables given as jinjacases.Vars returns them.
type cmpEngine struct {
	name, module string
	render       func(src string, vars map[string]any) (string, error)
}

func cmpEngines() []cmpEngine {
	gonja.SetLoggerOutput(io.Discard)
	return []cmpEngine{
		{name: "ours", module: "github.com/idefics2-go/idefics2", render: oursRender},
		{name: "ardanlabs/jinja", module: "github.com/ardanlabs/jinja", render: cmpArdanRender},
		{name: "gonja/v2", module: "github.com/nikolalohinski/gonja/v2", render: cmpGonjaRender},
	}
}

// ardanlabs/jinja has transformers' settings built in (trim_blocks, lstrip_blocks, loop
// controls, tojson, raise_exception, strftime_now) and no options.
func cmpArdanRender(src string, vars map[string]any) (string, error) {
	t, err := ardan.Compile(src)
	if err != nil {
		return "", err
	}
	data := make(map[string]ardan.Value, len(vars))
	for k, v := range vars {
		data[k] = cmpArdanValue(v)
	}
	return t.RenderValues(data)
}

var cmpArdanBuilder = jinjacases.Builder{
	Object: func(keys []string, values []any) any {
		d := ardan.NewDict()
		for i, k := range keys {
			d.AsDict().Set(k, values[i].(ardan.Value))
		}
		return d
	},
	List: func(values []any) any {
		items := make([]ardan.Value, len(values))
		for i, e := range values {
			items[i] = e.(ardan.Value)
		}
		return ardan.NewList(items)
	},
	Scalar: func(v any) any { return ardan.FromGoValue(v) },
}

func cmpArdanValue(v any) ardan.Value { return cmpArdanBuilder.Build(v).(ardan.Value) }

// gonja/v2 gets trim_blocks, lstrip_blocks and a raise_exception global; its break/continue are
// built in; tojson is its own (jinja2's, not transformers').
func cmpGonjaRender(src string, vars map[string]any) (string, error) {
	cfg := gconfig.New()
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	loader, err := gloaders.NewMemoryLoader(map[string]string{"/chat": src})
	if err != nil {
		return "", err
	}
	env := *gonja.DefaultEnvironment
	env.Context = gonja.DefaultContext.Inherit().Update(gexec.NewContext(map[string]any{
		"raise_exception": func(msg string) (string, error) { return "", fmt.Errorf("raise_exception: %s", msg) },
		"strftime_now":    func(f string) string { return time.Now().Format(f) },
	}))
	t, err := gexec.NewTemplate("/chat", cfg, loader, &env)
	if err != nil {
		return "", err
	}
	data := make(map[string]any, len(vars))
	for k, v := range vars {
		data[k] = cmpGonjaValue(v)
	}
	return t.ExecuteToString(gexec.NewContext(data))
}

// cmpGonjaValue builds gonja dicts of pairs and passes integers as int.
var cmpGonjaValue = jinjacases.Builder{
	Object: func(keys []string, values []any) any {
		d := gexec.NewDict()
		for i, k := range keys {
			d.Pairs = append(d.Pairs, &gexec.Pair{Key: gexec.AsValue(k), Value: gexec.AsValue(values[i])})
		}
		return d
	},
	Scalar: func(v any) any {
		if i, ok := v.(int64); ok {
			return int(i)
		}
		return v
	},
}.Build

// cmpOutcome classifies one rendering against the reference.
type cmpOutcome int

const (
	cmpSame     cmpOutcome = iota // same output, or both failed
	cmpDiff                       // both rendered, outputs differ
	cmpLibError                   // the reference rendered, the engine failed
	cmpLibNoErr                   // the reference failed, the engine rendered
	cmpPanic                      // the engine panicked (recovered)
	cmpHang                       // no answer within cmpTimeout
	cmpOutcomes
)

var cmpOutcomeNames = [cmpOutcomes]string{"identical", "different output", "error, reference rendered", "rendered, reference raised", "panic", "hang"}

const cmpTimeout = 5 * time.Second

type cmpResult struct {
	out      string
	err      error
	panicked any
	hung     bool
}

func cmpRun(e cmpEngine, src string, vars map[string]any) cmpResult {
	ch := make(chan cmpResult, 1)
	go func() {
		var r cmpResult
		defer func() {
			if p := recover(); p != nil {
				r.panicked = p
			}
			ch <- r
		}()
		r.out, r.err = e.render(src, vars)
	}()
	select {
	case r := <-ch:
		return r
	case <-time.After(cmpTimeout):
		return cmpResult{hung: true}
	}
}

func cmpClassify(r cmpResult, want *string) cmpOutcome {
	switch {
	case r.hung:
		return cmpHang
	case r.panicked != nil:
		return cmpPanic
	case want == nil && r.err != nil:
		return cmpSame
	case want == nil:
		return cmpLibNoErr
	case r.err != nil:
		return cmpLibError
	case r.out != *want:
		return cmpDiff
	}
	return cmpSame
}

// cmpItem is one rendering to compare: a template, its variables and the reference output (nil
// where the reference raised).
type cmpItem struct {
	set, name, src string
	vars           map[string]any
	want           *string
	refErr         string
}

// cmpFeatures tags templates by the Jinja features they use, to see where failures concentrate.
var cmpFeatures = []struct {
	name string
	re   *regexp.Regexp
}{
	{"whitespace control (-/+)", regexp.MustCompile(`\{%[-+]|[-+]%\}|\{\{-|-\}\}`)},
	{"loop.*", regexp.MustCompile(`\bloop\.`)},
	{"macro", regexp.MustCompile(`\{%-?\s*macro\b`)},
	{"namespace()", regexp.MustCompile(`namespace\(`)},
	{"raise_exception", regexp.MustCompile(`raise_exception`)},
	{"tojson", regexp.MustCompile(`tojson`)},
	{"slicing", regexp.MustCompile(`\[[^\]\[]*:[^\]\[]*\]`)},
	{"is test", regexp.MustCompile(`\bis\s+(not\s+)?[a-z]`)},
	{"string method .x()", regexp.MustCompile(`\.(capitalize|title|upper|lower|strip|lstrip|rstrip|split|startswith|endswith|replace|format|join|find|count)\(`)},
	{"filter", regexp.MustCompile(`\|\s*[a-z]`)},
	{"float literal/arith", regexp.MustCompile(`\d\.\d|/|\*\*|round`)},
	{"% operator/format", regexp.MustCompile(`%\s*[(\w'"]`)},
	{"set", regexp.MustCompile(`\{%-?\s*set\b`)},
	{"break/continue", regexp.MustCompile(`\b(break|continue)\b`)},
	{"for ... else", regexp.MustCompile(`\{%-?\s*else`)},
}

func cmpLoad(t *testing.T) map[string][]cmpItem {
	sets := map[string][]cmpItem{}
	for _, f := range []string{"cases.json", "random.json"} {
		cases, err := jinjacases.Load(filepath.Join("..", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			vars, err := jinjacases.Vars(c.Vars)
			if err != nil {
				t.Fatalf("%s %s: %v", f, c.Name, err)
			}
			sets[f] = append(sets[f], cmpItem{set: f, name: c.Name, src: c.Template, vars: vars, want: c.Want, refErr: c.PythonError})
		}
	}
	sets["fixtures"] = cmpFixtureItems(t)
	return sets
}

// cmpFixtureTemplates finds every chat template of the fixtures: chat_template fields of JSON
// files under the repository's testdata (and $JINJA_COMPARE_FIXTURES), tokenizer.chat_template of
// GGUF files there (none have one today), and runner's idefics2ChatTemplate constant.
func cmpFixtureTemplates(t *testing.T) map[string][]string {
	byTemplate := map[string][]string{}
	roots := []string{filepath.Join("..", "..", "..", "testdata")}
	if p := os.Getenv("JINJA_COMPARE_FIXTURES"); p != "" {
		roots = append(roots, filepath.SplitList(p)...)
	}
	var walkJSON func(v any, where string)
	walkJSON = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if s, ok := e.(string); ok && (k == "chat_template" || k == "tokenizer.chat_template") {
					byTemplate[s] = append(byTemplate[s], where)
					continue
				}
				if l, ok := e.([]any); ok && k == "chat_template" { // [{"name": …, "template": …}]
					for _, n := range l {
						if m, ok := n.(map[string]any); ok {
							if s, ok := m["template"].(string); ok {
								byTemplate[s] = append(byTemplate[s], where)
							}
						}
					}
					continue
				}
				walkJSON(e, where)
			}
		case []any:
			for _, e := range v {
				walkJSON(e, where)
			}
		}
	}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			switch {
			case strings.HasSuffix(path, ".json"), strings.HasSuffix(path, ".jsonl"):
				raw, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(raw)))
				for {
					var v any
					if dec.Decode(&v) != nil {
						break
					}
					walkJSON(v, path)
				}
			case strings.HasSuffix(path, ".gguf"):
				raw, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if strings.Contains(string(raw), "tokenizer.chat_template") {
					t.Errorf("%s has tokenizer.chat_template: read it with the GGUF reader and add it here", path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join("..", "..", "..", "runner", "model.go")
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "idefics2ChatTemplate" {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					byTemplate[s] = append(byTemplate[s], src+": idefics2ChatTemplate")
				}
			}
		}
		return true
	})
	if len(byTemplate) == 0 {
		t.Fatal("no fixture chat template found")
	}
	return byTemplate
}

// cmpConversations are realistic chats in transformers' message format (the processor's
// representation: content is a list of text and image parts).
func cmpConversations() map[string][]any {
	msg := func(role string, parts ...string) any {
		content := []any{}
		for _, p := range parts {
			part := &jinjacases.Map{}
			if p == "<image>" {
				part.Set("type", "image")
			} else {
				part.Set("type", "text")
				part.Set("text", p)
			}
			content = append(content, part)
		}
		d := &jinjacases.Map{}
		d.Set("role", role)
		d.Set("content", content)
		return d
	}
	return map[string][]any{
		"image then text":     {msg("user", "<image>", "What is in this image?")},
		"text then image":     {msg("user", "What is in this image?", "<image>")},
		"text only":           {msg("user", "Hello!")},
		"two images":          {msg("user", "<image>", "<image>", "Compare these two pictures.")},
		"interleaved":         {msg("user", "Look at", "<image>", "and then at", "<image>", "— which is larger?")},
		"system user":         {msg("system", "You are a helpful assistant."), msg("user", "<image>", "Describe it.")},
		"multi turn":          {msg("user", "<image>", "What is this?"), msg("assistant", "A cat."), msg("user", "What colour is it?")},
		"multi turn images":   {msg("user", "<image>", "First."), msg("assistant", "Noted."), msg("user", "<image>", "And this one?"), msg("assistant", "A dog.")},
		"unicode and newline": {msg("user", "Ünïcödé — 日本語\nsecond line\ttab"), msg("assistant", "  spaced  ")},
		"jinja-like text":     {msg("user", "{{ not a tag }} {% neither %} <end_of_utterance>")},
		"empty text":          {msg("user", "")},
		"empty content":       {msg("user")}, // content[0] is undefined: jinja2 raises
		"no messages":         {},
	}
}

func cmpFixtureItems(t *testing.T) []cmpItem {
	vars := map[string]any{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
		"additional_special_tokens": []any{"<fake_token_around_image>", "<image>", "<end_of_utterance>"},
		"tools":                     nil, "documents": nil}
	var items []cmpItem
	tmpls := cmpFixtureTemplates(t)
	srcs := make([]string, 0, len(tmpls))
	for s := range tmpls {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	convs := cmpConversations()
	names := make([]string, 0, len(convs))
	for n := range convs {
		names = append(names, n)
	}
	sort.Strings(names)
	for ti, src := range srcs {
		t.Logf("fixture template %d (%d bytes) found in %d places, e.g. %s", ti, len(src), len(tmpls[src]), tmpls[src][0])
		for _, n := range names {
			for _, agp := range []bool{false, true} {
				v := map[string]any{"messages": convs[n], "add_generation_prompt": agp}
				for k, e := range vars {
					v[k] = e
				}
				it := cmpItem{set: "fixtures", name: fmt.Sprintf("template%d/%s/add_generation_prompt=%v", ti, n, agp), src: src, vars: v}
				if out, err := oursRender(src, v); err == nil {
					it.want = &out
				} else {
					it.refErr = err.Error()
				}
				items = append(items, it)
			}
		}
	}
	return items
}

// cmpVersion reads module's version from this module's go.mod.
func cmpVersion(module string) string {
	if module == "github.com/idefics2-go/idefics2" {
		return "(this repository)"
	}
	raw, err := os.ReadFile("go.mod")
	if err != nil {
		return "unknown"
	}
	if m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+(\S+)`).FindSubmatch(raw); m != nil {
		return string(m[1])
	}
	return "unknown"
}

func TestCompareEngines(t *testing.T) {
	sets := cmpLoad(t)
	setNames := []string{"cases.json", "random.json", "fixtures"}
	var report strings.Builder
	for _, e := range cmpEngines() {
		fmt.Fprintf(&report, "\n#### %s %s\n", e.name, cmpVersion(e.module))
		t.Logf("%s %s", e.name, cmpVersion(e.module))
		featTotal, featFail := map[string]int{}, map[string]int{}
		for _, sn := range setNames {
			var counts [cmpOutcomes]int
			for _, it := range sets[sn] {
				r := cmpRun(e, it.src, it.vars)
				o := cmpClassify(r, it.want)
				counts[o]++
				if sn == "random.json" {
					for _, f := range cmpFeatures {
						if f.re.MatchString(it.src) {
							featTotal[f.name]++
							if o != cmpSame {
								featFail[f.name]++
							}
						}
					}
				}
				if o == cmpSame {
					continue
				}
				fmt.Fprintf(&report, "\n--- %s %s: %s\ntemplate: %q\n", sn, it.name, cmpOutcomeNames[o], it.src)
				if it.want != nil {
					fmt.Fprintf(&report, "want:     %q\n", *it.want)
				} else {
					fmt.Fprintf(&report, "want:     error %s\n", it.refErr)
				}
				switch {
				case r.hung:
				case r.panicked != nil:
					fmt.Fprintf(&report, "panic:    %v\n", r.panicked)
				case r.err != nil:
					fmt.Fprintf(&report, "error:    %v\n", r.err)
				default:
					fmt.Fprintf(&report, "got:      %q\n", r.out)
				}
			}
			line := fmt.Sprintf("%-16s %-12s %4d cases:", e.name, sn, len(sets[sn]))
			for o, n := range counts {
				line += fmt.Sprintf(" %s %d;", cmpOutcomeNames[o], n)
			}
			t.Log(line)
			fmt.Fprintln(&report, line)
		}
		for _, f := range cmpFeatures {
			line := fmt.Sprintf("%-16s random.json failures among cases using %-26s %3d / %3d", e.name, f.name+":", featFail[f.name], featTotal[f.name])
			t.Log(line)
			fmt.Fprintln(&report, line)
		}
	}
	if p := os.Getenv("JINJA_COMPARE_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
