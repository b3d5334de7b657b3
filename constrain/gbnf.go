package constrain

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The GBNF syntax (llama.cpp grammars/README.md):
//
//	name ::= alternatives        # a rule; names are letters, digits and '-'
//	a | b                        # alternation
//	"literal"  [a-z0-9]  [^"\\]  # literals and character classes, with \n \r \t \\ \" \xHH \uHHHH \UHHHHHHHH
//	.                            # any character
//	( ... )                      # group; newlines are allowed inside
//	x*  x+  x?  x{m}  x{m,}  x{m,n}
//
// A rule ends at the end of its line (except inside parentheses or right after '|'); '#' starts a comment. The
// rule "root" is the whole output.

// Limits that keep a grammar from any source bounded in memory and compile time.
const (
	maxRepeat      = 10000   // the largest m or n in x{m,n}
	maxGrammarSize = 1 << 20 // grammar positions after expansion of repetitions and character classes
	maxNesting     = 256     // nested groups
)

// expr is a node of a parsed GBNF rule body.
type expr interface{}

type (
	exAlt   struct{ alts []expr }
	exSeq   struct{ items []expr }
	exLit   struct{ s string }           // UTF-8 text
	exClass struct{ ranges []runeRange } // already complemented when negated; sorted, merged
	exRef   struct {
		name      string
		line, col int
	}
	exRepeat struct {
		x        expr
		min, max int // max −1: unbounded
	}
)

type runeRange struct{ lo, hi rune }

// parsedGrammar is the rules of a GBNF text in the order they are defined.
type parsedGrammar struct {
	names []string
	rules map[string]expr
}

type gbnfParser struct {
	src   string
	pos   int
	depth int
}

func (p *gbnfParser) errorf(format string, args ...any) error {
	line, col := 1, 1
	for i := 0; i < p.pos && i < len(p.src); i++ {
		if p.src[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &SyntaxError{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (p *gbnfParser) lineCol() (int, int) {
	e := p.errorf("").(*SyntaxError)
	return e.Line, e.Col
}

// space skips blanks and comments, and newlines when newlineOK.
func (p *gbnfParser) space(newlineOK bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case (c == '\n' || c == '\r') && newlineOK:
			p.pos++
		default:
			return
		}
	}
}

func isWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func (p *gbnfParser) name() string {
	start := p.pos
	for p.pos < len(p.src) && isWordChar(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

func parseGBNF(src string) (*parsedGrammar, error) {
	if !utf8.ValidString(src) {
		return nil, &SyntaxError{Line: 1, Col: 1, Msg: "the grammar is not valid UTF-8"}
	}
	p := &gbnfParser{src: src}
	g := &parsedGrammar{rules: map[string]expr{}}
	for {
		p.space(true)
		if p.pos >= len(p.src) {
			break
		}
		name := p.name()
		if name == "" {
			return nil, p.errorf("expected a rule name, found %q", p.rest())
		}
		if _, dup := g.rules[name]; dup {
			return nil, p.errorf("rule %q is defined twice", name)
		}
		p.space(false)
		if !strings.HasPrefix(p.src[p.pos:], "::=") {
			return nil, p.errorf("expected ::= after rule name %q, found %q", name, p.rest())
		}
		p.pos += 3
		p.space(true)
		body, err := p.alternates(false)
		if err != nil {
			return nil, err
		}
		if p.pos < len(p.src) && p.src[p.pos] != '\n' && p.src[p.pos] != '\r' {
			return nil, p.errorf("unexpected %q in rule %q", p.rest(), name)
		}
		g.names = append(g.names, name)
		g.rules[name] = body
	}
	if len(g.names) == 0 {
		return nil, &GrammarError{Msg: "the grammar defines no rules"}
	}
	return g, nil
}

// rest is a short excerpt of the input at the current position, for messages.
func (p *gbnfParser) rest() string {
	r := p.src[p.pos:]
	if i := strings.IndexByte(r, '\n'); i >= 0 {
		r = r[:i]
	}
	if len(r) > 20 {
		r = r[:20] + "…"
	}
	if r == "" {
		return "end of line"
	}
	return r
}

func (p *gbnfParser) alternates(nested bool) (expr, error) {
	var alts []expr
	for {
		s, err := p.sequence(nested)
		if err != nil {
			return nil, err
		}
		alts = append(alts, s)
		if p.pos < len(p.src) && p.src[p.pos] == '|' {
			p.pos++
			p.space(true)
			continue
		}
		break
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return &exAlt{alts: alts}, nil
}

func (p *gbnfParser) sequence(nested bool) (expr, error) {
	var items []expr
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		var item expr
		switch {
		case c == '"':
			p.pos++
			var b strings.Builder
			for {
				if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
					return nil, p.errorf("unterminated string literal")
				}
				if p.src[p.pos] == '"' {
					p.pos++
					break
				}
				r, err := p.char()
				if err != nil {
					return nil, err
				}
				b.WriteRune(r)
			}
			item = &exLit{s: b.String()}
		case c == '[':
			p.pos++
			cl, err := p.class()
			if err != nil {
				return nil, err
			}
			item = cl
		case c == '.':
			p.pos++
			item = &exClass{ranges: []runeRange{{0, utf8.MaxRune}}}
		case c == '(':
			p.pos++
			if p.depth++; p.depth > maxNesting {
				return nil, p.errorf("groups nested deeper than %d", maxNesting)
			}
			p.space(true)
			inner, err := p.alternates(true)
			if err != nil {
				return nil, err
			}
			p.depth--
			if p.pos >= len(p.src) || p.src[p.pos] != ')' {
				return nil, p.errorf("expected ')', found %q", p.rest())
			}
			p.pos++
			item = inner
		case isWordChar(c):
			line, col := p.lineCol()
			save := p.pos
			name := p.name()
			// At the top level a name followed by ::= starts the next rule (the previous one ended at a newline,
			// so this only happens after a continuation) — refuse it clearly.
			q := p.pos
			for q < len(p.src) && (p.src[q] == ' ' || p.src[q] == '\t') {
				q++
			}
			if strings.HasPrefix(p.src[q:], "::=") {
				p.pos = save
				return nil, p.errorf("rule %q starts inside another rule's body (a missing newline?)", name)
			}
			item = &exRef{name: name, line: line, col: col}
		case c == '<':
			return nil, p.errorf("token references (<...>) are not supported")
		default:
			if len(items) == 0 && c != '|' && c != ')' && c != '\n' && c != '\r' {
				return nil, p.errorf("unexpected %q", p.rest())
			}
			return &exSeq{items: items}, nil
		}
		p.space(nested)
		// Postfix operators.
		for p.pos < len(p.src) {
			op := p.src[p.pos]
			lo, hi := 0, 0
			switch op {
			case '*':
				lo, hi = 0, -1
				p.pos++
			case '+':
				lo, hi = 1, -1
				p.pos++
			case '?':
				lo, hi = 0, 1
				p.pos++
			case '{':
				p.pos++
				var err error
				if lo, hi, err = p.braces(); err != nil {
					return nil, err
				}
			default:
				goto done
			}
			item = &exRepeat{x: item, min: lo, max: hi}
			p.space(nested)
		}
	done:
		items = append(items, item)
	}
	return &exSeq{items: items}, nil
}

// braces parses "m}", "m,}" or "m,n}" after '{'.
func (p *gbnfParser) braces() (int, int, error) {
	num := func() (int, bool, error) {
		p.space(false)
		start := p.pos
		for p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.pos++
		}
		if start == p.pos {
			return 0, false, nil
		}
		v, err := strconv.Atoi(p.src[start:p.pos])
		if err != nil || v > maxRepeat {
			return 0, false, p.errorf("repetition count %s is larger than %d", p.src[start:p.pos], maxRepeat)
		}
		p.space(false)
		return v, true, nil
	}
	lo, ok, err := num()
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		return 0, 0, p.errorf("expected a number after '{', found %q", p.rest())
	}
	hi := lo
	if p.pos < len(p.src) && p.src[p.pos] == ',' {
		p.pos++
		var ok2 bool
		if hi, ok2, err = num(); err != nil {
			return 0, 0, err
		}
		if !ok2 {
			hi = -1
		}
	}
	if p.pos >= len(p.src) || p.src[p.pos] != '}' {
		return 0, 0, p.errorf("expected '}' in repetition, found %q", p.rest())
	}
	p.pos++
	if hi >= 0 && hi < lo {
		return 0, 0, p.errorf("repetition {%d,%d}: the maximum is below the minimum", lo, hi)
	}
	return lo, hi, nil
}

// char reads one character of a literal or class, with escapes.
func (p *gbnfParser) char() (rune, error) {
	if p.src[p.pos] != '\\' {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		p.pos += n
		return r, nil
	}
	p.pos++
	if p.pos >= len(p.src) {
		return 0, p.errorf("escape at end of input")
	}
	c := p.src[p.pos]
	p.pos++
	hex := 0
	switch c {
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case '\\', '"', '[', ']', '-', '^', '/', '\'':
		return rune(c), nil
	case 'x':
		hex = 2
	case 'u':
		hex = 4
	case 'U':
		hex = 8
	default:
		p.pos--
		return 0, p.errorf("unknown escape \\%c", c)
	}
	if p.pos+hex > len(p.src) {
		return 0, p.errorf("escape \\%c needs %d hex digits", c, hex)
	}
	v, err := strconv.ParseUint(p.src[p.pos:p.pos+hex], 16, 32)
	if err != nil {
		return 0, p.errorf("escape \\%c needs %d hex digits, found %q", c, hex, p.src[p.pos:p.pos+hex])
	}
	p.pos += hex
	if v > utf8.MaxRune || (v >= 0xD800 && v <= 0xDFFF) {
		return 0, p.errorf("escape \\%c%0*X is not a Unicode scalar value", c, hex, v)
	}
	return rune(v), nil
}

// class parses a character class after '['.
func (p *gbnfParser) class() (expr, error) {
	neg := false
	if p.pos < len(p.src) && p.src[p.pos] == '^' {
		neg = true
		p.pos++
	}
	var rs []runeRange
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return nil, p.errorf("unterminated character class")
		}
		if p.src[p.pos] == ']' {
			p.pos++
			break
		}
		lo, err := p.char()
		if err != nil {
			return nil, err
		}
		hi := lo
		if p.pos+1 < len(p.src) && p.src[p.pos] == '-' && p.src[p.pos+1] != ']' {
			p.pos++
			if hi, err = p.char(); err != nil {
				return nil, err
			}
			if hi < lo {
				return nil, p.errorf("character range %q-%q is reversed", lo, hi)
			}
		}
		rs = append(rs, runeRange{lo, hi})
	}
	rs = normalizeRanges(rs)
	if neg {
		rs = complementRanges(rs)
	}
	return &exClass{ranges: rs}, nil
}

// normalizeRanges sorts and merges ranges.
func normalizeRanges(rs []runeRange) []runeRange {
	out := append([]runeRange(nil), rs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].lo < out[j-1].lo; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.lo <= merged[n-1].hi+1 {
			merged[n-1].hi = max(merged[n-1].hi, r.hi)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// complementRanges returns the code points not in the sorted, merged rs.
func complementRanges(rs []runeRange) []runeRange {
	var out []runeRange
	next := rune(0)
	for _, r := range rs {
		if r.lo > next {
			out = append(out, runeRange{next, r.lo - 1})
		}
		next = r.hi + 1
	}
	if next <= utf8.MaxRune {
		out = append(out, runeRange{next, utf8.MaxRune})
	}
	return out
}
