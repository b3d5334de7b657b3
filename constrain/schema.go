package constrain

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// JSON Schema support: the schema is parsed and checked against its meta-schema by santhosh-tekuri/jsonschema
// (draft 2020-12 unless $schema names another), then compiled to GBNF here. Every keyword either shapes the
// grammar, is an annotation, or is refused with a *SchemaError naming it: the output always validates.
//
// The grammar writes a subset of the valid documents: object properties in the schema's order and only the
// listed ones (additional properties are allowed by a schema but never needed), numbers of at most 16 integer
// and 16 fraction digits, JSON without leading or trailing whitespace.

// The common rules every schema grammar may use.
const jsonCommonGBNF = `ws ::= | " " | "\n" [ ]{0,16}
char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" hex4 )
hex4 ::= [0-9a-cA-CeEfF] hex hex hex | [dD] [0-7] hex hex
hex ::= [0-9a-fA-F]
string ::= "\"" char* "\""
int ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
number ::= int ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
date ::= [0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )
time ::= ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )
uuid ::= hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12}
email ::= atom ( "." atom ){0,2} "@" label ( "." label ){1,4}
atom ::= [a-zA-Z0-9_+-]{1,16}
label ::= [a-zA-Z] ( [a-zA-Z0-9-]{0,20} [a-zA-Z0-9] )?
`

// JSONObjectGBNF is the grammar of any JSON object (OpenAI's response_format {"type": "json_object"}).
const JSONObjectGBNF = "root ::= object\n" + jsonCommonGBNF

// SchemaToGBNF compiles a JSON Schema (JSON text) to a GBNF grammar whose sentences all validate against it.
func SchemaToGBNF(schema []byte) (string, error) {
	root, err := decodeJSON(schema)
	if err != nil {
		return "", &SchemaError{Msg: "not valid JSON: " + err.Error()}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return "", &SchemaError{Msg: "not valid JSON: " + err.Error()}
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.UseLoader(noLoader{}) // never read files or the network: only local references are supported
	const url = "schema.json"
	if err := c.AddResource(url, doc); err != nil {
		return "", &SchemaError{Msg: err.Error()}
	}
	if _, err := c.Compile(url); err != nil {
		return "", &SchemaError{Msg: "invalid schema: " + oneLine(err.Error())}
	}
	b := &schemaBuilder{root: root, comp: c, url: url, rules: map[string]string{}, byBody: map[string]string{}, refs: map[string]string{}}
	body, err := b.visit(root, "")
	if err != nil {
		return "", err
	}
	var out strings.Builder
	fmt.Fprintf(&out, "root ::= %s\n", body)
	for _, n := range b.order {
		fmt.Fprintf(&out, "%s ::= %s\n", n, b.rules[n])
	}
	out.WriteString(jsonCommonGBNF)
	return out.String(), nil
}

// CompileJSONSchema compiles a JSON Schema to a Grammar (SchemaToGBNF, then ParseGBNF).
func CompileJSONSchema(schema []byte) (*Grammar, error) {
	src, err := SchemaToGBNF(schema)
	if err != nil {
		return nil, err
	}
	g, err := ParseGBNF(src)
	if err != nil {
		return nil, &SchemaError{Msg: "the grammar compiled from the schema is not usable: " + err.Error()}
	}
	return g, nil
}

// noLoader refuses every schema document other than the one given.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s: only local references (#…) are supported", url)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

type schemaBuilder struct {
	root   *jvalue
	comp   *jsonschema.Compiler
	url    string
	rules  map[string]string // name → body
	order  []string
	byBody map[string]string // body → name, to share identical rules
	refs   map[string]string // JSON pointer → rule name of a $ref target
	depth  int
}

// rule names body (sharing a rule with the same body) and returns the name.
func (b *schemaBuilder) rule(hint, body string) string {
	if n, ok := b.byBody[body]; ok {
		return n
	}
	n := b.fresh(hint)
	b.rules[n] = body
	b.order = append(b.order, n)
	b.byBody[body] = n
	return n
}

func (b *schemaBuilder) fresh(hint string) string {
	var s strings.Builder
	s.WriteString("s")
	for _, r := range hint {
		if r < 128 && isWordChar(byte(r)) {
			s.WriteRune(r)
		} else {
			s.WriteByte('-')
		}
	}
	base := s.String()
	if len(base) > 40 {
		base = base[:40]
	}
	n := base
	for i := 2; ; i++ {
		if _, taken := b.rules[n]; !taken {
			return n
		}
		n = fmt.Sprintf("%s-%d", base, i)
	}
}

// Keywords that only annotate.
var annotationKeywords = map[string]bool{
	"$schema": true, "$comment": true, "title": true, "description": true, "default": true, "examples": true,
	"deprecated": true, "readOnly": true, "writeOnly": true, "$defs": true, "definitions": true,
}

// Keywords that shape the grammar.
var handledKeywords = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true,
	"prefixItems": true, "minItems": true, "maxItems": true, "enum": true, "const": true, "anyOf": true,
	"oneOf": true, "$ref": true, "minLength": true, "maxLength": true, "minimum": true, "maximum": true,
	"exclusiveMinimum": true, "exclusiveMaximum": true, "format": true, "uniqueItems": true,
}

func serr(path, kw, format string, args ...any) error {
	return &SchemaError{Path: "#" + path, Keyword: kw, Msg: fmt.Sprintf(format, args...)}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// visit returns a GBNF expression for the schema s found at JSON pointer path.
func (b *schemaBuilder) visit(s *jvalue, path string) (string, error) {
	if b.depth++; b.depth > maxJSONDepth {
		return "", serr(path, "", "nested deeper than %d", maxJSONDepth)
	}
	defer func() { b.depth-- }()
	switch s.kind {
	case 'b':
		if s.b {
			return "value", nil
		}
		return "", serr(path, "", "the schema false accepts no value")
	case 'o':
	default:
		return "", serr(path, "", "a schema must be an object or a boolean")
	}
	var constraining []string
	for _, k := range s.keys {
		switch {
		case annotationKeywords[k]:
		case k == "$id" && path == "":
		case handledKeywords[k]:
			constraining = append(constraining, k)
		default:
			return "", serr(path, k, "not supported: the grammar cannot enforce it")
		}
	}
	if u := s.get("uniqueItems"); u != nil && u.kind == 'b' && u.b {
		return "", serr(path, "uniqueItems", "not supported: the grammar cannot enforce it")
	}
	alone := func(kw string) error {
		for _, k := range constraining {
			if k != kw {
				return serr(path, k, "not supported beside %q (only annotations may sit beside it)", kw)
			}
		}
		return nil
	}
	if ref := s.get("$ref"); ref != nil {
		if err := alone("$ref"); err != nil {
			return "", err
		}
		return b.ref(ref.str, path)
	}
	if e := s.get("const"); e != nil {
		return b.literals([]*jvalue{e}, path, "const")
	}
	if e := s.get("enum"); e != nil {
		return b.literals(e.vals, path, "enum")
	}
	for _, kw := range []string{"anyOf", "oneOf"} {
		list := s.get(kw)
		if list == nil {
			continue
		}
		if err := alone(kw); err != nil {
			return "", err
		}
		if kw == "oneOf" {
			if err := oneOfDisjoint(list.vals, path); err != nil {
				return "", err
			}
		}
		var alts []string
		for i, sub := range list.vals {
			x, err := b.visit(sub, fmt.Sprintf("%s/%s/%d", path, kw, i))
			if err != nil {
				return "", err
			}
			alts = append(alts, x)
		}
		return b.rule(path+"-"+kw, strings.Join(alts, " | ")), nil
	}
	types, err := schemaTypes(s, path)
	if err != nil {
		return "", err
	}
	var alts []string
	for _, t := range types {
		x, err := b.typed(s, t, path)
		if err != nil {
			return "", err
		}
		alts = append(alts, x)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return b.rule(path+"-types", strings.Join(alts, " | ")), nil
}

// schemaTypes lists the JSON types s allows: its "type", else the type its keywords imply, else all.
func schemaTypes(s *jvalue, path string) ([]string, error) {
	t := s.get("type")
	if t == nil {
		switch {
		case s.get("properties") != nil || s.get("required") != nil || s.get("additionalProperties") != nil:
			return []string{"object"}, nil
		case s.get("items") != nil || s.get("prefixItems") != nil || s.get("minItems") != nil || s.get("maxItems") != nil:
			return []string{"array"}, nil
		case s.get("minLength") != nil || s.get("maxLength") != nil || s.get("format") != nil:
			return []string{"string"}, nil
		case s.get("minimum") != nil || s.get("maximum") != nil || s.get("exclusiveMinimum") != nil || s.get("exclusiveMaximum") != nil:
			return []string{"number"}, nil
		}
		return []string{"any"}, nil
	}
	if t.kind == 's' {
		return []string{t.str}, nil
	}
	var out []string
	for _, e := range t.vals {
		out = append(out, e.str)
	}
	// "integer" is part of "number": keep the wider one only.
	if slices.Contains(out, "number") {
		out = slices.DeleteFunc(out, func(x string) bool { return x == "integer" })
	}
	return out, nil
}

func (b *schemaBuilder) ref(ref, path string) (string, error) {
	if !strings.HasPrefix(ref, "#") {
		return "", serr(path, "$ref", "%q is not a local reference (only #… is supported)", ref)
	}
	ptr := ref[1:]
	if n, ok := b.refs[ptr]; ok {
		return n, nil
	}
	target := b.root
	if ptr != "" {
		if !strings.HasPrefix(ptr, "/") {
			return "", serr(path, "$ref", "%q: anchors are not supported, use a JSON pointer", ref)
		}
		for _, tok := range strings.Split(ptr[1:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			switch target.kind {
			case 'o':
				target = target.get(tok)
			case 'a':
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(target.vals) {
					target = nil
				} else {
					target = target.vals[i]
				}
			default:
				target = nil
			}
			if target == nil {
				return "", serr(path, "$ref", "%q points to nothing", ref)
			}
		}
	}
	// Name the rule before visiting the target so that recursive references end here.
	n := b.fresh("ref" + ptr)
	b.refs[ptr] = n
	b.rules[n] = ""
	body, err := b.visit(target, ptr)
	if err != nil {
		return "", err
	}
	b.rules[n] = body
	b.order = append(b.order, n)
	return n, nil
}

// literals is the alternation of the JSON texts of values, keeping only those that validate against the schema
// at path (an enum value can contradict a sibling "type").
func (b *schemaBuilder) literals(values []*jvalue, path, kw string) (string, error) {
	sch, err := b.comp.Compile(b.url + "#" + path)
	if err != nil {
		return "", serr(path, kw, "%s", oneLine(err.Error()))
	}
	var alts []string
	for _, v := range values {
		var text strings.Builder
		v.compact(&text)
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(text.String()))
		if err != nil {
			return "", serr(path, kw, "value %s: %v", text.String(), err)
		}
		if sch.Validate(inst) != nil {
			continue
		}
		alts = append(alts, gbnfLiteral(text.String()))
	}
	if len(alts) == 0 {
		return "", serr(path, kw, "no value validates against the rest of the schema")
	}
	return b.rule(path+"-"+kw, strings.Join(alts, " | ")), nil
}

// gbnfLiteral quotes s as a GBNF string literal.
func gbnfLiteral(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(&b, "\\x%02X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// oneOfDisjoint refuses oneOf branches that might both match one value: the grammar cannot enforce "exactly
// one". Branches are disjoint when their JSON types differ, or when they are objects that require one property
// with distinct constant values.
func oneOfDisjoint(branches []*jvalue, path string) error {
	for i := range branches {
		for j := i + 1; j < len(branches); j++ {
			if !disjoint(branches[i], branches[j]) {
				return serr(path, "oneOf", "branches %d and %d may both match a value, which the grammar cannot rule out (use anyOf)", i, j)
			}
		}
	}
	return nil
}

func disjoint(a, b *jvalue) bool {
	ta, errA := schemaTypes(a, "")
	tb, errB := schemaTypes(b, "")
	if a.kind != 'o' || b.kind != 'o' || errA != nil || errB != nil || a.get("$ref") != nil || b.get("$ref") != nil {
		return false
	}
	if a.get("anyOf") != nil || b.get("anyOf") != nil || a.get("oneOf") != nil || b.get("oneOf") != nil {
		return false
	}
	if c := constValues(a); c != nil {
		if d := constValues(b); d != nil {
			return !overlap(c, d)
		}
	}
	overlapType := false
	for _, x := range ta {
		for _, y := range tb {
			if x == y || x == "any" || y == "any" || (x == "number" && y == "integer") || (x == "integer" && y == "number") {
				overlapType = true
			}
		}
	}
	if !overlapType {
		return true
	}
	if !slices.Equal(ta, []string{"object"}) || !slices.Equal(tb, []string{"object"}) {
		return false
	}
	// A discriminator: a property both require, with disjoint constant values.
	pa, pb := a.get("properties"), b.get("properties")
	for _, k := range requiredNames(a) {
		if !slices.Contains(requiredNames(b), k) {
			continue
		}
		ca, cb := constValues(pa.get(k)), constValues(pb.get(k))
		if ca != nil && cb != nil && !overlap(ca, cb) {
			return true
		}
	}
	return false
}

// constValues is the compact JSON of the values a schema's const or enum allows, or nil.
func constValues(s *jvalue) []string {
	if s == nil {
		return nil
	}
	var vals []*jvalue
	if c := s.get("const"); c != nil {
		vals = []*jvalue{c}
	} else if e := s.get("enum"); e != nil {
		vals = e.vals
	} else {
		return nil
	}
	var out []string
	for _, v := range vals {
		var t strings.Builder
		v.compact(&t)
		out = append(out, t.String())
	}
	return out
}

func overlap(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func requiredNames(s *jvalue) []string {
	var out []string
	if r := s.get("required"); r != nil {
		for _, v := range r.vals {
			out = append(out, v.str)
		}
	}
	return out
}

// typed is the grammar of the values of JSON type t that satisfy s.
func (b *schemaBuilder) typed(s *jvalue, t, path string) (string, error) {
	switch t {
	case "any":
		return "value", nil
	case "null":
		return "null", nil
	case "boolean":
		return "boolean", nil
	case "string":
		return b.stringRule(s, path)
	case "integer", "number":
		return b.numberRule(s, t, path)
	case "object":
		return b.objectRule(s, path)
	case "array":
		return b.arrayRule(s, path)
	}
	return "", serr(path, "type", "unknown type %q", t)
}

func intKeyword(s *jvalue, kw, path string) (int, bool, error) {
	v := s.get(kw)
	if v == nil {
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(v.str, 64)
	if err != nil || f < 0 || f != math.Trunc(f) {
		return 0, false, serr(path, kw, "want a non-negative integer")
	}
	if f > maxRepeat {
		return 0, false, serr(path, kw, "%s is larger than %d, the most the grammar can count", v.str, maxRepeat)
	}
	return int(f), true, nil
}

func repeat(x string, lo, hi int, hasHi bool) string {
	switch {
	case !hasHi && lo == 0:
		return x + "*"
	case !hasHi:
		return fmt.Sprintf("%s{%d,}", x, lo)
	case lo == hi:
		return fmt.Sprintf("%s{%d}", x, lo)
	}
	return fmt.Sprintf("%s{%d,%d}", x, lo, hi)
}

func (b *schemaBuilder) stringRule(s *jvalue, path string) (string, error) {
	lo, _, err := intKeyword(s, "minLength", path)
	if err != nil {
		return "", err
	}
	hi, hasHi, err := intKeyword(s, "maxLength", path)
	if err != nil {
		return "", err
	}
	if hasHi && hi < lo {
		return "", serr(path, "maxLength", "%d is below minLength %d", hi, lo)
	}
	if f := s.get("format"); f != nil {
		switch f.str {
		case "date", "time", "uuid", "email":
		case "date-time":
			if s.get("minLength") != nil || s.get("maxLength") != nil {
				return "", serr(path, "minLength", "not supported beside format")
			}
			return b.rule("date-time", `"\"" date "T" time "\""`), nil
		default:
			return "", serr(path, "format", "format %q is not supported (date, time, date-time, uuid, email are)", f.str)
		}
		if s.get("minLength") != nil || s.get("maxLength") != nil {
			return "", serr(path, "minLength", "not supported beside format")
		}
		return b.rule(f.str+"-string", `"\"" `+f.str+` "\""`), nil
	}
	if lo == 0 && !hasHi {
		return "string", nil
	}
	return b.rule(path+"-string", `"\"" `+repeat("char", lo, hi, hasHi)+` "\""`), nil
}

// maxDigits bounds the integer part the grammar writes: |x| < 10^16.
const maxDigits = 16

var intLimit = int64(math.Pow10(maxDigits)) - 1

func (b *schemaBuilder) numberRule(s *jvalue, t, path string) (string, error) {
	num := func(kw string) (float64, bool, error) {
		v := s.get(kw)
		if v == nil {
			return 0, false, nil
		}
		if v.kind != 'n' {
			return 0, false, serr(path, kw, "want a number")
		}
		f, err := strconv.ParseFloat(v.str, 64)
		if err != nil {
			return 0, false, serr(path, kw, "%s: %v", v.str, err)
		}
		return f, true, nil
	}
	mn, hasMin, err := num("minimum")
	if err != nil {
		return "", err
	}
	mx, hasMax, err := num("maximum")
	if err != nil {
		return "", err
	}
	emn, hasEMin, err := num("exclusiveMinimum")
	if err != nil {
		return "", err
	}
	emx, hasEMax, err := num("exclusiveMaximum")
	if err != nil {
		return "", err
	}
	if !hasMin && !hasMax && !hasEMin && !hasEMax {
		if t == "integer" {
			return "int", nil
		}
		return "number", nil
	}
	if t == "integer" {
		lo, hi := -intLimit, intLimit
		clampLo := func(f float64) {
			if f > float64(-intLimit) {
				lo = max(lo, int64(min(math.Ceil(f), float64(intLimit)+1)))
			}
		}
		clampHi := func(f float64) {
			if f < float64(intLimit) {
				hi = min(hi, int64(max(math.Floor(f), float64(-intLimit)-1)))
			}
		}
		if hasMin {
			clampLo(mn)
		}
		if hasEMin {
			clampLo(math.Floor(emn) + 1)
		}
		if hasMax {
			clampHi(mx)
		}
		if hasEMax {
			clampHi(math.Ceil(emx) - 1)
		}
		if lo > hi {
			return "", serr(path, "minimum", "no integer lies within the bounds")
		}
		return b.rule(path+"-int", intRange(lo, hi)), nil
	}
	// Numbers: whole, non-negative inclusive bounds only.
	for _, kw := range []string{"exclusiveMinimum", "exclusiveMaximum"} {
		if s.get(kw) != nil {
			return "", serr(path, kw, "not supported on numbers (it is on integers)")
		}
	}
	if !hasMin || mn < 0 || mn != math.Trunc(mn) || mn > float64(intLimit) {
		return "", serr(path, "minimum", "on numbers only a whole minimum ≥ 0 can be enforced (any bound on integers)")
	}
	lo := int64(mn)
	frac := `( "." [0-9]{1,16} )?`
	zeros := `( "." "0"{1,16} )?`
	if !hasMax {
		return b.rule(path+"-number", digitsRange(lo, intLimit)+" "+frac), nil
	}
	if mx != math.Trunc(mx) || mx > float64(intLimit) {
		return "", serr(path, "maximum", "on numbers only a whole maximum can be enforced")
	}
	hi := int64(mx)
	switch {
	case hi < lo:
		return "", serr(path, "maximum", "below minimum")
	case hi == lo:
		return b.rule(path+"-number", digitsRange(lo, lo)+" "+zeros), nil
	}
	return b.rule(path+"-number", "( "+digitsRange(lo, hi-1)+" "+frac+" | "+digitsRange(hi, hi)+" "+zeros+" )"), nil
}

// intRange is a GBNF expression for the decimal integers lo…hi (no leading zeros, no "-0").
func intRange(lo, hi int64) string {
	var alts []string
	if lo < 0 {
		alts = append(alts, `"-" `+digitsRange(max(1, -min(hi, -1)), -lo))
	}
	if hi >= 0 {
		alts = append(alts, digitsRange(max(0, lo), hi))
	}
	return "( " + strings.Join(alts, " | ") + " )"
}

// digitsRange is a GBNF expression for the decimal numbers a…b (0 ≤ a ≤ b) without leading zeros.
func digitsRange(a, b int64) string {
	var alts []string
	la, lb := len(strconv.FormatInt(a, 10)), len(strconv.FormatInt(b, 10))
	for l := la; l <= lb; l++ {
		lo, hi := int64(0), int64(math.Pow10(l))-1
		if l > 1 {
			lo = int64(math.Pow10(l - 1))
		}
		lo, hi = max(lo, a), min(hi, b)
		if lo > hi {
			continue
		}
		alts = append(alts, sameLength(strconv.FormatInt(lo, 10), strconv.FormatInt(hi, 10)))
	}
	return "( " + strings.Join(alts, " | ") + " )"
}

// sameLength is a GBNF expression for the digit strings x…y of the same length.
func sameLength(x, y string) string {
	n := len(x)
	if n == 0 {
		return `""`
	}
	if x == y {
		return `"` + x + `"`
	}
	if x[0] == y[0] {
		return `"` + x[:1] + `" ` + sameLength(x[1:], y[1:])
	}
	rest := func(k int) string {
		if k == 0 {
			return ""
		}
		return fmt.Sprintf(" [0-9]{%d}", k)
	}
	if strings.Trim(x[1:], "0") == "" && strings.Trim(y[1:], "9") == "" {
		return fmt.Sprintf("[%c-%c]%s", x[0], y[0], rest(n-1))
	}
	var alts []string
	alts = append(alts, `"`+x[:1]+`" `+sameLength(x[1:], strings.Repeat("9", n-1)))
	if x[0]+1 <= y[0]-1 {
		alts = append(alts, fmt.Sprintf("[%c-%c]%s", x[0]+1, y[0]-1, rest(n-1)))
	}
	alts = append(alts, `"`+y[:1]+`" `+sameLength(strings.Repeat("0", n-1), y[1:]))
	return "( " + strings.Join(alts, " | ") + " )"
}

func (b *schemaBuilder) objectRule(s *jvalue, path string) (string, error) {
	props := s.get("properties")
	addl := s.get("additionalProperties")
	required := requiredNames(s)
	type prop struct {
		name     string
		value    string
		required bool
	}
	var list []prop
	if props != nil {
		for i, k := range props.keys {
			x, err := b.visit(props.vals[i], path+"/properties/"+escapePointer(k))
			if err != nil {
				return "", err
			}
			list = append(list, prop{name: k, value: x, required: slices.Contains(required, k)})
		}
	}
	// Required names without a property schema take additionalProperties' schema.
	for _, k := range required {
		if props.get(k) != nil {
			continue
		}
		if addl != nil && addl.kind == 'b' && !addl.b {
			return "", serr(path, "required", "%q is required but additionalProperties is false and it is not in properties", k)
		}
		x := "value"
		if addl != nil {
			var err error
			if x, err = b.visit(addl, path+"/additionalProperties"); err != nil {
				return "", err
			}
		}
		list = append(list, prop{name: k, value: x, required: true})
	}
	if len(list) == 0 {
		if addl != nil && addl.kind == 'b' && !addl.b {
			return `"{" ws "}"`, nil
		}
		// A map: any keys, values per additionalProperties.
		x := "value"
		if addl != nil {
			var err error
			if x, err = b.visit(addl, path+"/additionalProperties"); err != nil {
				return "", err
			}
		}
		kv := "string ws \":\" ws " + x + " ws"
		return b.rule(path+"-map", `"{" ws ( `+kv+` ( "," ws `+kv+` )* )? "}"`), nil
	}
	// tail(i, comma): the properties from i on, each optional one present or not; comma says whether one was
	// already written. Built from the end so each rule refers to existing ones.
	tail := make([][2]string, len(list)+1)
	tail[len(list)] = [2]string{`""`, `""`}
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		kv := gbnfLiteral(strconvQuote(p.name)) + ` ws ":" ws ` + p.value + ` ws`
		for c := range 2 {
			pre := ""
			if c == 1 {
				pre = `"," ws `
			}
			with := pre + kv + " " + tail[i+1][1]
			body := with
			if !p.required {
				body = with + " | " + tail[i+1][c]
			}
			tail[i][c] = b.rule(fmt.Sprintf("%s-obj%d-%d", path, i, c), body)
		}
	}
	return b.rule(path+"-object", `"{" ws `+tail[0][0]+` "}"`), nil
}

func strconvQuote(s string) string {
	var t strings.Builder
	writeJSONString(&t, s)
	return t.String()
}

func (b *schemaBuilder) arrayRule(s *jvalue, path string) (string, error) {
	lo, _, err := intKeyword(s, "minItems", path)
	if err != nil {
		return "", err
	}
	hi, hasHi, err := intKeyword(s, "maxItems", path)
	if err != nil {
		return "", err
	}
	if hasHi && hi < lo {
		return "", serr(path, "maxItems", "%d is below minItems %d", hi, lo)
	}
	var prefix []string
	if p := s.get("prefixItems"); p != nil {
		for i, sub := range p.vals {
			x, err := b.visit(sub, fmt.Sprintf("%s/prefixItems/%d", path, i))
			if err != nil {
				return "", err
			}
			prefix = append(prefix, x)
		}
	}
	item := "value"
	noMore := false
	if it := s.get("items"); it != nil {
		if it.kind == 'b' && !it.b {
			noMore = true
		} else {
			if item, err = b.visit(it, path+"/items"); err != nil {
				return "", err
			}
		}
	}
	if len(prefix) > 0 && s.get("items") == nil {
		// Items after the prefix are unconstrained; write none unless minItems asks for more.
		hi, hasHi = max(lo, len(prefix)), true
	}
	if hasHi && hi < len(prefix) {
		prefix = prefix[:hi]
	}
	if noMore {
		if lo > len(prefix) {
			return "", serr(path, "minItems", "%d items are required but items is false after %d prefixItems", lo, len(prefix))
		}
		hi, hasHi = min(len(prefix), hiOr(hi, hasHi, len(prefix))), true
	}
	if hasHi && hi == 0 {
		return `"[" ws "]"`, nil
	}
	// The tail after the prefix: items, each preceded by a comma (the prefix, or a first item, went before).
	restLo := max(0, lo-len(prefix))
	restHi := hi - len(prefix)
	elem := `"," ws ` + item + ` ws`
	var tail string
	switch {
	case hasHi && restHi == 0:
		tail = `""`
	default:
		tail = repeat("( "+elem+" )", restLo, restHi, hasHi)
	}
	// Build from the end: seq(i) = "," ws prefix[i] ws seq(i+1), optional where i ≥ lo.
	next := tail
	for i := len(prefix) - 1; i >= 0; i-- {
		sep := `"," ws `
		if i == 0 {
			sep = ""
		}
		body := sep + prefix[i] + " ws " + next
		if i >= lo {
			body = "( " + body + " )?"
		}
		next = b.rule(fmt.Sprintf("%s-item%d", path, i), body)
	}
	if len(prefix) > 0 {
		return b.rule(path+"-array", `"[" ws `+next+` "]"`), nil
	}
	// No prefix: the first item has no comma.
	first := item + " ws " + repeat("( "+elem+" )", max(0, restLo-1), restHi-1, hasHi)
	if restLo == 0 {
		first = "( " + first + " )?"
	}
	return b.rule(path+"-array", `"[" ws `+first+` "]"`), nil
}

func hiOr(hi int, has bool, def int) int {
	if has {
		return hi
	}
	return def
}
