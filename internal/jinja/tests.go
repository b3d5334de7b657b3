package jinja

import (
	"strings"
	"unicode"
)

// testNames lists the supported tests (for the "test" test).
var testNames = map[string]bool{
	"boolean": true, "callable": true, "defined": true, "divisibleby": true, "eq": true, "equalto": true,
	"==": true, "escaped": true, "even": true, "false": true, "filter": true, "float": true, "ge": true,
	">=": true, "gt": true, "greaterthan": true, ">": true, "in": true, "integer": true, "iterable": true,
	"le": true, "<=": true, "lower": true, "lt": true, "lessthan": true, "<": true, "mapping": true,
	"ne": true, "!=": true, "none": true, "number": true, "odd": true, "sameas": true, "sequence": true,
	"string": true, "test": true, "true": true, "undefined": true, "upper": true,
}

// runTest evaluates "v is name(args)".
func (r *renderer) runTest(name string, v any, args []any, kw *Dict) (any, error) {
	if !testNames[name] {
		return nil, vErr(ErrUnsupported, "no test named '%s'", name)
	}
	one := func() (any, error) {
		a, err := bindArgs(name, args, kw, []string{"other"}, 1)
		if err != nil {
			return nil, err
		}
		return a[0], nil
	}
	none := func() error {
		_, err := bindArgs(name, args, kw, nil, 0)
		return err
	}
	cmp := func(ok func(int) bool) (any, error) {
		o, err := one()
		if err != nil {
			return nil, err
		}
		c, err := compare(v, o)
		if err != nil {
			return nil, err
		}
		return ok(c), nil
	}
	switch name {
	case "eq", "equalto", "==", "ne", "!=":
		o, err := one()
		if err != nil {
			return nil, err
		}
		eq := equalR(r, v, o)
		if name == "ne" || name == "!=" {
			return !eq, nil
		}
		return eq, nil
	case "lt", "lessthan", "<":
		return cmp(func(c int) bool { return c < 0 })
	case "le", "<=":
		return cmp(func(c int) bool { return c <= 0 })
	case "gt", "greaterthan", ">":
		return cmp(func(c int) bool { return c > 0 })
	case "ge", ">=":
		return cmp(func(c int) bool { return c >= 0 })
	case "in":
		o, err := one()
		if err != nil {
			return nil, err
		}
		return r.contains(o, v)
	case "sameas":
		o, err := one()
		if err != nil {
			return nil, err
		}
		return sameAs(v, o), nil
	case "divisibleby":
		o, err := one()
		if err != nil {
			return nil, err
		}
		m, err := arith("%", v, o, r.opt.MaxOutput)
		if err != nil {
			return nil, err
		}
		return equal(m, int64(0)), nil
	case "filter", "test":
		o, err := one()
		if err != nil {
			return nil, err
		}
		s, _ := o.(string)
		if name == "filter" {
			_, ok := filters[s]
			return ok, nil
		}
		return testNames[s], nil
	}
	if err := none(); err != nil {
		return nil, err
	}
	switch name {
	case "defined":
		_, u := v.(undefined)
		return !u, nil
	case "undefined":
		_, u := v.(undefined)
		return u, nil
	case "none":
		return v == nil, nil
	case "boolean":
		_, ok := v.(bool)
		return ok, nil
	case "true":
		b, ok := v.(bool)
		return ok && b, nil
	case "false":
		b, ok := v.(bool)
		return ok && !b, nil
	case "integer":
		_, ok := v.(int64)
		return ok, nil
	case "float":
		_, ok := v.(float64)
		return ok, nil
	case "number":
		_, _, _, ok := asNumber(v)
		return ok, nil
	case "string":
		_, ok := v.(string)
		return ok, nil
	case "mapping":
		_, ok := v.(*Dict)
		return ok, nil
	case "iterable":
		switch v.(type) {
		case string, []any, tuple, *Dict, undefined, *iterator:
			return true, nil
		}
		return false, nil
	case "sequence":
		switch v.(type) {
		case string, []any, tuple, *Dict, undefined:
			return true, nil
		}
		return false, nil
	case "callable":
		// Undefined defines __call__ (to raise), so Python's callable() says yes.
		switch v.(type) {
		case callable, undefined:
			return true, nil
		}
		return false, nil
	case "escaped":
		return false, nil
	case "odd", "even":
		// jinja2: value % 2 == 1 (odd), value % 2 == 0 (even), with Python's %.
		m, err := arith("%", v, int64(2), r.opt.MaxOutput)
		if err != nil {
			return nil, err
		}
		if name == "odd" {
			return equal(m, int64(1)), nil
		}
		return equal(m, int64(0)), nil
	case "lower", "upper":
		s := toStr(v)
		cased := false
		for _, c := range s {
			if (name == "lower" && (unicode.IsUpper(c) || unicode.IsTitle(c))) || (name == "upper" && (unicode.IsLower(c) || unicode.IsTitle(c))) {
				return false, nil
			}
			if isCased(c) {
				cased = true
			}
		}
		return cased && strings.TrimSpace(s) != "", nil
	}
	return nil, vErr(ErrUnsupported, "no test named '%s'", name)
}

// sameAs approximates Python's "is": identity for None, booleans and containers.
func sameAs(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case *Dict:
		y, ok := b.(*Dict)
		return ok && x == y
	case *namespace:
		y, ok := b.(*namespace)
		return ok && x == y
	case []any:
		y, ok := b.([]any)
		return ok && len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0])
	}
	return false
}
