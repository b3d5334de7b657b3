package runner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/idefics2-go/idefics2/constrain"
)

func compileSchema(t *testing.T, schema string) (*constrain.Grammar, *jsonschema.Schema) {
	t.Helper()
	g, err := constrain.CompileJSONSchema([]byte(schema))
	if err != nil {
		t.Fatalf("schema %s: %v", schema, err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("s.json", doc); err != nil {
		t.Fatal(err)
	}
	v, err := c.Compile("s.json")
	if err != nil {
		t.Fatal(err)
	}
	return g, v
}

func validates(v *jsonschema.Schema, text string) error {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return err
	}
	return v.Validate(doc)
}

const pictureSchema = `{"type":"object","properties":{
 "shape":{"enum":["circle","square","triangle","star","cross"]},
 "colour":{"enum":["red","green","blue","yellow","purple","orange","white","black"]}},
 "required":["shape","colour"],"additionalProperties":false}`

// TestConstrainedDemoPictures asks the demo model to describe each demo picture as JSON with a schema of enums:
// every answer must be complete and validate. The table of answers and the pictures' truth is logged.
func TestConstrainedDemoPictures(t *testing.T) {
	m := loadModel(t, "demo")
	g, val := compileSchema(t, pictureSchema)
	var man struct {
		Cases []struct {
			ID       string `json:"id"`
			Expected string `json:"expected_answer"`
		} `json:"cases"`
	}
	readJSON(t, testdata("demo", "manifest.json"), &man)
	truth := map[string]string{}
	for _, c := range man.Cases {
		truth[c.ID] = c.Expected
	}
	var table strings.Builder
	table.WriteString("| picture | answer | truth |\n|---|---|---|\n")
	for i := range 12 {
		name := fmt.Sprintf("demo_%02d", i)
		s, err := m.NewSession(512)
		if err != nil {
			t.Fatal(err)
		}
		p, err := m.ChatPrompt([]Message{userTurn(t, "Describe the picture as JSON", demoImage(t, name+".png"))}, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 64, Constraint: g})
		s.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.StopReason != StopToken {
			t.Errorf("%s: stop reason %s, want a stop token (answer %q)", name, res.StopReason, res.Text)
		}
		if err := validates(val, res.Text); err != nil {
			t.Errorf("%s: answer %q does not validate: %v", name, res.Text, err)
		}
		fmt.Fprintf(&table, "| %s | `%s` | %s |\n", name, res.Text, truth[name])
	}
	t.Logf("answers:\n%s", table.String())
}

// randomSchema writes a random schema of nested objects, arrays, enums, anyOf, numbers and strings (Unicode and
// escapes come from the model's own choices inside strings).
func randomSchema(rng *rand.Rand, depth int) string {
	leaf := []string{
		`{"type":"string","maxLength":12}`, `{"type":"string","minLength":1,"maxLength":6}`, `{"type":"integer"}`,
		`{"type":"integer","minimum":-20,"maximum":300}`, `{"type":"number"}`, `{"type":"boolean"}`, `{"type":"null"}`,
		`{"enum":["red","green","blu\"e","ünï","😀"]}`, `{"enum":[1,2.5,"x",null,true]}`, `{"const":"fixed"}`,
		`{"type":["string","null"],"maxLength":8}`, `{"type":"string","format":"date"}`, `{"type":"string","format":"uuid"}`,
	}
	if depth > 2 || rng.IntN(3) == 0 {
		return leaf[rng.IntN(len(leaf))]
	}
	switch rng.IntN(4) {
	case 0, 1:
		var props, req []string
		for i := range 1 + rng.IntN(3) {
			props = append(props, fmt.Sprintf(`"k%d":%s`, i, randomSchema(rng, depth+1)))
			if rng.IntN(2) == 0 {
				req = append(req, fmt.Sprintf(`"k%d"`, i))
			}
		}
		return fmt.Sprintf(`{"type":"object","properties":{%s},"required":[%s],"additionalProperties":false}`,
			strings.Join(props, ","), strings.Join(req, ","))
	case 2:
		return fmt.Sprintf(`{"type":"array","items":%s,"minItems":1,"maxItems":3}`, randomSchema(rng, depth+1))
	default:
		return fmt.Sprintf(`{"anyOf":[%s,%s]}`, randomSchema(rng, depth+1), randomSchema(rng, depth+1))
	}
}

// TestConstrainedRandomSchemas samples the demo model at temperature 1.5 under random schemas: every output that
// ends with a stop token validates against its schema.
func TestConstrainedRandomSchemas(t *testing.T) {
	m := loadModel(t, "demo")
	rng := rand.New(rand.NewPCG(7, 8))
	n := 40
	if testing.Short() {
		n = 10
	}
	complete := 0
	for i := range n {
		schema := randomSchema(rng, 0)
		g, val := compileSchema(t, schema)
		s, err := m.NewSession(512)
		if err != nil {
			t.Fatal(err)
		}
		p, err := m.ChatPrompt([]Message{userTurn(t, "Describe the picture as JSON", demoImage(t, fmt.Sprintf("demo_%02d.png", i%12)))}, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 160, Constraint: g,
			Sampler: SamplerOptions{Temperature: 1.5, TopK: 100, Seed: uint64(i)}})
		s.Close()
		if err != nil {
			t.Fatalf("schema %s: %v", schema, err)
		}
		if res.StopReason != StopToken {
			continue // cut by the token limit: incomplete by design
		}
		complete++
		if err := validates(val, res.Text); err != nil {
			t.Errorf("schema %s\noutput %q\n%v", schema, res.Text, err)
		}
	}
	t.Logf("%d of %d outputs complete", complete, n)
	if complete < n/2 {
		t.Errorf("only %d of %d outputs completed within the token limit", complete, n)
	}
}

// randomRegularGrammar returns a random GBNF grammar without recursion and a Go regular expression of the same
// language, written independently from the same choices.
func randomRegularGrammar(rng *rand.Rand) (gbnf, re string) {
	lits := []string{"a", "b", "yes", "no", "é", "€", "😀", " ", "{", "}", "42"}
	classes := [][2]string{{"[a-c]", "[a-c]"}, {"[0-9]", "[0-9]"}, {`[^"\\]`, `[^"\\]`}, {"[à-é]", "[à-é]"}, {".", "."}}
	reps := [][2]string{{"*", "*"}, {"+", "+"}, {"?", "?"}, {"{2}", "{2}"}, {"{1,3}", "{1,3}"}, {"{0,2}", "{0,2}"}}
	var gen func(depth int) (string, string)
	gen = func(depth int) (string, string) {
		switch k := rng.IntN(8); {
		case k < 3 || depth > 3:
			l := lits[rng.IntN(len(lits))]
			return `"` + l + `"`, regexp.QuoteMeta(l)
		case k == 3:
			c := classes[rng.IntN(len(classes))]
			return c[0], c[1]
		case k == 4:
			a, ra := gen(depth + 1)
			b, rb := gen(depth + 1)
			return "( " + a + " | " + b + " )", "(?:" + ra + "|" + rb + ")"
		case k == 5:
			a, ra := gen(depth + 1)
			r := reps[rng.IntN(len(reps))]
			return "( " + a + " )" + r[0], "(?:" + ra + ")" + r[1]
		default:
			a, ra := gen(depth + 1)
			b, rb := gen(depth + 1)
			return a + " " + b, ra + rb
		}
	}
	g, r := gen(0)
	return "root ::= " + g + "\n", "(?s)^(?:" + r + ")$"
}

// TestConstrainedRandomGrammars samples the demo model at temperature 1.5 under random grammars: every output that
// ends with a stop token matches the grammar's regular expression (Go's regexp, an independent recogniser).
func TestConstrainedRandomGrammars(t *testing.T) {
	m := loadModel(t, "demo")
	rng := rand.New(rand.NewPCG(9, 10))
	n := 40
	if testing.Short() {
		n = 10
	}
	complete := 0
	for i := range n {
		src, pattern := randomRegularGrammar(rng)
		g, err := constrain.ParseGBNF(src)
		if err != nil {
			continue // a repetition of an item that can match nothing: refused by design
		}
		re := regexp.MustCompile(pattern)
		s, err := m.NewSession(256)
		if err != nil {
			t.Fatal(err)
		}
		p, err := m.ChatPrompt([]Message{userTurn(t, "What do you see?")}, PromptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), p, GenerateOptions{MaxTokens: 48, Constraint: g,
			Sampler: SamplerOptions{Temperature: 1.5, Seed: uint64(i)}})
		s.Close()
		if err != nil {
			t.Fatalf("grammar %s: %v", src, err)
		}
		if res.StopReason != StopToken {
			continue
		}
		complete++
		if !re.MatchString(res.Text) {
			t.Errorf("grammar %s output %q does not match %s", src, res.Text, pattern)
		}
	}
	t.Logf("%d of %d outputs complete", complete, n)
	if complete < n/2 {
		t.Errorf("only %d of %d outputs completed within the token limit", complete, n)
	}
}

// TestConstraintVocabulary checks how the real tokenizer's pieces reach the engine: "▁" as a space (dropped at the
// start of the output), byte-fallback pieces as their byte, stop tokens only at the end, image tokens never.
func TestConstraintVocabulary(t *testing.T) {
	m := loadModel(t, "demo")
	v, err := m.ConstraintVocabulary()
	if err != nil {
		t.Fatal(err)
	}
	g, err := constrain.ParseGBNF(`root ::= "{" "€" " }"`)
	if err != nil {
		t.Fatal(err)
	}
	id := func(piece string) int32 {
		t.Helper()
		i, ok := m.Tokenizer().TokenID(piece)
		if !ok {
			t.Fatalf("no token %q", piece)
		}
		return i
	}
	mt := constrain.NewMatcher(g, v)
	steps := []struct {
		token            int32
		allowed, refused []string
	}{
		// A first space is dropped by the decoder, so "▁" and <0x20> are allowed too (they write nothing).
		{id("▁{"), []string{"{", "▁{", "▁", "<0x20>"}, []string{"</s>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<s>", "▁▁", "}"}},
		{id("<0xE2>"), []string{"<0xE2>"}, []string{"<0x82>", "▁}", "}"}},
		{id("<0x82>"), []string{"<0x82>"}, []string{"<0xE2>", "<0xAC>"}},
		{id("<0xAC>"), []string{"<0xAC>"}, []string{"<0x82>", "▁}"}},
		{id("▁}"), []string{"▁}", "<0x20>", "▁"}, []string{"}", "</s>"}},
		{id("<end_of_utterance>"), []string{"</s>", "<end_of_utterance>"}, []string{"▁", "<image>"}},
	}
	for i, s := range steps {
		for _, p := range s.allowed {
			if !mt.Allowed(id(p)) {
				t.Errorf("step %d: %q refused, want allowed", i, p)
			}
		}
		for _, p := range s.refused {
			if mt.Allowed(id(p)) {
				t.Errorf("step %d: %q allowed, want refused", i, p)
			}
		}
		if err := mt.Accept(s.token); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}
