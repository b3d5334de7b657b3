package jinja

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Values inside the engine are Go values of these types, with Python's semantics:
//
//	nil            None
//	bool           bool
//	int64          int (64-bit; overflow is an error)
//	float64        float
//	string         str
//	[]any          list
//	tuple          tuple
//	*Dict          dict (insertion-ordered)
//	*namespace     jinja2 namespace()
//	undefined      jinja2 Undefined
//	callable       functions, macros, bound methods, loop.cycle
//	*loopInfo      the loop variable
//
// Lists are never mutated after construction (the sandbox forbids it), so they can be shared.

// tuple is a Python tuple: like a list, but printed with parentheses and unequal to lists.
type tuple []any

// asSeq returns the items of a list or tuple.
func asSeq(v any) ([]any, bool) {
	switch x := v.(type) {
	case []any:
		return x, true
	case tuple:
		return x, true
	}
	return nil, false
}

// Dict is an insertion-ordered dictionary, the engine's dict. Keys are strings, ints, floats,
// bools or None.
type Dict struct {
	keys  []any
	vals  []any
	index map[any]int
}

// NewDict returns an empty Dict.
func NewDict() *Dict { return &Dict{index: map[any]int{}} }

// dictKey normalizes a hashable key so that equal Python keys collide (1 == 1.0); lists and
// dicts are unhashable.
func dictKey(k any) (any, bool) {
	switch v := k.(type) {
	case nil, string, int64, bool, *iterator, *namespace:
		return v, true
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<62 {
			return int64(v), true
		}
		return v, true
	case tuple:
		// Tuples hash by their items: encode the normalized items as one comparable string.
		var b strings.Builder
		b.WriteString("\x00tuple(")
		for _, e := range v {
			ek, ok := dictKey(e)
			if !ok {
				return nil, false
			}
			fmt.Fprintf(&b, "%T:%v,", ek, ek)
		}
		b.WriteByte(')')
		return b.String(), true
	}
	return nil, false
}

// Set inserts key or replaces its value, keeping the key's first position. The value is
// converted with FromGo; an unconvertible value is an error and leaves d unchanged.
func (d *Dict) Set(key string, value any) error {
	v, err := FromGo(value)
	if err != nil {
		return fmt.Errorf("%w (key %q)", err, key)
	}
	d.set(key, v)
	return nil
}

func (d *Dict) set(key, value any) bool {
	nk, ok := dictKey(key)
	if !ok {
		return false
	}
	if i, ok := d.index[nk]; ok {
		d.vals[i] = value
		return true
	}
	d.index[nk] = len(d.keys)
	d.keys = append(d.keys, key)
	d.vals = append(d.vals, value)
	return true
}

// Get returns the value of key.
func (d *Dict) Get(key any) (any, bool) {
	nk, ok := dictKey(key)
	if !ok {
		return nil, false
	}
	i, ok := d.index[nk]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// Len is the number of keys.
func (d *Dict) Len() int { return len(d.keys) }

// namespace is the object of namespace(): attributes assignable with {% set ns.attr = … %}.
type namespace struct{ attrs *Dict }

// undefined is jinja2's default Undefined: prints as "", is false, iterates as empty, and fails
// on most other uses.
type undefined struct{ name, msg string }

func (u undefined) describe() string {
	if u.msg != "" {
		return u.msg
	}
	if u.name == "" {
		return "value is undefined"
	}
	return fmt.Sprintf("'%s' is undefined", u.name)
}

// callable is anything that can be called from a template.
type callable interface {
	call(r *renderer, pos int, args []any, kw *Dict) (any, error)
	name() string
}

// FromGo converts a Go value into an engine value: nil, bool, the integer and float kinds,
// string, slices and arrays, maps with string keys (sorted, since Go maps have no order),
// pointers to those, and *Dict (kept as is, for an explicit key order). Other types (structs,
// funcs, channels) are refused with an error.
func FromGo(v any) (any, error) {
	c, err := fromGo(v)
	if err != nil {
		return nil, fmt.Errorf("jinja: %w", err)
	}
	return c, nil
}

func fromGo(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, *Dict, undefined, *namespace:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case float32:
		return float64(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := fromGo(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		d := NewDict()
		for _, k := range keys {
			c, err := fromGo(x[k])
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
			d.set(k, c)
		}
		return d, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return nil, fmt.Errorf("integer %d out of the 64-bit signed range", u)
		}
		return int64(u), nil
	case reflect.Float32, reflect.Float64:
		return rv.Float(), nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}, nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			c, err := fromGo(rv.Index(i).Interface())
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map key type %s not supported", rv.Type().Key())
		}
		keys := rv.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		d := NewDict()
		for _, k := range keys {
			c, err := fromGo(rv.MapIndex(k).Interface())
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", k.String(), err)
			}
			d.set(k.String(), c)
		}
		return d, nil
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil, nil
		}
		return fromGo(rv.Elem().Interface())
	}
	return nil, fmt.Errorf("Go value of type %T not supported", v)
}

// truthy is Python's bool().
func truthy(v any) bool {
	switch x := v.(type) {
	case nil, undefined:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case tuple:
		return len(x) > 0
	case *Dict:
		return x.Len() > 0
	}
	return true
}

// typeName is Python's type(v).__name__, for messages.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case undefined:
		return "Undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []any:
		return "list"
	case tuple:
		return "tuple"
	case *Dict:
		return "dict"
	case *namespace:
		return "Namespace"
	case *loopInfo:
		return "LoopContext"
	case *iterator:
		return x.kind
	case callable:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

// toStr is Python's str(), with Undefined printing as "".
func toStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case undefined:
		return ""
	}
	var b strings.Builder
	lim := &reprLimit{max: DefaultMaxOutput}
	lim.write(&b, v, false, 0)
	return b.String()
}

// repr is Python's repr().
func repr(v any) string {
	var b strings.Builder
	lim := &reprLimit{max: DefaultMaxOutput}
	lim.write(&b, v, true, 0)
	return b.String()
}

// reprLimit bounds a repr: output size, the renderer's step budget (shared sub-lists can make a
// repr exponentially long) and nesting (namespaces can contain themselves).
type reprLimit struct {
	r    *renderer // may be nil
	max  int
	over bool
}

// write writes str(v) (top-level strings unquoted) or repr(v); container elements always use
// repr, as Python does.
func (l *reprLimit) write(b *strings.Builder, v any, quote bool, depth int) {
	if l.over || b.Len() > l.max || !l.r.spend(1) {
		l.over = true
		return
	}
	if depth > 100 {
		b.WriteString("...")
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case undefined:
		if quote {
			b.WriteString("Undefined")
		}
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(pyFloat(x))
	case string:
		if quote {
			b.WriteString(pyQuote(x))
		} else {
			b.WriteString(x)
		}
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			l.write(b, e, true, depth+1)
		}
		b.WriteByte(']')
	case tuple:
		b.WriteByte('(')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			l.write(b, e, true, depth+1)
		}
		if len(x) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case *Dict:
		b.WriteByte('{')
		for i, k := range x.keys {
			if i > 0 {
				b.WriteString(", ")
			}
			l.write(b, k, true, depth+1)
			b.WriteString(": ")
			l.write(b, x.vals[i], true, depth+1)
		}
		b.WriteByte('}')
	case *namespace:
		b.WriteString("<Namespace ")
		l.write(b, x.attrs, true, depth+1)
		b.WriteString(">")
	case *loopInfo:
		fmt.Fprintf(b, "<LoopContext %d/%d>", x.index+1, x.length)
	case *iterator:
		b.WriteString(x.reprString())
	case callable:
		fmt.Fprintf(b, "<function %s>", x.name())
	default:
		fmt.Fprintf(b, "%v", x)
	}
	if b.Len() > l.max {
		l.over = true
	}
}

// pyFloat formats f as Python's repr(float): shortest round-trip digits, scientific notation
// outside 1e-4 <= |f| < 1e16, always with a decimal point or exponent.
func pyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	digits := strings.Replace(mant, ".", "", 1)
	sign := ""
	if neg {
		sign = "-"
	}
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es = "-"
			exp = -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, exp)
	}
	if exp < 0 {
		return sign + "0." + strings.Repeat("0", -exp-1) + digits
	}
	if len(digits) <= exp+1 {
		return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	}
	return sign + digits[:exp+1] + "." + digits[exp+1:]
}

// pyQuote is Python's repr of a str: single quotes unless the text has a single quote and no
// double quote; backslash escapes for quotes, backslash and non-printable characters.
func pyQuote(s string) string {
	q := byte('\'')
	if strings.Contains(s, "'") && !strings.Contains(s, "\"") {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\ufffd`)
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && !strconv.IsPrint(r):
			switch {
			case r <= 0xff:
				fmt.Fprintf(&b, `\x%02x`, r)
			case r <= 0xffff:
				fmt.Fprintf(&b, `\u%04x`, r)
			default:
				fmt.Fprintf(&b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}

// asNumber returns v as int64 or float64 (bools count as ints, as in Python).
func asNumber(v any) (i int64, f float64, isFloat, ok bool) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, 1, false, true
		}
		return 0, 0, false, true
	case int64:
		return x, float64(x), false, true
	case float64:
		return 0, x, true, true
	}
	return 0, 0, false, false
}

// equal is Python's ==.
func equal(a, b any) bool { return equalBudget(nil, a, b, 0) }

// equalBudget is equal charging the renderer's step budget per element compared (nil: no budget);
// when the budget runs out it answers false and the renderer reports the limit.
func equalBudget(r *renderer, a, b any, depth int) bool {
	if depth > 100 || !r.spend(1) {
		return false
	}
	if ai, af, aflt, ok := asNumber(a); ok {
		bi, bf, bflt, ok := asNumber(b)
		if !ok {
			return false
		}
		if aflt || bflt {
			return af == bf
		}
		return ai == bi
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case undefined:
		_, ok := b.(undefined)
		return ok
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []any, tuple:
		xs, _ := asSeq(x)
		ys, ok := asSeq(b)
		if !ok || len(xs) != len(ys) || typeName(a) != typeName(b) {
			return false
		}
		for i := range xs {
			if !equalBudget(r, xs[i], ys[i], depth+1) {
				return false
			}
		}
		return true
	case *Dict:
		y, ok := b.(*Dict)
		if !ok || x.Len() != y.Len() {
			return false
		}
		for i, k := range x.keys {
			v, ok := y.Get(k)
			if !ok || !equalBudget(r, x.vals[i], v, depth+1) {
				return false
			}
		}
		return true
	}
	return a == b
}

// compare is Python's ordering for numbers, strings and lists: -1, 0 or 1.
func compare(a, b any) (int, error) {
	if ai, af, aflt, ok := asNumber(a); ok {
		if bi, bf, bflt, ok := asNumber(b); ok {
			if aflt || bflt {
				switch {
				case af < bf:
					return -1, nil
				case af > bf:
					return 1, nil
				}
				return 0, nil
			}
			switch {
			case ai < bi:
				return -1, nil
			case ai > bi:
				return 1, nil
			}
			return 0, nil
		}
	}
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), nil
		}
	case []any, tuple:
		xs, _ := asSeq(x)
		if ys, ok := asSeq(b); ok && typeName(a) == typeName(b) {
			for i := 0; i < len(xs) && i < len(ys); i++ {
				if equal(xs[i], ys[i]) {
					continue
				}
				return compare(xs[i], ys[i])
			}
			switch {
			case len(xs) < len(ys):
				return -1, nil
			case len(xs) > len(ys):
				return 1, nil
			}
			return 0, nil
		}
	}
	if u, ok := a.(undefined); ok {
		return 0, vErr(ErrUndefined, "%s", u.describe())
	}
	if u, ok := b.(undefined); ok {
		return 0, vErr(ErrUndefined, "%s", u.describe())
	}
	return 0, vErr(ErrType, "'<' not supported between instances of '%s' and '%s'", typeName(a), typeName(b))
}

// iterate returns the items of an iterable: list items, dict keys, string characters; an
// undefined value iterates as empty.
func iterate(v any) ([]any, error) {
	switch x := v.(type) {
	case []any:
		return x, nil
	case tuple:
		return x, nil
	case *Dict:
		return append([]any(nil), x.keys...), nil
	case string:
		out := make([]any, 0, len(x))
		for _, r := range x {
			out = append(out, string(r))
		}
		return out, nil
	case undefined:
		return nil, nil
	case *namespace:
		return nil, vErr(ErrType, "'Namespace' object is not iterable")
	}
	return nil, vErr(ErrType, "'%s' object is not iterable", typeName(v))
}

// length is Python's len().
func length(v any) (int, error) {
	switch x := v.(type) {
	case string:
		return utf8.RuneCountInString(x), nil
	case []any:
		return len(x), nil
	case tuple:
		return len(x), nil
	case *Dict:
		return x.Len(), nil
	case undefined:
		return 0, nil
	}
	return 0, vErr(ErrType, "object of type '%s' has no len()", typeName(v))
}
