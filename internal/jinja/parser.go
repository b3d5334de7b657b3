package jinja

import (
	"strings"
)

// node is a statement of the template body.
type node interface{ position() int }

// expr is an expression.
type expr interface{ position() int }

type at struct{ pos int }

func (a at) position() int { return a.pos }

// Statements.
type (
	textNode struct {
		at
		text string
	}
	outputNode struct {
		at
		x expr
	}
	ifNode struct {
		at
		conds    []expr
		bodies   [][]node
		elseBody []node
	}
	forNode struct {
		at
		targets  []string // one name, or several for unpacking
		tuple    bool     // targets came as a tuple (even of one name)
		iter     expr
		filter   expr // inline "if", may be nil
		body     []node
		elseBody []node
	}
	setNode struct {
		at
		targets []string // names; for a namespace attribute: {ns, attr} with attr set
		attr    string   // "ns.attr" assignment when non-empty: targets[0] is the namespace
		tuple   bool
		x       expr
	}
	setBlockNode struct {
		at
		name    string
		filters []*filterExpr // applied to the rendered body, input replaced at run time
		body    []node
	}
	macroNode struct {
		at
		name     string
		params   []string
		defaults []expr // per param, nil when required
		body     []node
	}
	withNode struct {
		at
		names []string
		exprs []expr
		body  []node
	}
	filterBlockNode struct {
		at
		filters []*filterExpr
		body    []node
	}
	loopControlNode struct {
		at
		brk bool
	}
	// generationNode is transformers' {% generation %} block (AssistantTracker): it marks
	// assistant text for masks and renders its body unchanged.
	generationNode struct {
		at
		body []node
	}
)

// Expressions.
type (
	constExpr struct {
		at
		v any
	}
	nameExpr struct {
		at
		name string
	}
	listExpr struct {
		at
		items []expr
		tuple bool
	}
	dictExpr struct {
		at
		keys, vals []expr
	}
	getattrExpr struct {
		at
		obj  expr
		name string
	}
	getitemExpr struct {
		at
		obj, key expr
	}
	sliceExpr struct {
		at
		obj               expr
		start, stop, step expr // nil when omitted
	}
	callExpr struct {
		at
		fn     expr
		args   []expr
		kwName []string
		kwVal  []expr
	}
	filterExpr struct {
		at
		x      expr // nil inside a filter block / set block, supplied at run time
		name   string
		args   []expr
		kwName []string
		kwVal  []expr
	}
	testExpr struct {
		at
		x      expr
		name   string
		args   []expr
		kwName []string
		kwVal  []expr
	}
	unaryExpr struct {
		at
		op string // "not", "-", "+"
		x  expr
	}
	binaryExpr struct {
		at
		op   string
		l, r expr
	}
	compareExpr struct {
		at
		first expr
		ops   []string // "==", "!=", "<", "<=", ">", ">=", "in", "notin"
		rest  []expr
	}
	condExpr struct {
		at
		cond, yes, no expr // no may be nil (undefined)
	}
)

type parser struct {
	toks       []token
	i          int
	depth      int
	maxNesting int
}

func (p *parser) peek() token {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	end := 0
	if len(p.toks) > 0 {
		end = p.toks[len(p.toks)-1].pos
	}
	return token{kind: -1, pos: end}
}

func (p *parser) next() token {
	t := p.peek()
	if p.i < len(p.toks) {
		p.i++
	}
	return t
}

func (p *parser) atEnd() bool { return p.i >= len(p.toks) }

func (p *parser) isOp(op string) bool {
	t := p.peek()
	return t.kind == tOp && t.val == op
}

func (p *parser) isName(name string) bool {
	t := p.peek()
	return t.kind == tName && t.val == name
}

func (p *parser) expectOp(op string) error {
	t := p.peek()
	if t.kind != tOp || t.val != op {
		return p.unexpected(t, "'"+op+"'")
	}
	p.i++
	return nil
}

func (p *parser) expectName() (token, error) {
	t := p.peek()
	if t.kind != tName {
		return t, p.unexpected(t, "a name")
	}
	p.i++
	return t, nil
}

func (p *parser) expectKind(k tokKind) error {
	t := p.peek()
	if t.kind != k {
		return p.unexpected(t, k.String())
	}
	p.i++
	return nil
}

func (p *parser) unexpected(t token, want string) error {
	if t.kind == -1 {
		return errAt(t.pos, ErrSyntax, "unexpected end of template, expected %s", want)
	}
	return errAt(t.pos, ErrSyntax, "unexpected %s, expected %s", t.describe(), want)
}

func (p *parser) enter(pos int) error {
	p.depth++
	if p.depth > p.maxNesting {
		return errAt(pos, ErrLimit, "template nesting deeper than %d", p.maxNesting)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

func (p *parser) parseTemplate() ([]node, error) {
	body, end, err := p.parseBody(nil)
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, errAt(p.peek().pos, ErrSyntax, "unexpected '%s' tag", end)
	}
	return body, nil
}

// parseBody parses statements until a block tag whose name is in stops (returned, with the
// parser positioned after the name) or the end of the template ("" returned).
func (p *parser) parseBody(stops []string) ([]node, string, error) {
	var body []node
	for !p.atEnd() {
		t := p.peek()
		switch t.kind {
		case tText:
			p.i++
			body = append(body, &textNode{at{t.pos}, t.val})
		case tVarBegin:
			p.i++
			x, err := p.parseExpr()
			if err != nil {
				return nil, "", err
			}
			if err := p.expectKind(tVarEnd); err != nil {
				return nil, "", err
			}
			body = append(body, &outputNode{at{t.pos}, x})
		case tBlockBegin:
			p.i++
			name := p.peek()
			if name.kind != tName {
				return nil, "", p.unexpected(name, "a statement name")
			}
			for _, s := range stops {
				if name.val == s {
					p.i++
					return body, s, nil
				}
			}
			n, err := p.parseStatement()
			if err != nil {
				return nil, "", err
			}
			if n != nil {
				body = append(body, n)
			}
		default:
			return nil, "", p.unexpected(t, "template data or a tag")
		}
	}
	if len(stops) > 0 {
		return nil, "", errAt(p.peek().pos, ErrSyntax, "unexpected end of template, expected '%s' tag", strings.Join(stops, "' or '"))
	}
	return body, "", nil
}

func (p *parser) endTag() error { return p.expectKind(tBlockEnd) }

// parseStatement parses the tag whose name is the current token.
func (p *parser) parseStatement() (node, error) {
	t := p.next()
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	defer p.leave()
	switch t.val {
	case "if":
		return p.parseIf(t)
	case "for":
		return p.parseFor(t)
	case "set":
		return p.parseSet(t)
	case "macro":
		return p.parseMacro(t)
	case "with":
		return p.parseWith(t)
	case "filter":
		return p.parseFilterBlock(t)
	case "break", "continue":
		if err := p.endTag(); err != nil {
			return nil, err
		}
		return &loopControlNode{at{t.pos}, t.val == "break"}, nil
	case "generation":
		if err := p.endTag(); err != nil {
			return nil, err
		}
		body, _, err := p.parseBody([]string{"endgeneration"})
		if err != nil {
			return nil, err
		}
		if err := p.endTag(); err != nil {
			return nil, err
		}
		return &generationNode{at{t.pos}, body}, nil
	case "extends", "block", "include", "import", "from", "call", "do", "trans", "autoescape":
		return nil, errAt(t.pos, ErrUnsupported, "the '%s' tag is not supported", t.val)
	}
	return nil, errAt(t.pos, ErrSyntax, "unknown tag '%s'", t.val)
}

func (p *parser) parseIf(t token) (node, error) {
	n := &ifNode{at: at{t.pos}}
	for {
		cond, err := p.parseTupleOrExpr()
		if err != nil {
			return nil, err
		}
		if err := p.endTag(); err != nil {
			return nil, err
		}
		body, end, err := p.parseBody([]string{"elif", "else", "endif"})
		if err != nil {
			return nil, err
		}
		n.conds = append(n.conds, cond)
		n.bodies = append(n.bodies, body)
		switch end {
		case "elif":
			continue
		case "else":
			if err := p.endTag(); err != nil {
				return nil, err
			}
			n.elseBody, _, err = p.parseBody([]string{"endif"})
			if err != nil {
				return nil, err
			}
		}
		return n, p.endTag()
	}
}

func (p *parser) parseFor(t token) (node, error) {
	n := &forNode{at: at{t.pos}}
	paren := false
	if p.isOp("(") {
		p.i++
		paren = true
	}
	for {
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		n.targets = append(n.targets, name.val)
		if !p.isOp(",") {
			break
		}
		p.i++
		n.tuple = true
		if paren && p.isOp(")") {
			break
		}
	}
	if paren {
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
		n.tuple = true
	}
	if !p.isName("in") {
		return nil, p.unexpected(p.peek(), "'in'")
	}
	p.i++
	iter, err := p.parseTupleOrExprNoCond()
	if err != nil {
		return nil, err
	}
	n.iter = iter
	if p.isName("if") {
		p.i++
		if n.filter, err = p.parseExpr(); err != nil {
			return nil, err
		}
	}
	if p.isName("recursive") {
		return nil, errAt(p.peek().pos, ErrUnsupported, "recursive for loops are not supported")
	}
	if err := p.endTag(); err != nil {
		return nil, err
	}
	body, end, err := p.parseBody([]string{"else", "endfor"})
	if err != nil {
		return nil, err
	}
	n.body = body
	if end == "else" {
		if err := p.endTag(); err != nil {
			return nil, err
		}
		if n.elseBody, _, err = p.parseBody([]string{"endfor"}); err != nil {
			return nil, err
		}
	}
	return n, p.endTag()
}

func (p *parser) parseSet(t token) (node, error) {
	first, err := p.expectName()
	if err != nil {
		return nil, err
	}
	if p.isOp(".") {
		p.i++
		attr, err := p.expectName()
		if err != nil {
			return nil, err
		}
		if err := p.expectOp("="); err != nil {
			return nil, err
		}
		x, err := p.parseTupleOrExpr()
		if err != nil {
			return nil, err
		}
		return &setNode{at: at{t.pos}, targets: []string{first.val}, attr: attr.val, x: x}, p.endTag()
	}
	n := &setNode{at: at{t.pos}, targets: []string{first.val}}
	for p.isOp(",") {
		p.i++
		n.tuple = true
		if p.isOp("=") {
			break
		}
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		n.targets = append(n.targets, name.val)
	}
	if p.isOp("=") {
		p.i++
		if n.x, err = p.parseTupleOrExpr(); err != nil {
			return nil, err
		}
		return n, p.endTag()
	}
	if n.tuple {
		return nil, p.unexpected(p.peek(), "'='")
	}
	// Block set: {% set name | filters %}…{% endset %}
	blk := &setBlockNode{at: at{t.pos}, name: first.val}
	for p.isOp("|") {
		p.i++
		f, err := p.parseFilterCall(nil)
		if err != nil {
			return nil, err
		}
		blk.filters = append(blk.filters, f)
	}
	if err := p.endTag(); err != nil {
		return nil, err
	}
	if blk.body, _, err = p.parseBody([]string{"endset"}); err != nil {
		return nil, err
	}
	return blk, p.endTag()
}

func (p *parser) parseMacro(t token) (node, error) {
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	n := &macroNode{at: at{t.pos}, name: name.val}
	if err := p.expectOp("("); err != nil {
		return nil, err
	}
	for !p.isOp(")") {
		if len(n.params) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
			if p.isOp(")") {
				break
			}
		}
		param, err := p.expectName()
		if err != nil {
			return nil, err
		}
		var def expr
		if p.isOp("=") {
			p.i++
			if def, err = p.parseExpr(); err != nil {
				return nil, err
			}
		} else if len(n.defaults) > 0 && n.defaults[len(n.defaults)-1] != nil {
			return nil, errAt(param.pos, ErrSyntax, "non-default argument %q follows default argument", param.val)
		}
		n.params = append(n.params, param.val)
		n.defaults = append(n.defaults, def)
	}
	p.i++
	if err := p.endTag(); err != nil {
		return nil, err
	}
	if n.body, _, err = p.parseBody([]string{"endmacro"}); err != nil {
		return nil, err
	}
	if p.peek().kind == tName { // {% endmacro name %}
		p.i++
	}
	return n, p.endTag()
}

func (p *parser) parseWith(t token) (node, error) {
	n := &withNode{at: at{t.pos}}
	for p.peek().kind != tBlockEnd {
		if len(n.names) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
		}
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		if err := p.expectOp("="); err != nil {
			return nil, err
		}
		x, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		n.names = append(n.names, name.val)
		n.exprs = append(n.exprs, x)
	}
	if err := p.endTag(); err != nil {
		return nil, err
	}
	var err error
	if n.body, _, err = p.parseBody([]string{"endwith"}); err != nil {
		return nil, err
	}
	return n, p.endTag()
}

func (p *parser) parseFilterBlock(t token) (node, error) {
	n := &filterBlockNode{at: at{t.pos}}
	for {
		f, err := p.parseFilterCall(nil)
		if err != nil {
			return nil, err
		}
		n.filters = append(n.filters, f)
		if !p.isOp("|") {
			break
		}
		p.i++
	}
	if err := p.endTag(); err != nil {
		return nil, err
	}
	var err error
	if n.body, _, err = p.parseBody([]string{"endfilter"}); err != nil {
		return nil, err
	}
	return n, p.endTag()
}

// parseTupleOrExpr parses an expression, or a bare tuple "a, b" (jinja2's parse_tuple).
func (p *parser) parseTupleOrExpr() (expr, error) { return p.parseTuple(true) }

// parseTupleOrExprNoCond is parseTupleOrExpr without conditional expressions (for loops'
// iterables, where "if" starts the loop filter).
func (p *parser) parseTupleOrExprNoCond() (expr, error) { return p.parseTuple(false) }

func (p *parser) parseTuple(withCond bool) (expr, error) {
	pos := p.peek().pos
	parse := p.parseExpr
	if !withCond {
		parse = p.parseOr
	}
	first, err := parse()
	if err != nil {
		return nil, err
	}
	if !p.isOp(",") {
		return first, nil
	}
	items := []expr{first}
	for p.isOp(",") {
		p.i++
		t := p.peek()
		if t.kind == tBlockEnd || t.kind == tVarEnd || (t.kind == tName && t.val == "if") || (t.kind == tOp && t.val == ")") {
			break
		}
		x, err := parse()
		if err != nil {
			return nil, err
		}
		items = append(items, x)
	}
	return &listExpr{at{pos}, items, true}, nil
}

func (p *parser) parseExpr() (expr, error) {
	t := p.peek()
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	defer p.leave()
	x, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	for p.isName("if") {
		ifPos := p.next().pos
		cond, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		var no expr
		if p.isName("else") {
			p.i++
			if no, err = p.parseExpr(); err != nil {
				return nil, err
			}
		}
		x = &condExpr{at{ifPos}, cond, x, no}
	}
	return x, nil
}

func (p *parser) parseOr() (expr, error) {
	l, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.isName("or") {
		t := p.next()
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, "or", l, r}
	}
	return l, nil
}

func (p *parser) parseAnd() (expr, error) {
	l, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.isName("and") {
		t := p.next()
		r, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, "and", l, r}
	}
	return l, nil
}

func (p *parser) parseNot() (expr, error) {
	if p.isName("not") {
		t := p.next()
		if err := p.enter(t.pos); err != nil {
			return nil, err
		}
		defer p.leave()
		x, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		return &unaryExpr{at{t.pos}, "not", x}, nil
	}
	return p.parseCompare()
}

func (p *parser) parseCompare() (expr, error) {
	pos := p.peek().pos
	first, err := p.parseMath1()
	if err != nil {
		return nil, err
	}
	c := &compareExpr{at: at{pos}, first: first}
	for {
		t := p.peek()
		var op string
		switch {
		case t.kind == tOp && (t.val == "==" || t.val == "!=" || t.val == "<" || t.val == "<=" || t.val == ">" || t.val == ">="):
			op = t.val
			p.i++
		case t.kind == tName && t.val == "in":
			op = "in"
			p.i++
		case t.kind == tName && t.val == "not" && p.i+1 < len(p.toks) && p.toks[p.i+1].kind == tName && p.toks[p.i+1].val == "in":
			op = "notin"
			p.i += 2
		}
		if op == "" {
			break
		}
		r, err := p.parseMath1()
		if err != nil {
			return nil, err
		}
		c.ops = append(c.ops, op)
		c.rest = append(c.rest, r)
	}
	if len(c.ops) == 0 {
		return first, nil
	}
	return c, nil
}

func (p *parser) parseMath1() (expr, error) {
	l, err := p.parseConcat()
	if err != nil {
		return nil, err
	}
	for p.isOp("+") || p.isOp("-") {
		t := p.next()
		r, err := p.parseConcat()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, t.val, l, r}
	}
	return l, nil
}

func (p *parser) parseConcat() (expr, error) {
	l, err := p.parseMath2()
	if err != nil {
		return nil, err
	}
	for p.isOp("~") {
		t := p.next()
		r, err := p.parseMath2()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, "~", l, r}
	}
	return l, nil
}

func (p *parser) parseMath2() (expr, error) {
	l, err := p.parsePow()
	if err != nil {
		return nil, err
	}
	for p.isOp("*") || p.isOp("/") || p.isOp("//") || p.isOp("%") {
		t := p.next()
		r, err := p.parsePow()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, t.val, l, r}
	}
	return l, nil
}

func (p *parser) parsePow() (expr, error) {
	l, err := p.parseUnary(true)
	if err != nil {
		return nil, err
	}
	for p.isOp("**") {
		t := p.next()
		r, err := p.parseUnary(true)
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{at{t.pos}, "**", l, r}
	}
	return l, nil
}

func (p *parser) parseUnary(withFilter bool) (expr, error) {
	t := p.peek()
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	defer p.leave()
	var x expr
	var err error
	if t.kind == tOp && (t.val == "-" || t.val == "+") {
		p.i++
		inner, err := p.parseUnary(false)
		if err != nil {
			return nil, err
		}
		x = &unaryExpr{at{t.pos}, t.val, inner}
	} else if x, err = p.parsePrimary(); err != nil {
		return nil, err
	}
	if x, err = p.parsePostfix(x); err != nil {
		return nil, err
	}
	if withFilter {
		return p.parseFilterExpr(x)
	}
	return x, nil
}

func (p *parser) parsePrimary() (expr, error) {
	t := p.peek()
	switch t.kind {
	case tName:
		p.i++
		switch t.val {
		case "true", "True":
			return &constExpr{at{t.pos}, true}, nil
		case "false", "False":
			return &constExpr{at{t.pos}, false}, nil
		case "none", "None":
			return &constExpr{at{t.pos}, nil}, nil
		}
		return &nameExpr{at{t.pos}, t.val}, nil
	case tString:
		p.i++
		s := t.val
		for p.peek().kind == tString { // adjacent literals concatenate
			s += p.next().val
		}
		return &constExpr{at{t.pos}, s}, nil
	case tInt:
		p.i++
		return &constExpr{at{t.pos}, t.ival}, nil
	case tFloat:
		p.i++
		return &constExpr{at{t.pos}, t.fval}, nil
	case tOp:
		switch t.val {
		case "(":
			p.i++
			if p.isOp(")") {
				p.i++
				return &listExpr{at{t.pos}, nil, true}, nil
			}
			x, err := p.parseTupleOrExpr()
			if err != nil {
				return nil, err
			}
			return x, p.expectOp(")")
		case "[":
			p.i++
			items, err := p.parseItems("]")
			if err != nil {
				return nil, err
			}
			return &listExpr{at{t.pos}, items, false}, nil
		case "{":
			p.i++
			d := &dictExpr{at: at{t.pos}}
			for !p.isOp("}") {
				if len(d.keys) > 0 {
					if err := p.expectOp(","); err != nil {
						return nil, err
					}
					if p.isOp("}") {
						break
					}
				}
				k, err := p.parseExpr()
				if err != nil {
					return nil, err
				}
				if err := p.expectOp(":"); err != nil {
					return nil, err
				}
				v, err := p.parseExpr()
				if err != nil {
					return nil, err
				}
				d.keys = append(d.keys, k)
				d.vals = append(d.vals, v)
			}
			p.i++
			return d, nil
		}
	}
	return nil, p.unexpected(t, "an expression")
}

// parseItems parses comma-separated expressions up to the closing op (consumed).
func (p *parser) parseItems(closing string) ([]expr, error) {
	var items []expr
	for !p.isOp(closing) {
		if len(items) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
			if p.isOp(closing) {
				break
			}
		}
		x, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		items = append(items, x)
	}
	p.i++
	return items, nil
}

func (p *parser) parsePostfix(x expr) (expr, error) {
	for {
		t := p.peek()
		if t.kind != tOp {
			return x, nil
		}
		var err error
		switch t.val {
		case ".":
			p.i++
			a := p.next()
			switch a.kind {
			case tName:
				x = &getattrExpr{at{t.pos}, x, a.val}
			case tInt:
				x = &getitemExpr{at{t.pos}, x, &constExpr{at{a.pos}, a.ival}}
			default:
				return nil, p.unexpected(a, "an attribute name")
			}
		case "[":
			p.i++
			if x, err = p.parseSubscript(x, t.pos); err != nil {
				return nil, err
			}
		case "(":
			if x, err = p.parseCall(x); err != nil {
				return nil, err
			}
		default:
			return x, nil
		}
	}
}

func (p *parser) parseSubscript(obj expr, pos int) (expr, error) {
	// jinja2's parse_subscript: comma-separated items (a tuple key when not exactly one), each an
	// expression or a slice.
	var items []expr
	var slice *sliceExpr
	for !p.isOp("]") {
		if len(items) > 0 || slice != nil {
			if err := p.expectOp(","); err != nil {
				return nil, err
			}
			if p.isOp("]") {
				break
			}
		}
		item, sl, err := p.parseSubscribed(obj, pos)
		if err != nil {
			return nil, err
		}
		if sl != nil {
			if slice != nil || len(items) > 0 {
				return nil, errAt(pos, ErrUnsupported, "slices inside tuple subscripts are not supported")
			}
			slice = sl
			continue
		}
		if slice != nil {
			return nil, errAt(pos, ErrUnsupported, "slices inside tuple subscripts are not supported")
		}
		items = append(items, item)
	}
	p.i++
	switch {
	case slice != nil:
		return slice, nil
	case len(items) == 1:
		return &getitemExpr{at{pos}, obj, items[0]}, nil
	}
	return &getitemExpr{at{pos}, obj, &listExpr{at{pos}, items, true}}, nil
}

// parseSubscribed parses one subscript item: an expression, or a slice start:stop:step.
func (p *parser) parseSubscribed(obj expr, pos int) (expr, *sliceExpr, error) {
	var parts [3]expr
	var err error
	if !p.isOp(":") {
		if parts[0], err = p.parseExpr(); err != nil {
			return nil, nil, err
		}
		if !p.isOp(":") {
			return parts[0], nil, nil
		}
	}
	p.i++ // first ':'
	if !p.isOp("]") && !p.isOp(",") && !p.isOp(":") {
		if parts[1], err = p.parseExpr(); err != nil {
			return nil, nil, err
		}
	}
	if p.isOp(":") {
		p.i++
		if !p.isOp("]") && !p.isOp(",") {
			if parts[2], err = p.parseExpr(); err != nil {
				return nil, nil, err
			}
		}
	}
	return nil, &sliceExpr{at{pos}, obj, parts[0], parts[1], parts[2]}, nil
}

// parseCallArgs parses "(args, name=value)" with the parser at "(".
func (p *parser) parseCallArgs() (args []expr, kwName []string, kwVal []expr, err error) {
	if err := p.expectOp("("); err != nil {
		return nil, nil, nil, err
	}
	first := true
	for !p.isOp(")") {
		if !first {
			if err := p.expectOp(","); err != nil {
				return nil, nil, nil, err
			}
			if p.isOp(")") {
				break
			}
		}
		first = false
		if p.isOp("*") || p.isOp("**") {
			return nil, nil, nil, errAt(p.peek().pos, ErrUnsupported, "*args and **kwargs in calls are not supported")
		}
		t := p.peek()
		if t.kind == tName && p.i+1 < len(p.toks) && p.toks[p.i+1].kind == tOp && p.toks[p.i+1].val == "=" {
			p.i += 2
			v, err := p.parseExpr()
			if err != nil {
				return nil, nil, nil, err
			}
			kwName = append(kwName, t.val)
			kwVal = append(kwVal, v)
			continue
		}
		if len(kwName) > 0 {
			return nil, nil, nil, errAt(t.pos, ErrSyntax, "positional argument follows keyword argument")
		}
		x, err := p.parseExpr()
		if err != nil {
			return nil, nil, nil, err
		}
		args = append(args, x)
	}
	p.i++
	return args, kwName, kwVal, nil
}

func (p *parser) parseCall(fn expr) (expr, error) {
	pos := p.peek().pos
	args, kwn, kwv, err := p.parseCallArgs()
	if err != nil {
		return nil, err
	}
	return &callExpr{at{pos}, fn, args, kwn, kwv}, nil
}

func (p *parser) parseFilterExpr(x expr) (expr, error) {
	for {
		switch {
		case p.isOp("|"):
			p.i++
			f, err := p.parseFilterCall(x)
			if err != nil {
				return nil, err
			}
			x = f
		case p.isName("is"):
			t := p.next()
			negate := false
			if p.isName("not") {
				p.i++
				negate = true
			}
			name, err := p.expectName()
			if err != nil {
				return nil, err
			}
			te := &testExpr{at: at{t.pos}, x: x, name: name.val}
			n := p.peek()
			switch {
			case n.kind == tOp && n.val == "(":
				if te.args, te.kwName, te.kwVal, err = p.parseCallArgs(); err != nil {
					return nil, err
				}
			case (n.kind == tName && n.val != "else" && n.val != "or" && n.val != "and") ||
				n.kind == tString || n.kind == tInt || n.kind == tFloat || (n.kind == tOp && (n.val == "[" || n.val == "{")):
				// jinja2's parse_test: a single argument without parentheses, e.g.
				// "x is divisibleby 3". Like jinja2, this swallows a following "if" too.
				if n.kind == tName && n.val == "is" {
					return nil, errAt(n.pos, ErrSyntax, "you cannot chain multiple tests with is")
				}
				arg, err := p.parsePrimary()
				if err != nil {
					return nil, err
				}
				if arg, err = p.parsePostfix(arg); err != nil {
					return nil, err
				}
				te.args = []expr{arg}
			}
			x = te
			if negate {
				x = &unaryExpr{at{t.pos}, "not", te}
			}
		case p.isOp("("):
			var err error
			if x, err = p.parseCall(x); err != nil {
				return nil, err
			}
		default:
			return x, nil
		}
	}
}

// parseFilterCall parses "name" or "name(args)" after "|".
func (p *parser) parseFilterCall(x expr) (*filterExpr, error) {
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	full := name.val
	for p.isOp(".") {
		p.i++
		part, err := p.expectName()
		if err != nil {
			return nil, err
		}
		full += "." + part.val
	}
	f := &filterExpr{at: at{name.pos}, x: x, name: full}
	if p.isOp("(") {
		if f.args, f.kwName, f.kwVal, err = p.parseCallArgs(); err != nil {
			return nil, err
		}
	}
	return f, nil
}
