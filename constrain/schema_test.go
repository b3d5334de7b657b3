package constrain

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compileValidator compiles schema with format assertions on, as the outputs are checked.
func compileValidator(t testing.TB, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("s.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("s.json")
	if err != nil {
		t.Fatalf("schema %s: %v", schema, err)
	}
	return s
}

// ValidateJSON checks a document against a compiled schema, for tests.
func validateJSON(s *jsonschema.Schema, doc []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// randomSchema writes a random schema of nested objects, arrays, enums, anyOf, numbers and strings.
func randomSchema(rng *rand.Rand, depth int) string {
	leaf := []string{
		`{"type":"string"}`, `{"type":"string","maxLength":5}`, `{"type":"string","minLength":2,"maxLength":4}`,
		`{"type":"integer"}`, `{"type":"integer","minimum":-7,"maximum":123}`, `{"type":"integer","exclusiveMinimum":10}`,
		`{"type":"number"}`, `{"type":"number","minimum":0,"maximum":5}`, `{"type":"boolean"}`, `{"type":"null"}`,
		`{"enum":["red","green","blu\"e","ünï","😀"]}`, `{"enum":[1,2.5,"x",null,true]}`, `{"const":"fixed"}`,
		`{"type":["string","null"]}`, `{"type":"string","format":"date"}`, `{"type":"string","format":"time"}`,
		`{"type":"string","format":"date-time"}`, `{"type":"string","format":"uuid"}`, `{"type":"string","format":"email"}`,
		`{}`, `{"type":"integer","maximum":-3}`,
	}
	if depth > 2 || rng.IntN(3) == 0 {
		return leaf[rng.IntN(len(leaf))]
	}
	switch rng.IntN(5) {
	case 0, 1:
		n := 1 + rng.IntN(4)
		var props, req []string
		for i := range n {
			name := fmt.Sprintf("k%d", i)
			if rng.IntN(4) == 0 {
				name = fmt.Sprintf("clé \\\"%d", i)
			}
			props = append(props, fmt.Sprintf("%q:%s", name, randomSchema(rng, depth+1)))
			if rng.IntN(2) == 0 {
				req = append(req, fmt.Sprintf("%q", name))
			}
		}
		p := strings.ReplaceAll(strings.Join(props, ","), `\\\"`, `\"`)
		r := strings.ReplaceAll(strings.Join(req, ","), `\\\"`, `\"`)
		extra := ""
		if rng.IntN(2) == 0 {
			extra = `,"additionalProperties":false`
		}
		return fmt.Sprintf(`{"type":"object","properties":{%s},"required":[%s]%s}`, p, r, extra)
	case 2:
		lo := rng.IntN(3)
		return fmt.Sprintf(`{"type":"array","items":%s,"minItems":%d,"maxItems":%d}`, randomSchema(rng, depth+1), lo, lo+rng.IntN(3))
	case 3:
		return fmt.Sprintf(`{"type":"array","prefixItems":[%s,%s],"items":false,"minItems":1}`, randomSchema(rng, depth+1), randomSchema(rng, depth+1))
	default:
		return fmt.Sprintf(`{"anyOf":[%s,%s]}`, randomSchema(rng, depth+1), randomSchema(rng, depth+1))
	}
}

// TestRandomSchemas: every complete output of the compiled grammar validates against its schema.
func TestRandomSchemas(t *testing.T) {
	v := byteVocabulary(t)
	rng := rand.New(rand.NewPCG(3, 4))
	schemas := 150
	if testing.Short() {
		schemas = 30
	}
	outputs := 0
	for range schemas {
		schema := randomSchema(rng, 0)
		g, err := CompileJSONSchema([]byte(schema))
		if err != nil {
			t.Fatalf("schema %s: %v", schema, err)
		}
		val := compileValidator(t, schema)
		for range 8 {
			out, ok := walk(t, g, v, rng, 3000)
			if !ok {
				continue
			}
			outputs++
			if err := validateJSON(val, out); err != nil {
				t.Fatalf("schema %s\noutput %s\n%v", schema, out, err)
			}
		}
	}
	if outputs < schemas*4 {
		t.Errorf("only %d complete outputs for %d schemas", outputs, schemas)
	}
}

func TestSchemaCases(t *testing.T) {
	v := byteVocabulary(t)
	cases := []struct {
		name, schema string
		yes, no      []string
	}{
		{"enum object", `{"type":"object","properties":{"shape":{"enum":["circle","square"]},"colour":{"enum":["red","blue"]}},"required":["shape","colour"],"additionalProperties":false}`,
			[]string{`{"shape":"circle","colour":"red"}`, `{ "shape": "square", "colour": "blue" }`},
			[]string{`{"shape":"circle"}`, `{"colour":"red","shape":"circle"}`, `{"shape":"triangle","colour":"red"}`}},
		{"optional properties", `{"properties":{"a":{"type":"integer"},"b":{"type":"boolean"}}}`,
			[]string{`{}`, `{"a":1}`, `{"b":true}`, `{"a":-2,"b":false}`}, []string{`{,"b":true}`, `{"a":1,}`}},
		{"integer range", `{"type":"integer","minimum":-15,"maximum":230}`,
			[]string{"-15", "-1", "0", "9", "99", "100", "230"}, []string{"-16", "231", "-0", "007", "1.5"}},
		{"exclusive", `{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10}`, []string{"1", "9"}, []string{"0", "10"}},
		{"number bounds", `{"type":"number","minimum":1,"maximum":3}`, []string{"1", "2.75", "3", "3.00"}, []string{"0.5", "3.01", "-1"}},
		{"string lengths", `{"type":"string","minLength":2,"maxLength":3}`, []string{`"ab"`, `"a\n"`, `"é😀x"`, `"\u00e9\""`}, []string{`"a"`, `"abcd"`, `"\ud83d\ude00"`}},
		{"array", `{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`, []string{"[1]", "[1, 2,3]"}, []string{"[]", "[1,2,3,4]", "[1,]"}},
		{"prefix items", `{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":{"type":"boolean"}}`, []string{`[]`, `["a"]`, `["a",1,true,false]`}, []string{`[1]`, `["a","b"]`}},
		{"refs", `{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"}`,
			[]string{`{"v":1,"next":{"v":2,"next":null}}`}, []string{`{"v":1}`}},
		{"type list", `{"type":["integer","null"]}`, []string{"3", "null"}, []string{`"3"`}},
		{"oneOf disjoint", `{"oneOf":[{"type":"string"},{"type":"integer"}]}`, []string{`"x"`, "4"}, []string{"true"}},
		{"enum filtered by type", `{"type":"string","enum":["a",1]}`, []string{`"a"`}, []string{"1"}},
		{"date", `{"type":"string","format":"date"}`, []string{`"2024-02-28"`, `"1999-12-31"`}, []string{`"2024-02-30"`, `"2024-13-01"`}},
		{"uuid", `{"type":"string","format":"uuid"}`, []string{`"123e4567-e89b-12d3-a456-426614174000"`}, []string{`"123e4567"`}},
		{"map", `{"type":"object","additionalProperties":{"type":"integer"}}`, []string{`{}`, `{"x":1,"y":2}`}, []string{`{"x":"1"}`}},
		{"any", `true`, []string{`{"a":[1,"b",null]}`, `3`}, []string{`{a}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := CompileJSONSchema([]byte(c.schema))
			if err != nil {
				t.Fatal(err)
			}
			val := compileValidator(t, c.schema)
			for _, s := range c.yes {
				m := NewMatcher(g, v)
				if !m.AcceptBytes([]byte(s)) || !m.Complete() {
					t.Errorf("%s refused, want accepted", s)
				}
				if err := validateJSON(val, []byte(s)); err != nil {
					t.Errorf("test case %s does not validate: %v", s, err)
				}
			}
			for _, s := range c.no {
				m := NewMatcher(g, v)
				if m.AcceptBytes([]byte(s)) && m.Complete() {
					t.Errorf("%s accepted, want refused", s)
				}
			}
		})
	}
}

func TestSchemaBadInput(t *testing.T) {
	cases := []struct{ name, schema, keyword, want string }{
		{"not json", `{"type":`, "", "not valid JSON"},
		{"invalid schema", `{"type":"strin"}`, "", "invalid schema"},
		{"pattern", `{"type":"string","pattern":"^a+$"}`, "pattern", "cannot enforce"},
		{"nested unknown", `{"properties":{"a":{"type":"integer","multipleOf":3}}}`, "multipleOf", "#/properties/a"},
		{"allOf", `{"allOf":[{"type":"string"}]}`, "allOf", "cannot enforce"},
		{"uniqueItems", `{"type":"array","uniqueItems":true}`, "uniqueItems", "cannot enforce"},
		{"format", `{"type":"string","format":"hostname"}`, "format", `"hostname" is not supported`},
		{"false", `false`, "", "accepts no value"},
		{"remote ref", `{"$ref":"http://example.com/s.json"}`, "", "only local references"},
		{"file ref", `{"$ref":"file:///etc/passwd"}`, "", "only local references"},
		{"oneOf overlap", `{"oneOf":[{"type":"string"},{"type":"string","maxLength":3}]}`, "oneOf", "use anyOf"},
		{"number maximum only", `{"type":"number","maximum":3}`, "minimum", "whole minimum"},
		{"empty range", `{"type":"integer","minimum":5,"maximum":4}`, "minimum", "no integer"},
		{"enum none valid", `{"type":"integer","enum":["a"]}`, "enum", "no value validates"},
		{"minProperties", `{"type":"object","minProperties":1}`, "minProperties", "cannot enforce"},
		{"ref beside type", `{"$defs":{"a":{}},"$ref":"#/$defs/a","type":"string"}`, "type", `beside "$ref"`},
		{"required not allowed", `{"properties":{},"required":["x"],"additionalProperties":false}`, "required", `"x" is required`},
		{"left recursive ref", `{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}`, "", "left-recursive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CompileJSONSchema([]byte(c.schema))
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T), want a *SchemaError", err, err)
			}
			if se.Keyword != c.keyword {
				t.Errorf("keyword %q, want %q (%v)", se.Keyword, c.keyword, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func FuzzSchemaToGBNF(f *testing.F) {
	for _, s := range []string{`{"type":"object","properties":{"a":{"enum":[1,"x"]}}}`, `{"$ref":"#"}`, `{"type":"integer","minimum":-3}`, `[`, `{"items":{"items":{}}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, schema string) {
		src, err := SchemaToGBNF([]byte(schema))
		if err != nil {
			return
		}
		if _, err := ParseGBNF(src); err != nil {
			var ge *GrammarError
			if !errors.As(err, &ge) {
				t.Fatalf("schema %s gives a grammar that does not parse: %v\n%s", schema, err, src)
			}
		}
	})
}
