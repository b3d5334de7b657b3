package constrain

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseGBNFBadInput(t *testing.T) {
	cases := []struct {
		name, src string
		syntax    bool // *SyntaxError, else *GrammarError
		want      string
	}{
		{"empty", "", false, "no rules"},
		{"no root", `a ::= "x"`, false, `no rule named "root"`},
		{"undefined", `root ::= a`, false, `rule "a" is not defined`},
		{"left recursion", "root ::= root \"a\" | \"b\"", false, `rule "root": is left-recursive`},
		{"indirect left recursion", "root ::= a\na ::= b? root \"x\"\nb ::= \"y\"", false, "left-recursive"},
		{"nullable star", `root ::= ("a"?)*`, false, "repeats an item that can match nothing"},
		{"missing ::=", `root "a"`, true, "expected ::="},
		{"unterminated literal", `root ::= "abc`, true, "unterminated string literal"},
		{"unterminated class", `root ::= [abc`, true, "unterminated character class"},
		{"reversed range", `root ::= [z-a]`, true, "reversed"},
		{"bad escape", `root ::= "\q"`, true, `unknown escape \q`},
		{"surrogate escape", `root ::= "\uD800"`, true, "not a Unicode scalar value"},
		{"short hex", `root ::= "\x4"`, true, "hex digits"},
		{"unclosed group", `root ::= ("a"`, true, "expected ')'"},
		{"bad repetition", `root ::= "a"{3,1}`, true, "below the minimum"},
		{"huge repetition", `root ::= "a"{100000}`, true, "larger than"},
		{"token reference", `root ::= <think>`, true, "token references"},
		{"duplicate rule", "root ::= \"a\"\nroot ::= \"b\"", true, "defined twice"},
		{"stray", `root ::= "a" )`, true, "unexpected"},
		{"empty class", `root ::= [^\x00-\U0010FFFF]`, false, "matches no character"},
		{"invalid utf8", "root ::= \"\xff\"", true, "not valid UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseGBNF(c.src)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			var se *SyntaxError
			var ge *GrammarError
			if c.syntax && !errors.As(err, &se) || !c.syntax && !errors.As(err, &ge) {
				t.Errorf("error %T %v, want syntax=%v", err, err, c.syntax)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestGBNFAccepts(t *testing.T) {
	v := byteVocabulary(t)
	cases := []struct {
		name, src string
		yes, no   []string
	}{
		{"literal", `root ::= "ab"`, []string{"ab"}, []string{"a", "abc", "b"}},
		{"alternation", `root ::= "a" | "bc"`, []string{"a", "bc"}, []string{"b", "abc"}},
		{"class", `root ::= [a-c0-9]+`, []string{"a", "b9c"}, []string{"", "d"}},
		{"negated class", `root ::= [^a]`, []string{"b", "é", "😀"}, []string{"a", "bb"}},
		{"dot", `root ::= .{2}`, []string{"ab", "é€"}, []string{"a", "abc"}},
		{"repeat range", `root ::= "x"{2,4}`, []string{"xx", "xxx", "xxxx"}, []string{"x", "xxxxx"}},
		{"repeat min", `root ::= "x"{2,}`, []string{"xx", "xxxxxxx"}, []string{"x"}},
		{"optional", `root ::= "a" "b"? "c"`, []string{"ac", "abc"}, []string{"abbc"}},
		{"groups and comments", "root ::= ( \"a\" # letters\n | \"b\" )* \"!\" # end", []string{"!", "abba!"}, []string{"abc!"}},
		{"rule refs", "root ::= greet \" \" name\ngreet ::= \"hi\" | \"yo\"\nname ::= [A-Z] [a-z]*", []string{"hi Bob", "yo X"}, []string{"hi bob"}},
		{"recursion", "root ::= \"(\" root \")\" | \"\"", []string{"", "()", "((()))"}, []string{"(()"}},
		{"unicode range", `root ::= [\u00e0-\u00ff\U0001F600-\U0001F64F]+`, []string{"àÿ", "😀🙏"}, []string{"ß", "🚀"}},
		{"escapes", `root ::= "\"\\\n\t" [\x41-\x42]`, []string{"\"\\\n\tA"}, []string{"\"\\\n\tC"}},
		{"multiline group", "root ::= (\n  \"a\"\n  | \"b\"\n)", []string{"a", "b"}, []string{"ab"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := ParseGBNF(c.src)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.yes {
				m := NewMatcher(g, v)
				if !m.AcceptBytes([]byte(s)) || !m.Complete() {
					t.Errorf("%q refused, want accepted", s)
				}
			}
			for _, s := range c.no {
				m := NewMatcher(g, v)
				if m.AcceptBytes([]byte(s)) && m.Complete() {
					t.Errorf("%q accepted, want refused", s)
				}
			}
		})
	}
}

// recognise is an independent recogniser of GBNF over the parsed rules: it works on code points by backtracking
// over sets of end positions, without the byte-level compilation or the automaton.
type recogniser struct {
	g    *parsedGrammar
	s    []rune
	memo map[string]map[int]bool
}

func (r *recogniser) accepts(s string) bool {
	r.s = []rune(s)
	r.memo = map[string]map[int]bool{}
	return r.match(&exRef{name: "root"}, 0)[len(r.s)]
}

func (r *recogniser) match(e expr, i int) map[int]bool {
	out := map[int]bool{}
	switch x := e.(type) {
	case *exLit:
		rs := []rune(x.s)
		if i+len(rs) <= len(r.s) && string(r.s[i:i+len(rs)]) == x.s {
			out[i+len(rs)] = true
		}
	case *exClass:
		if i < len(r.s) {
			for _, rg := range x.ranges {
				if r.s[i] >= rg.lo && r.s[i] <= rg.hi && (r.s[i] < 0xD800 || r.s[i] > 0xDFFF) {
					out[i+1] = true
				}
			}
		}
	case *exRef:
		key := fmt.Sprintf("%s@%d", x.name, i)
		if m, ok := r.memo[key]; ok {
			return m
		}
		r.memo[key] = out // a left-recursive entry sees the empty set; the grammars tested have none
		for k := range r.match(r.g.rules[x.name], i) {
			out[k] = true
		}
	case *exSeq:
		cur := map[int]bool{i: true}
		for _, it := range x.items {
			nxt := map[int]bool{}
			for p := range cur {
				for k := range r.match(it, p) {
					nxt[k] = true
				}
			}
			cur = nxt
		}
		return cur
	case *exAlt:
		for _, a := range x.alts {
			for k := range r.match(a, i) {
				out[k] = true
			}
		}
	case *exRepeat:
		cur := map[int]bool{i: true}
		for n := 0; len(cur) > 0; n++ {
			if n >= x.min {
				for p := range cur {
					out[p] = true
				}
			}
			if x.max >= 0 && n == x.max {
				break
			}
			nxt := map[int]bool{}
			for p := range cur {
				for k := range r.match(x.x, p) {
					if k > p {
						nxt[k] = true
					}
				}
			}
			cur = nxt
		}
	}
	return out
}

// randomGBNF writes a random grammar: rules refer only to later rules, or to any rule after a literal, so there
// is no left recursion.
func randomGBNF(rng *rand.Rand) string {
	nrules := 1 + rng.IntN(4)
	names := []string{"root"}
	for i := 1; i < nrules; i++ {
		names = append(names, fmt.Sprintf("r%d", i))
	}
	lits := []string{"a", "b", "ab", "é", "€", "😀", `\"`, "{", "}", " ", "\\n", "x"}
	var gen func(rule, depth int) string
	gen = func(rule, depth int) string {
		switch k := rng.IntN(10); {
		case k < 3 || depth > 3:
			return `"` + lits[rng.IntN(len(lits))] + `"`
		case k == 3:
			classes := []string{"[a-c]", "[^a-z]", `[\u00e0-\u00e9x]`, "[😀-🙏]", `[^"\\]`, "."}
			return classes[rng.IntN(len(classes))]
		case k == 4 && rule+1 < nrules:
			return names[rule+1+rng.IntN(nrules-rule-1)]
		case k == 5:
			return `"` + lits[rng.IntN(len(lits))] + `" ` + names[rng.IntN(nrules)]
		case k == 6:
			return "( " + gen(rule, depth+1) + " | " + gen(rule, depth+1) + " )"
		case k == 7:
			ops := []string{"*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}"}
			return `"` + lits[rng.IntN(len(lits))] + `"` + ops[rng.IntN(len(ops))]
		default:
			return gen(rule, depth+1) + " " + gen(rule, depth+1)
		}
	}
	var b strings.Builder
	for i, n := range names {
		fmt.Fprintf(&b, "%s ::= %s\n", n, gen(i, 0))
	}
	return b.String()
}

// TestRandomGBNF: every output the automaton lets through is accepted by the independent recogniser, and random
// mutations of it are judged alike by both.
func TestRandomGBNF(t *testing.T) {
	v := byteVocabulary(t)
	rng := rand.New(rand.NewPCG(1, 2))
	grammars := 150
	if testing.Short() {
		grammars = 50
	}
	for gi := range grammars {
		src := randomGBNF(rng)
		g, err := ParseGBNF(src)
		if err != nil {
			var ge *GrammarError
			if errors.As(err, &ge) {
				continue // a generated repetition of a nullable item: refused by design
			}
			t.Fatalf("grammar %d:\n%s\n%v", gi, src, err)
		}
		pg, _ := parseGBNF(src)
		rec := &recogniser{g: pg}
		for range 5 {
			out, ok := walk(t, g, v, rng, 400)
			if !ok {
				continue
			}
			if !utf8.Valid(out) || !rec.accepts(string(out)) {
				t.Fatalf("grammar:\n%s\noutput %q is not accepted by the recogniser", src, out)
			}
			// Mutations: drop, duplicate or replace one code point.
			rs := []rune(string(out))
			if len(rs) == 0 {
				continue
			}
			k := rng.IntN(len(rs))
			muts := []string{
				string(rs[:k]) + string(rs[k+1:]),
				string(rs[:k+1]) + string(rs[k:]),
				string(rs[:k]) + "a" + string(rs[k+1:]),
			}
			for _, mu := range muts {
				m := NewMatcher(g, v)
				got := m.AcceptBytes([]byte(mu)) && m.Complete()
				if want := rec.accepts(mu); got != want {
					t.Fatalf("grammar:\n%s\n%q: automaton %v, recogniser %v", src, mu, got, want)
				}
			}
		}
	}
}

func FuzzParseGBNF(f *testing.F) {
	for _, s := range []string{`root ::= "a"`, "root ::= [^\"]* x\nx ::= \"b\"{1,3}", JSONObjectGBNF, `root ::= (`, `root ::= root`} {
		f.Add(s)
	}
	v := byteVocabulary(f)
	f.Fuzz(func(t *testing.T, src string) {
		g, err := ParseGBNF(src)
		if err != nil {
			return
		}
		m := NewMatcher(g, v)
		allowed := make([]uint64, (v.Size()+63)/64)
		m.Fill(allowed)
		m.AcceptBytes([]byte(src[:min(len(src), 8)]))
	})
}
