package jinja

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// valErr is an error without a place, raised while evaluating; the renderer adds the position.
type valErr struct {
	kind error
	msg  string
}

func (e *valErr) Error() string { return e.msg }
func (e *valErr) Unwrap() error { return e.kind }

func vErr(kind error, format string, args ...any) error {
	return &valErr{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// ctrl is how a statement list ended.
type ctrl int

const (
	ctrlNone ctrl = iota
	ctrlBreak
	ctrlContinue
)

type renderer struct {
	tmpl *Template
	opt  *Options
	// frames are the scopes, innermost last: globals, the render variables, the template's top
	// level, then one per for loop / with block / macro call.
	frames    []map[string]any
	out       *strings.Builder
	steps     int
	exhausted bool
	callDepth int
}

// spend counts n evaluation steps and reports whether the budget still holds; bulk operations
// (comparisons, repr, JSON) call it so that no single expression can run unbounded.
func (r *renderer) spend(n int) bool {
	if r == nil {
		return true
	}
	r.steps += n
	if r.steps > r.opt.MaxSteps {
		r.exhausted = true
	}
	return !r.exhausted
}

func (r *renderer) limitErr(pos int) error {
	return errAt(pos, ErrLimit, "evaluation exceeds %d steps", r.opt.MaxSteps)
}

// fail attaches pos to an error that has none.
func (r *renderer) fail(pos int, err error) error {
	var pe *posError
	if errors.As(err, &pe) {
		return err
	}
	var ve *valErr
	if errors.As(err, &ve) {
		return &posError{pos: pos, msg: ve.msg, err: ve.kind}
	}
	var re *RaiseError
	if errors.As(err, &re) {
		return &posError{pos: pos, msg: re.Error(), err: re}
	}
	return &posError{pos: pos, msg: err.Error(), err: ErrType}
}

func (r *renderer) lookup(name string) any {
	for i := len(r.frames) - 1; i >= 0; i-- {
		if v, ok := r.frames[i][name]; ok {
			return v
		}
	}
	return undefined{name: name}
}

func (r *renderer) assign(name string, v any) {
	r.frames[len(r.frames)-1][name] = v
}

func (r *renderer) push(f map[string]any) { r.frames = append(r.frames, f) }
func (r *renderer) pop()                  { r.frames = r.frames[:len(r.frames)-1] }

func (r *renderer) write(pos int, s string) error {
	if r.out.Len()+len(s) > r.opt.MaxOutput {
		return errAt(pos, ErrLimit, "output exceeds %d bytes", r.opt.MaxOutput)
	}
	r.out.WriteString(s)
	return nil
}

// capture renders body into a string.
func (r *renderer) capture(body []node) (string, ctrl, error) {
	saved := r.out
	var b strings.Builder
	r.out = &b
	c, err := r.execBody(body)
	r.out = saved
	return b.String(), c, err
}

func (r *renderer) execBody(body []node) (ctrl, error) {
	for _, n := range body {
		if !r.spend(1) {
			return ctrlNone, r.limitErr(n.position())
		}
		c, err := r.exec(n)
		if err != nil || c != ctrlNone {
			return c, err
		}
	}
	return ctrlNone, nil
}

func (r *renderer) exec(n node) (ctrl, error) {
	switch n := n.(type) {
	case *textNode:
		return ctrlNone, r.write(n.pos, n.text)
	case *outputNode:
		v, err := r.eval(n.x)
		if err != nil {
			return ctrlNone, err
		}
		s, err := r.str(v)
		if err != nil {
			return ctrlNone, r.fail(n.pos, err)
		}
		return ctrlNone, r.write(n.pos, s)
	case *ifNode:
		for i, cond := range n.conds {
			v, err := r.eval(cond)
			if err != nil {
				return ctrlNone, err
			}
			if truthy(v) {
				return r.execBody(n.bodies[i])
			}
		}
		return r.execBody(n.elseBody)
	case *forNode:
		return r.execFor(n)
	case *setNode:
		return ctrlNone, r.execSet(n)
	case *setBlockNode:
		s, _, err := r.capture(n.body)
		if err != nil {
			return ctrlNone, err
		}
		var v any = s
		for _, f := range n.filters {
			if v, err = r.applyFilter(f, v); err != nil {
				return ctrlNone, err
			}
		}
		r.assign(n.name, v)
		return ctrlNone, nil
	case *macroNode:
		r.assign(n.name, &macro{node: n})
		return ctrlNone, nil
	case *withNode:
		f := make(map[string]any, len(n.names))
		for i, name := range n.names {
			v, err := r.eval(n.exprs[i])
			if err != nil {
				return ctrlNone, err
			}
			f[name] = v
		}
		r.push(f)
		defer r.pop()
		return r.execBody(n.body)
	case *filterBlockNode:
		s, c, err := r.capture(n.body)
		if err != nil {
			return ctrlNone, err
		}
		var v any = s
		for _, f := range n.filters {
			if v, err = r.applyFilter(f, v); err != nil {
				return ctrlNone, err
			}
		}
		out, err := r.str(v)
		if err != nil {
			return ctrlNone, r.fail(n.pos, err)
		}
		if err := r.write(n.pos, out); err != nil {
			return ctrlNone, err
		}
		return c, nil
	case *loopControlNode:
		if n.brk {
			return ctrlBreak, nil
		}
		return ctrlContinue, nil
	case *generationNode:
		return r.execBody(n.body)
	}
	return ctrlNone, errAt(n.position(), ErrUnsupported, "unknown statement %T", n)
}

// str is toStr with the step budget applied to containers.
func (r *renderer) str(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case undefined:
		return "", nil
	}
	var b strings.Builder
	lim := &reprLimit{r: r, max: r.opt.MaxOutput}
	lim.write(&b, v, false, 0)
	if lim.over {
		if r.exhausted {
			return "", vErr(ErrLimit, "evaluation exceeds %d steps", r.opt.MaxSteps)
		}
		return "", vErr(ErrLimit, "string form exceeds %d bytes", r.opt.MaxOutput)
	}
	return b.String(), nil
}

func (r *renderer) bind(targets []string, tuple bool, v any, pos int) error {
	if len(targets) == 1 && !tuple {
		r.assign(targets[0], v)
		return nil
	}
	items, err := r.iterate(v)
	if err != nil {
		return r.fail(pos, err)
	}
	if len(items) != len(targets) {
		if len(items) > len(targets) {
			return errAt(pos, ErrType, "too many values to unpack (expected %d)", len(targets))
		}
		return errAt(pos, ErrType, "not enough values to unpack (expected %d, got %d)", len(targets), len(items))
	}
	for i, t := range targets {
		r.assign(t, items[i])
	}
	return nil
}

func (r *renderer) execFor(n *forNode) (ctrl, error) {
	it, err := r.eval(n.iter)
	if err != nil {
		return ctrlNone, err
	}
	items, err := r.iterate(it)
	if err != nil {
		return ctrlNone, r.fail(n.iter.position(), err)
	}
	frame := map[string]any{}
	r.push(frame)
	defer r.pop()
	if n.filter != nil {
		kept := make([]any, 0, len(items))
		for _, item := range items {
			if !r.spend(1) {
				return ctrlNone, r.limitErr(n.pos)
			}
			if err := r.bind(n.targets, n.tuple, item, n.pos); err != nil {
				return ctrlNone, err
			}
			v, err := r.eval(n.filter)
			if err != nil {
				return ctrlNone, err
			}
			if truthy(v) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		_, err := r.execBody(n.elseBody)
		return ctrlNone, err
	}
	loop := &loopInfo{items: items, length: len(items)}
	for i, item := range items {
		if !r.spend(1) {
			return ctrlNone, r.limitErr(n.pos)
		}
		// Each iteration is a fresh scope: a {% set %} in the body lasts until the end of the
		// iteration, and reads before it see the enclosing scope (jinja2's scoping).
		if i > 0 {
			frame = map[string]any{}
			r.frames[len(r.frames)-1] = frame
		}
		loop.index = i
		frame["loop"] = loop
		if err := r.bind(n.targets, n.tuple, item, n.pos); err != nil {
			return ctrlNone, err
		}
		c, err := r.execBody(n.body)
		if err != nil {
			return ctrlNone, err
		}
		if c == ctrlBreak {
			break
		}
	}
	return ctrlNone, nil
}

func (r *renderer) execSet(n *setNode) error {
	v, err := r.eval(n.x)
	if err != nil {
		return err
	}
	if n.attr != "" {
		ns, ok := r.lookup(n.targets[0]).(*namespace)
		if !ok {
			return errAt(n.pos, ErrType, "cannot assign attribute on non-namespace object '%s'", n.targets[0])
		}
		ns.attrs.set(n.attr, v)
		return nil
	}
	return r.bind(n.targets, n.tuple, v, n.pos)
}

// eval evaluates x.
func (r *renderer) eval(x expr) (any, error) {
	if !r.spend(1) {
		return nil, r.limitErr(x.position())
	}
	v, err := r.eval1(x)
	if err != nil {
		return nil, r.fail(x.position(), err)
	}
	if r.exhausted {
		return nil, r.limitErr(x.position())
	}
	switch s := v.(type) {
	case string:
		if len(s) > r.opt.MaxOutput {
			return nil, errAt(x.position(), ErrLimit, "string of %d bytes exceeds %d", len(s), r.opt.MaxOutput)
		}
	case []any:
		if len(s) > r.opt.MaxOutput {
			return nil, errAt(x.position(), ErrLimit, "list of %d items exceeds %d", len(s), r.opt.MaxOutput)
		}
	}
	return v, nil
}

func (r *renderer) eval1(x expr) (any, error) {
	switch x := x.(type) {
	case *constExpr:
		return x.v, nil
	case *nameExpr:
		return r.lookup(x.name), nil
	case *listExpr:
		out := make([]any, len(x.items))
		for i, e := range x.items {
			v, err := r.eval(e)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		if x.tuple {
			return tuple(out), nil
		}
		return out, nil
	case *dictExpr:
		d := NewDict()
		for i := range x.keys {
			k, err := r.eval(x.keys[i])
			if err != nil {
				return nil, err
			}
			v, err := r.eval(x.vals[i])
			if err != nil {
				return nil, err
			}
			if !d.set(k, v) {
				return nil, errAt(x.keys[i].position(), ErrType, "unhashable type: '%s'", typeName(k))
			}
		}
		return d, nil
	case *getattrExpr:
		obj, err := r.eval(x.obj)
		if err != nil {
			return nil, err
		}
		return getAttr(obj, x.name)
	case *getitemExpr:
		obj, err := r.eval(x.obj)
		if err != nil {
			return nil, err
		}
		key, err := r.eval(x.key)
		if err != nil {
			return nil, err
		}
		return getItem(obj, key)
	case *sliceExpr:
		return r.evalSlice(x)
	case *callExpr:
		fn, err := r.eval(x.fn)
		if err != nil {
			return nil, err
		}
		args, kw, err := r.evalArgs(x.args, x.kwName, x.kwVal)
		if err != nil {
			return nil, err
		}
		return r.call(fn, x.pos, args, kw)
	case *filterExpr:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		return r.applyFilter(x, v)
	case *testExpr:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		args, kw, err := r.evalArgs(x.args, x.kwName, x.kwVal)
		if err != nil {
			return nil, err
		}
		return r.runTest(x.name, v, args, kw)
	case *unaryExpr:
		v, err := r.eval(x.x)
		if err != nil {
			return nil, err
		}
		switch x.op {
		case "not":
			return !truthy(v), nil
		case "-":
			return negate(v)
		}
		if _, _, _, ok := asNumber(v); ok {
			if b, isBool := v.(bool); isBool {
				if b {
					return int64(1), nil
				}
				return int64(0), nil
			}
			return v, nil
		}
		return nil, undefOr(v, vErr(ErrType, "bad operand type for unary +: '%s'", typeName(v)))
	case *binaryExpr:
		return r.evalBinary(x)
	case *compareExpr:
		left, err := r.eval(x.first)
		if err != nil {
			return nil, err
		}
		for i, op := range x.ops {
			right, err := r.eval(x.rest[i])
			if err != nil {
				return nil, err
			}
			ok, err := r.compareOp(op, left, right)
			if err != nil {
				return nil, err
			}
			if !ok {
				return false, nil
			}
			left = right
		}
		return true, nil
	case *condExpr:
		c, err := r.eval(x.cond)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return r.eval(x.yes)
		}
		if x.no == nil {
			return undefined{}, nil
		}
		return r.eval(x.no)
	}
	return nil, vErr(ErrUnsupported, "unknown expression %T", x)
}

func (r *renderer) evalArgs(argX []expr, kwName []string, kwVal []expr) ([]any, *Dict, error) {
	args := make([]any, len(argX))
	for i, a := range argX {
		v, err := r.eval(a)
		if err != nil {
			return nil, nil, err
		}
		args[i] = v
	}
	var kw *Dict
	if len(kwName) > 0 {
		kw = NewDict()
		for i, name := range kwName {
			v, err := r.eval(kwVal[i])
			if err != nil {
				return nil, nil, err
			}
			kw.set(name, v)
		}
	}
	return args, kw, nil
}

// undefOr returns the undefined-use error when v is undefined, else err.
func undefOr(v any, err error) error {
	if u, ok := v.(undefined); ok {
		return vErr(ErrUndefined, "%s", u.describe())
	}
	return err
}

func (r *renderer) call(fn any, pos int, args []any, kw *Dict) (any, error) {
	switch f := fn.(type) {
	case callable:
		return f.call(r, pos, args, kw)
	case undefined:
		return nil, vErr(ErrUndefined, "%s", f.describe())
	}
	return nil, vErr(ErrType, "'%s' object is not callable", typeName(fn))
}

func negate(v any) (any, error) {
	i, f, isFloat, ok := asNumber(v)
	if !ok {
		return nil, undefOr(v, vErr(ErrType, "bad operand type for unary -: '%s'", typeName(v)))
	}
	if isFloat {
		return -f, nil
	}
	if i == math.MinInt64 {
		return nil, vErr(ErrType, "integer overflow")
	}
	return -i, nil
}

func (r *renderer) evalBinary(x *binaryExpr) (any, error) {
	l, err := r.eval(x.l)
	if err != nil {
		return nil, err
	}
	switch x.op {
	case "and":
		if !truthy(l) {
			return l, nil
		}
		return r.eval(x.r)
	case "or":
		if truthy(l) {
			return l, nil
		}
		return r.eval(x.r)
	}
	rv, err := r.eval(x.r)
	if err != nil {
		return nil, err
	}
	if x.op == "~" {
		ls, err := r.str(l)
		if err != nil {
			return nil, err
		}
		rs, err := r.str(rv)
		if err != nil {
			return nil, err
		}
		if len(ls)+len(rs) > r.opt.MaxOutput {
			return nil, vErr(ErrLimit, "string exceeds %d bytes", r.opt.MaxOutput)
		}
		return ls + rs, nil
	}
	if x.op == "**" {
		// jinja2 folds a constant operand and writes it into the generated Python source, so a
		// negative constant base loses its parentheses: -2 ** 2 is -(2 ** 2).
		if c, ok := constNumber(x.l); ok {
			if _, f, _, _ := asNumber(c); f < 0 {
				p, err := arith("**", mustNegate(c), rv, r.opt.MaxOutput)
				if err != nil {
					return nil, err
				}
				return negate(p)
			}
		}
	}
	return arith(x.op, l, rv, r.opt.MaxOutput)
}

// constNumber evaluates e when it is a number that jinja2's constant folding computes at compile
// time: a literal, or unary and arithmetic operators over such.
func constNumber(e expr) (any, bool) {
	switch x := e.(type) {
	case *constExpr:
		if _, _, _, ok := asNumber(x.v); ok {
			return x.v, true
		}
	case *unaryExpr:
		v, ok := constNumber(x.x)
		if !ok {
			return nil, false
		}
		switch x.op {
		case "-":
			n, err := negate(v)
			return n, err == nil
		case "+":
			return v, true
		}
	case *binaryExpr:
		switch x.op {
		case "+", "-", "*", "/", "//", "%", "**":
			l, ok1 := constNumber(x.l)
			rv, ok2 := constNumber(x.r)
			if ok1 && ok2 {
				v, err := arith(x.op, l, rv, DefaultMaxOutput)
				return v, err == nil
			}
		}
	}
	return nil, false
}

func mustNegate(v any) any {
	n, err := negate(v)
	if err != nil {
		return v
	}
	return n
}

// arith implements Python's + - * / // % ** for numbers, and + and * for strings and lists;
// maxLen bounds strings and lists built by * and +.
func arith(op string, l, r any, maxLen int) (any, error) {
	li, lf, lflt, lok := asNumber(l)
	ri, rf, rflt, rok := asNumber(r)
	if lok && rok {
		if lflt || rflt || op == "/" {
			return floatArith(op, lf, rf)
		}
		return intArith(op, li, ri)
	}
	if f, ok := l.(string); ok && op == "%" {
		return percentFormat(f, r, maxLen)
	}
	if _, ok := l.(undefined); ok {
		return nil, undefOr(l, nil)
	}
	if _, ok := r.(undefined); ok {
		return nil, undefOr(r, nil)
	}
	switch op {
	case "+":
		switch a := l.(type) {
		case string:
			if b, ok := r.(string); ok {
				if len(a)+len(b) > maxLen {
					return nil, vErr(ErrLimit, "string exceeds %d bytes", maxLen)
				}
				return a + b, nil
			}
		case []any:
			if b, ok := r.([]any); ok {
				out := make([]any, 0, len(a)+len(b))
				return append(append(out, a...), b...), nil
			}
		case tuple:
			if b, ok := r.(tuple); ok {
				out := make(tuple, 0, len(a)+len(b))
				return append(append(out, a...), b...), nil
			}
		}
	case "*":
		if s, n, ok := repeatOperands(l, r); ok {
			switch x := s.(type) {
			case string:
				if n <= 0 {
					return "", nil
				}
				if int64(len(x)) > int64(maxLen)/n {
					return nil, vErr(ErrLimit, "string exceeds %d bytes", maxLen)
				}
				return strings.Repeat(x, int(n)), nil
			case []any, tuple:
				items, _ := asSeq(x)
				out := []any{}
				if n > 0 {
					if int64(len(items)) > int64(maxLen)/n {
						return nil, vErr(ErrLimit, "list exceeds %d items", maxLen)
					}
					out = make([]any, 0, len(items)*int(n))
					for range n {
						out = append(out, items...)
					}
				}
				if _, isTuple := x.(tuple); isTuple {
					return tuple(out), nil
				}
				return out, nil
			}
		}
	}
	return nil, vErr(ErrType, "unsupported operand type(s) for %s: '%s' and '%s'", op, typeName(l), typeName(r))
}

// repeatOperands recognises str*int, int*str, list*int and int*list.
func repeatOperands(l, r any) (any, int64, bool) {
	isSeq := func(v any) bool {
		switch v.(type) {
		case string, []any, tuple:
			return true
		}
		return false
	}
	if isSeq(l) {
		if n, _, flt, ok := asNumber(r); ok && !flt {
			return l, n, true
		}
	}
	if isSeq(r) {
		if n, _, flt, ok := asNumber(l); ok && !flt {
			return r, n, true
		}
	}
	return nil, 0, false
}

func floatArith(op string, a, b float64) (any, error) {
	switch op {
	case "+":
		return a + b, nil
	case "-":
		return a - b, nil
	case "*":
		return a * b, nil
	case "/":
		if b == 0 {
			return nil, vErr(ErrType, "division by zero")
		}
		return a / b, nil
	case "//":
		if b == 0 {
			return nil, vErr(ErrType, "float floor division by zero")
		}
		return math.Floor(a / b), nil
	case "%":
		if b == 0 {
			return nil, vErr(ErrType, "float modulo")
		}
		m := math.Mod(a, b)
		if m != 0 && (m < 0) != (b < 0) {
			m += b
		}
		return m, nil
	case "**":
		if a == 0 && b < 0 {
			return nil, vErr(ErrType, "0.0 cannot be raised to a negative power")
		}
		if a < 0 && b != math.Trunc(b) {
			return nil, vErr(ErrUnsupported, "complex result of %s ** %s", pyFloat(a), pyFloat(b))
		}
		p := math.Pow(a, b)
		if math.IsInf(p, 0) && !math.IsInf(a, 0) && !math.IsInf(b, 0) {
			return nil, vErr(ErrType, "(34, 'Numerical result out of range')")
		}
		return p, nil
	}
	return nil, vErr(ErrType, "unsupported operator %s", op)
}

func intArith(op string, a, b int64) (any, error) {
	overflow := vErr(ErrType, "integer overflow in %d %s %d", a, op, b)
	switch op {
	case "+":
		s := a + b
		if (s > a) != (b > 0) {
			return nil, overflow
		}
		return s, nil
	case "-":
		s := a - b
		if (s < a) != (b > 0) {
			return nil, overflow
		}
		return s, nil
	case "*":
		if a == 0 || b == 0 {
			return int64(0), nil
		}
		p := a * b
		if p/b != a || (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64) {
			return nil, overflow
		}
		return p, nil
	case "//", "%":
		if b == 0 {
			return nil, vErr(ErrType, "integer division or modulo by zero")
		}
		if a == math.MinInt64 && b == -1 {
			if op == "%" {
				return int64(0), nil
			}
			return nil, overflow
		}
		q, m := a/b, a%b
		if m != 0 && (m < 0) != (b < 0) {
			q--
			m += b
		}
		if op == "//" {
			return q, nil
		}
		return m, nil
	case "**":
		if b < 0 {
			if a == 0 {
				return nil, vErr(ErrType, "0.0 cannot be raised to a negative power")
			}
			return math.Pow(float64(a), float64(b)), nil
		}
		result := int64(1)
		base := a
		for e := b; e > 0; e >>= 1 {
			if e&1 == 1 {
				v, err := intArith("*", result, base)
				if err != nil {
					return nil, overflow
				}
				result = v.(int64)
			}
			if e > 1 {
				v, err := intArith("*", base, base)
				if err != nil {
					return nil, overflow
				}
				base = v.(int64)
			}
		}
		return result, nil
	}
	return nil, vErr(ErrType, "unsupported operator %s", op)
}

func (r *renderer) compareOp(op string, a, b any) (bool, error) {
	switch op {
	case "==":
		return equalR(r, a, b), nil
	case "!=":
		return !equalR(r, a, b), nil
	case "in", "notin":
		in, err := r.contains(b, a)
		if err != nil {
			return false, err
		}
		return in == (op == "in"), nil
	}
	c, err := compare(a, b)
	if err != nil {
		return false, err
	}
	switch op {
	case "<":
		return c < 0, nil
	case "<=":
		return c <= 0, nil
	case ">":
		return c > 0, nil
	}
	return c >= 0, nil
}

// equalR is equal with the step budget charged by the size of the values compared.
func equalR(r *renderer, a, b any) bool { return equalBudget(r, a, b, 0) }

// contains is Python's "item in container".
func (r *renderer) contains(container, item any) (bool, error) {
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, undefOr(item, vErr(ErrType, "'in <string>' requires string as left operand, not %s", typeName(item)))
		}
		return strings.Contains(c, s), nil
	case []any, tuple:
		items, _ := asSeq(c)
		for _, e := range items {
			if equalR(r, e, item) {
				return true, nil
			}
		}
		return false, nil
	case *Dict:
		if _, ok := dictKey(item); !ok {
			return false, vErr(ErrType, "unhashable type: '%s'", typeName(item))
		}
		_, ok := c.Get(item)
		return ok, nil
	case undefined:
		return false, nil
	case *iterator:
		// Python consumes the iterator up to the first match.
		for {
			v, ok, err := c.next()
			if err != nil || !ok {
				return false, err
			}
			if equalR(r, v, item) {
				return true, nil
			}
		}
	case *namespace:
		return false, vErr(ErrType, "argument of type 'Namespace' is not iterable")
	}
	return false, vErr(ErrType, "argument of type '%s' is not iterable", typeName(container))
}

func (r *renderer) evalSlice(x *sliceExpr) (any, error) {
	obj, err := r.eval(x.obj)
	if err != nil {
		return nil, err
	}
	var bounds [3]any
	for i, e := range []expr{x.start, x.stop, x.step} {
		if e == nil {
			bounds[i] = nil
			continue
		}
		if bounds[i], err = r.eval(e); err != nil {
			return nil, err
		}
	}
	return sliceValue(obj, bounds[0], bounds[1], bounds[2])
}

// sliceValue is Python's obj[start:stop:step] for lists and strings.
func sliceValue(obj, start, stop, step any) (any, error) {
	var n int
	var runes []rune
	switch o := obj.(type) {
	case []any:
		n = len(o)
	case tuple:
		n = len(o)
	case string:
		runes = []rune(o)
		n = len(runes)
	case undefined:
		return nil, undefOr(o, nil)
	default:
		return nil, vErr(ErrType, "'%s' object is not subscriptable", typeName(obj))
	}
	toInt := func(v any, what string) (int64, bool, error) {
		if v == nil {
			return 0, false, nil
		}
		i, _, flt, ok := asNumber(v)
		if !ok || flt {
			return 0, false, vErr(ErrType, "slice %s must be an integer or None, not %s", what, typeName(v))
		}
		return i, true, nil
	}
	st, hasStep, err := toInt(step, "step")
	if err != nil {
		return nil, err
	}
	if !hasStep {
		st = 1
	}
	if st == 0 {
		return nil, vErr(ErrType, "slice step cannot be zero")
	}
	b, hasB, err := toInt(start, "start")
	if err != nil {
		return nil, err
	}
	e, hasE, err := toInt(stop, "stop")
	if err != nil {
		return nil, err
	}
	// Python's PySlice_AdjustIndices.
	ln := int64(n)
	adjust := func(v int64, has bool, def int64, lo, hi int64) int64 {
		if !has {
			return def
		}
		if v < 0 {
			v += ln
			if v < lo {
				v = lo
			}
		} else if v > hi {
			v = hi
		}
		return v
	}
	var idx []int
	if st > 0 {
		b = adjust(b, hasB, 0, 0, ln)
		e = adjust(e, hasE, ln, 0, ln)
		for i := b; i < e; i += st {
			idx = append(idx, int(i))
		}
	} else {
		b = adjust(b, hasB, ln-1, -1, ln-1)
		e = adjust(e, hasE, -1, -1, ln-1)
		for i := b; i > e; i += st {
			idx = append(idx, int(i))
		}
	}
	if l, ok := asSeq(obj); ok {
		out := make([]any, len(idx))
		for k, i := range idx {
			out[k] = l[i]
		}
		if _, isTuple := obj.(tuple); isTuple {
			return tuple(out), nil
		}
		return out, nil
	}
	var sb strings.Builder
	for _, i := range idx {
		sb.WriteRune(runes[i])
	}
	return sb.String(), nil
}

// getAttr is jinja2's getattr: Python attributes (methods) first, then items.
func getAttr(obj any, name string) (any, error) {
	switch o := obj.(type) {
	case undefined:
		return nil, undefOr(o, nil)
	case *Dict:
		if m, ok := methodOf(obj, name); ok {
			return m, nil
		}
		if v, ok := o.Get(name); ok {
			return v, nil
		}
		return undefined{name: name, msg: fmt.Sprintf("'dict object' has no attribute '%s'", name)}, nil
	case *namespace:
		if v, ok := o.attrs.Get(name); ok {
			return v, nil
		}
	case *loopInfo:
		if v, ok := o.attr(name); ok {
			return v, nil
		}
	default:
		if m, ok := methodOf(obj, name); ok {
			return m, nil
		}
	}
	return undefined{name: name, msg: fmt.Sprintf("'%s object' has no attribute '%s'", typeName(obj), name)}, nil
}

// getItem is jinja2's getitem: items first, then attributes for string keys.
func getItem(obj, key any) (any, error) {
	switch o := obj.(type) {
	case undefined:
		return nil, undefOr(o, nil)
	case *Dict:
		if v, ok := o.Get(key); ok {
			return v, nil
		}
	case []any, tuple:
		seq, _ := asSeq(o)
		if i, _, flt, ok := asNumber(key); ok && !flt {
			if i < 0 {
				i += int64(len(seq))
			}
			if i >= 0 && i < int64(len(seq)) {
				return seq[i], nil
			}
			return undefined{msg: fmt.Sprintf("%s index %v out of range", typeName(o), key)}, nil
		}
	case string:
		if i, _, flt, ok := asNumber(key); ok && !flt {
			runes := []rune(o)
			if i < 0 {
				i += int64(len(runes))
			}
			if i >= 0 && i < int64(len(runes)) {
				return string(runes[i]), nil
			}
			return undefined{msg: fmt.Sprintf("string index %v out of range", key)}, nil
		}
	}
	if s, ok := key.(string); ok {
		return getAttr(obj, s)
	}
	return undefined{msg: fmt.Sprintf("'%s object' has no item %s", typeName(obj), repr(key))}, nil
}

// loopInfo is the loop variable of a for loop.
type loopInfo struct {
	items       []any
	index       int // 0-based
	length      int
	lastChanged []any
	changedSet  bool
}

func (l *loopInfo) attr(name string) (any, bool) {
	switch name {
	case "index":
		return int64(l.index + 1), true
	case "index0":
		return int64(l.index), true
	case "revindex":
		return int64(l.length - l.index), true
	case "revindex0":
		return int64(l.length - l.index - 1), true
	case "first":
		return l.index == 0, true
	case "last":
		return l.index == l.length-1, true
	case "length":
		return int64(l.length), true
	case "depth":
		return int64(1), true
	case "depth0":
		return int64(0), true
	case "previtem":
		if l.index == 0 {
			return undefined{name: "previtem", msg: "there is no previous item"}, true
		}
		return l.items[l.index-1], true
	case "nextitem":
		if l.index >= l.length-1 {
			return undefined{name: "nextitem", msg: "there is no next item"}, true
		}
		return l.items[l.index+1], true
	case "cycle":
		return &builtinFunc{fname: "loop.cycle", fn: func(r *renderer, args []any, kw *Dict) (any, error) {
			if len(args) == 0 {
				return nil, vErr(ErrType, "no items for cycling given")
			}
			return args[l.index%len(args)], nil
		}}, true
	case "changed":
		return &builtinFunc{fname: "loop.changed", fn: func(r *renderer, args []any, kw *Dict) (any, error) {
			if l.changedSet && equalR(r, l.lastChanged, args) {
				return false, nil
			}
			l.lastChanged, l.changedSet = args, true
			return true, nil
		}}, true
	}
	return nil, false
}

// builtinFunc is a global function, filter-like helper or loop method.
type builtinFunc struct {
	fname string
	fn    func(r *renderer, args []any, kw *Dict) (any, error)
}

func (b *builtinFunc) name() string { return b.fname }
func (b *builtinFunc) call(r *renderer, pos int, args []any, kw *Dict) (any, error) {
	return b.fn(r, args, kw)
}

// macro is a {% macro %} definition; calling it renders its body.
type macro struct{ node *macroNode }

func (m *macro) name() string { return m.node.name }

func (m *macro) call(r *renderer, pos int, args []any, kw *Dict) (any, error) {
	n := m.node
	if r.callDepth >= r.opt.MaxCallDepth {
		return nil, errAt(pos, ErrLimit, "macro calls nested deeper than %d", r.opt.MaxCallDepth)
	}
	if len(args) > len(n.params) {
		return nil, vErr(ErrType, "macro '%s' takes not more than %d argument(s)", n.name, len(n.params))
	}
	frame := make(map[string]any, len(n.params))
	for i, p := range n.params {
		if i < len(args) {
			frame[p] = args[i]
		}
	}
	if kw != nil {
		for i, k := range kw.keys {
			ks, _ := k.(string)
			found := false
			for j, p := range n.params {
				if p == ks {
					if j < len(args) {
						return nil, vErr(ErrType, "macro '%s' got multiple values for argument '%s'", n.name, ks)
					}
					frame[p] = kw.vals[i]
					found = true
				}
			}
			if !found {
				return nil, vErr(ErrType, "macro '%s' takes no keyword argument '%s'", n.name, ks)
			}
		}
	}
	// Macros see the globals, the render variables and the template's top level, not the
	// caller's loop variables.
	saved := r.frames
	r.frames = append(append([]map[string]any(nil), saved[:3]...), frame)
	defer func() { r.frames = saved }()
	for i, p := range n.params {
		if _, ok := frame[p]; ok {
			continue
		}
		if n.defaults[i] == nil {
			frame[p] = undefined{name: p}
			continue
		}
		v, err := r.eval(n.defaults[i])
		if err != nil {
			return nil, err
		}
		frame[p] = v
	}
	r.callDepth++
	defer func() { r.callDepth-- }()
	s, _, err := r.capture(n.body)
	if err != nil {
		return nil, err
	}
	return s, nil
}
