package jinja

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type tokKind int

const (
	tText       tokKind = iota // template data
	tVarBegin                  // {{
	tVarEnd                    // }}
	tBlockBegin                // {%
	tBlockEnd                  // %}
	tName
	tString
	tInt
	tFloat
	tOp
)

func (k tokKind) String() string {
	switch k {
	case tText:
		return "template data"
	case tVarBegin:
		return "'{{'"
	case tVarEnd:
		return "'}}'"
	case tBlockBegin:
		return "'{%'"
	case tBlockEnd:
		return "'%}'"
	case tName:
		return "name"
	case tString:
		return "string"
	case tInt:
		return "integer"
	case tFloat:
		return "float"
	}
	return "operator"
}

type token struct {
	kind tokKind
	val  string // text, name, operator, or the unescaped string literal
	pos  int    // byte offset in the normalized source
	ival int64
	fval float64
}

func (t token) describe() string {
	switch t.kind {
	case tName, tOp:
		return strconv.Quote(t.val)
	case tString:
		return "string " + strconv.Quote(t.val)
	case tInt, tFloat:
		return "number " + t.val
	}
	return t.kind.String()
}

// pyIsSpace is Python's str.isspace for one character (what \s, strip() and split() use).
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

func trimLeftPySpace(s string) string  { return strings.TrimLeftFunc(s, pyIsSpace) }
func trimRightPySpace(s string) string { return strings.TrimRightFunc(s, pyIsSpace) }

func allPySpace(s string) bool {
	for _, r := range s {
		if !pyIsSpace(r) {
			return false
		}
	}
	return true
}

// lexer turns the template into a flat token stream: data, tag delimiters and the tokens inside
// tags, applying jinja2's whitespace rules (-, +, trim_blocks, lstrip_blocks) to the data.
type lexer struct {
	src  string
	opt  *Options
	toks []token
	// lineStarting is jinja2's line_starting: whether the text consumed by the previous match
	// ended with a newline (true at the start), which lets lstrip_blocks strip at line start.
	lineStarting bool
}

func lex(src string, opt *Options) ([]token, error) {
	lx := &lexer{src: src, opt: opt, lineStarting: true}
	if err := lx.run(); err != nil {
		return nil, err
	}
	return lx.toks, nil
}

// nextOpen returns the offset of the next "{{", "{%" or "{#" at or after pos, or -1.
func (lx *lexer) nextOpen(pos int) int {
	for {
		i := strings.IndexByte(lx.src[pos:], '{')
		if i < 0 || pos+i+1 >= len(lx.src) {
			return -1
		}
		j := pos + i
		switch lx.src[j+1] {
		case '{', '%', '#':
			return j
		}
		pos = j + 1
	}
}

func (lx *lexer) emitText(text string, pos int) {
	if text != "" {
		lx.toks = append(lx.toks, token{kind: tText, val: text, pos: pos})
	}
}

// adjustText applies the opening tag's whitespace control to the data before it.
func (lx *lexer) adjustText(text string, kind, sign byte) string {
	switch {
	case sign == '-':
		return trimRightPySpace(text)
	case sign != '+' && lx.opt.LstripBlocks && kind != '{':
		l := strings.LastIndexByte(text, '\n') + 1
		if l > 0 || lx.lineStarting {
			if tail := text[l:]; tail != "" && allPySpace(tail) {
				return text[:l]
			}
		}
	}
	return text
}

// afterClose consumes the whitespace a closing delimiter takes with it and returns the new
// position: with "-" all whitespace, with trim_blocks (block and comment tags, not "+") one
// newline.
func (lx *lexer) afterClose(pos int, sign byte, block bool) int {
	start := pos
	switch {
	case sign == '-':
		rest := lx.src[pos:]
		pos += len(rest) - len(trimLeftPySpace(rest))
	case sign != '+' && block && lx.opt.TrimBlocks && pos < len(lx.src) && lx.src[pos] == '\n':
		pos++
	}
	// jinja2 sets line_starting from the whole match, which ends at the delimiter or at the
	// whitespace consumed with it.
	lx.lineStarting = pos > start && lx.src[pos-1] == '\n'
	return pos
}

func (lx *lexer) run() error {
	src := lx.src
	pos := 0
	for pos < len(src) {
		open := lx.nextOpen(pos)
		if open < 0 {
			lx.emitText(src[pos:], pos)
			return nil
		}
		kind := src[open+1]
		after := open + 2
		var sign byte
		if after < len(src) && (src[after] == '-' || src[after] == '+') {
			sign = src[after]
			after++
		}
		text := lx.adjustText(src[pos:open], kind, sign)
		lx.emitText(text, pos)
		lx.lineStarting = false

		switch kind {
		case '#':
			end := strings.Index(src[after:], "#}")
			if end < 0 {
				return errAt(open, ErrSyntax, "unclosed comment: missing '#}'")
			}
			end += after
			var closeSign byte
			if end > after && (src[end-1] == '-' || src[end-1] == '+') {
				closeSign = src[end-1]
			}
			pos = lx.afterClose(end+2, closeSign, true)
		case '%':
			if p, ok, err := lx.tryRaw(open, after); err != nil {
				return err
			} else if ok {
				pos = p
				continue
			}
			lx.toks = append(lx.toks, token{kind: tBlockBegin, val: "{%", pos: open})
			p, err := lx.lexTag(after, '%')
			if err != nil {
				return err
			}
			pos = p
		default:
			lx.toks = append(lx.toks, token{kind: tVarBegin, val: "{{", pos: open})
			p, err := lx.lexTag(after, '}')
			if err != nil {
				return err
			}
			pos = p
		}
	}
	return nil
}

// tryRaw handles "{% raw %}…{% endraw %}": the content is data, untouched.
func (lx *lexer) tryRaw(open, after int) (int, bool, error) {
	src := lx.src
	p := after
	for p < len(src) && pyIsSpaceByte(src[p]) {
		p++
	}
	if !strings.HasPrefix(src[p:], "raw") {
		return 0, false, nil
	}
	p += 3
	if p < len(src) && isNameByte(src[p]) {
		return 0, false, nil
	}
	for p < len(src) && pyIsSpaceByte(src[p]) {
		p++
	}
	var sign byte
	if p < len(src) && (src[p] == '-' || src[p] == '+') {
		sign = src[p]
		p++
	}
	if !strings.HasPrefix(src[p:], "%}") {
		return 0, false, nil
	}
	p += 2
	if sign == '-' {
		rest := src[p:]
		p += len(rest) - len(trimLeftPySpace(rest))
	}
	// Find "{%[-+]? endraw [-+]?%}".
	for q := p; ; {
		i := strings.Index(src[q:], "{%")
		if i < 0 {
			return 0, false, errAt(open, ErrSyntax, "unclosed raw block: missing '{%% endraw %%}'")
		}
		start := q + i
		e := start + 2
		var openSign byte
		if e < len(src) && (src[e] == '-' || src[e] == '+') {
			openSign = src[e]
			e++
		}
		for e < len(src) && pyIsSpaceByte(src[e]) {
			e++
		}
		if !strings.HasPrefix(src[e:], "endraw") {
			q = start + 2
			continue
		}
		e += len("endraw")
		for e < len(src) && pyIsSpaceByte(src[e]) {
			e++
		}
		var closeSign byte
		if e < len(src) && (src[e] == '-' || src[e] == '+') {
			closeSign = src[e]
			e++
		}
		if !strings.HasPrefix(src[e:], "%}") {
			q = start + 2
			continue
		}
		lx.lineStarting = false
		lx.emitText(lx.adjustText(src[p:start], '%', openSign), p)
		return lx.afterClose(e+2, closeSign, true), true, nil
	}
}

func pyIsSpaceByte(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)
}

func isNameByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= utf8.RuneSelf
}

// operators, longest first.
var operators = []string{"//", "**", "==", "!=", "<=", ">=",
	"+", "-", "*", "/", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"}

// lexTag lexes the inside of a tag starting at pos until its closer ("}}" for close == '}',
// "%}" for '%'), which is recognised only outside brackets, and returns the position after it.
func (lx *lexer) lexTag(pos int, close byte) (int, error) {
	src := lx.src
	depth := 0
	tagStart := pos - 2
	for {
		for pos < len(src) {
			r, n := utf8.DecodeRuneInString(src[pos:])
			if !pyIsSpace(r) {
				break
			}
			pos += n
		}
		if pos >= len(src) {
			if close == '}' {
				return 0, errAt(tagStart, ErrSyntax, "unclosed variable tag: missing '}}'")
			}
			return 0, errAt(tagStart, ErrSyntax, "unclosed block tag: missing '%%}'")
		}
		if depth == 0 {
			if p, ok := lx.closer(pos, close); ok {
				return p, nil
			}
		}
		c := src[pos]
		switch {
		case c == '\'' || c == '"':
			s, end, err := lexString(src, pos)
			if err != nil {
				return 0, err
			}
			lx.toks = append(lx.toks, token{kind: tString, val: s, pos: pos})
			pos = end
		case c >= '0' && c <= '9':
			afterDot := len(lx.toks) > 0 && lx.toks[len(lx.toks)-1].kind == tOp && lx.toks[len(lx.toks)-1].val == "."
			tok, end, err := lexNumber(src, pos, afterDot)
			if err != nil {
				return 0, err
			}
			lx.toks = append(lx.toks, tok)
			pos = end
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= utf8.RuneSelf:
			r, _ := utf8.DecodeRuneInString(src[pos:])
			if c >= utf8.RuneSelf && !unicode.IsLetter(r) {
				return 0, errAt(pos, ErrSyntax, "unexpected character %q", r)
			}
			end := pos
			for end < len(src) {
				r, n := utf8.DecodeRuneInString(src[end:])
				if r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
					break
				}
				end += n
			}
			lx.toks = append(lx.toks, token{kind: tName, val: src[pos:end], pos: pos})
			pos = end
		default:
			op := ""
			for _, o := range operators {
				if strings.HasPrefix(src[pos:], o) {
					op = o
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(src[pos:])
				return 0, errAt(pos, ErrSyntax, "unexpected character %q", r)
			}
			switch op {
			case "(", "[", "{":
				depth++
			case ")", "]", "}":
				if depth == 0 {
					return 0, errAt(pos, ErrSyntax, "unexpected %q", op)
				}
				depth--
			}
			lx.toks = append(lx.toks, token{kind: tOp, val: op, pos: pos})
			pos += len(op)
		}
	}
}

// closer recognises the end of a tag at pos and appends its token.
func (lx *lexer) closer(pos int, close byte) (int, bool) {
	src := lx.src
	var sign byte
	p := pos
	if src[p] == '-' || src[p] == '+' {
		sign = src[p]
		p++
	}
	if p+1 >= len(src) || src[p] != close || src[p+1] != '}' {
		return 0, false
	}
	if close == '}' && sign == '+' {
		return 0, false // "+}}" is not a closer; "+" is an operator there
	}
	kind := tVarEnd
	if close == '%' {
		kind = tBlockEnd
	}
	lx.toks = append(lx.toks, token{kind: kind, val: src[pos : p+2], pos: pos})
	return lx.afterClose(p+2, sign, close == '%'), true
}

// lexString reads a quoted literal at pos and returns its value (Python escapes processed, as
// jinja2 does with "unicode-escape") and the position after it.
func lexString(src string, pos int) (string, int, error) {
	q := src[pos]
	var b strings.Builder
	i := pos + 1
	for i < len(src) {
		c := src[i]
		switch {
		case c == q:
			return b.String(), i + 1, nil
		case c == '\\' && i+1 < len(src):
			n, err := unescape(&b, src, i)
			if err != nil {
				return "", 0, err
			}
			i = n
		default:
			b.WriteByte(c)
			i++
		}
	}
	return "", 0, errAt(pos, ErrSyntax, "unterminated string literal")
}

// simpleEscapes are Python's one-character escapes; a backslash-newline is a line continuation.
var simpleEscapes = map[byte]string{'\\': "\\", '\'': "'", '"': "\"", 'n': "\n", 't': "\t", 'r': "\r",
	'a': "\a", 'b': "\b", 'f': "\f", 'v': "\v", '\n': ""}

// hexEscapeLen is the digit count of Python's \x, \u and \U escapes.
var hexEscapeLen = map[byte]int{'x': 2, 'u': 4, 'U': 8}

// unescape writes the Python escape sequence at src[i] ('\\') and returns the position after it.
func unescape(b *strings.Builder, src string, i int) (int, error) {
	c := src[i+1]
	if s, ok := simpleEscapes[c]; ok {
		b.WriteString(s)
		return i + 2, nil
	}
	if n, ok := hexEscapeLen[c]; ok {
		if i+2+n > len(src) {
			return 0, errAt(i, ErrSyntax, "truncated \\%c escape", c)
		}
		v, err := strconv.ParseUint(src[i+2:i+2+n], 16, 32)
		if err != nil || v > unicode.MaxRune {
			return 0, errAt(i, ErrSyntax, "invalid \\%c escape %q", c, src[i:i+2+n])
		}
		b.WriteRune(rune(v))
		return i + 2 + n, nil
	}
	if c >= '0' && c <= '7' {
		j := i + 1
		v := 0
		for j < len(src) && j < i+4 && src[j] >= '0' && src[j] <= '7' {
			v = v*8 + int(src[j]-'0')
			j++
		}
		b.WriteRune(rune(v))
		return j, nil
	}
	// Unknown escapes stay as written, as in Python.
	b.WriteByte('\\')
	return i + 1, nil
}

// lexNumber reads an integer or float literal (jinja2: underscores allowed, 0x/0o/0b integers).
// After a '.', only an integer is read so that "x.0.1" is two subscripts.
func lexNumber(src string, pos int, intOnly bool) (token, int, error) {
	i := pos
	if src[i] == '0' && i+1 < len(src) && strings.ContainsRune("xXoObB", rune(src[i+1])) {
		base := map[byte]int{'x': 16, 'X': 16, 'o': 8, 'O': 8, 'b': 2, 'B': 2}[src[i+1]]
		j := i + 2
		for j < len(src) && (isHexByte(src[j]) || src[j] == '_') {
			j++
		}
		v, err := strconv.ParseInt(strings.ReplaceAll(src[i+2:j], "_", ""), base, 64)
		if err != nil {
			return token{}, 0, errAt(pos, ErrSyntax, "invalid integer literal %q", src[i:j])
		}
		return token{kind: tInt, val: src[i:j], pos: pos, ival: v}, j, nil
	}
	digits := func(j int) int {
		for j < len(src) && ((src[j] >= '0' && src[j] <= '9') || (src[j] == '_' && j+1 < len(src) && src[j+1] >= '0' && src[j+1] <= '9')) {
			j++
		}
		return j
	}
	j := digits(i)
	isFloat := false
	if !intOnly && j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
		j = digits(j + 1)
		isFloat = true
	}
	if !intOnly && j < len(src) && (src[j] == 'e' || src[j] == 'E') {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && src[k] >= '0' && src[k] <= '9' {
			j = digits(k)
			isFloat = true
		}
	}
	lit := strings.ReplaceAll(src[i:j], "_", "")
	if isFloat {
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil && !isRangeErr(err) {
			return token{}, 0, errAt(pos, ErrSyntax, "invalid float literal %q", src[i:j])
		}
		return token{kind: tFloat, val: src[i:j], pos: pos, fval: f}, j, nil
	}
	v, err := strconv.ParseInt(lit, 10, 64)
	if err != nil {
		return token{}, 0, errAt(pos, ErrSyntax, "integer literal %q out of the 64-bit range", src[i:j])
	}
	return token{kind: tInt, val: src[i:j], pos: pos, ival: v}, j, nil
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func isHexByte(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
