package jinja

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// maxRange is jinja2's sandbox MAX_RANGE: range() refuses to build more items.
const maxRange = 100_000

// missing marks an argument that was not passed.
type missingT struct{}

var missing = missingT{}

// bindArgs matches positional and keyword arguments to names (Python call semantics); the first
// required names must be given, the rest default to missing.
func bindArgs(fname string, args []any, kw *Dict, names []string, required int) ([]any, error) {
	if len(args) > len(names) {
		return nil, vErr(ErrType, "%s() takes at most %d argument(s) (%d given)", fname, len(names), len(args))
	}
	out := make([]any, len(names))
	for i := range out {
		out[i] = missing
	}
	copy(out, args)
	if kw != nil {
		for i, k := range kw.keys {
			ks, _ := k.(string)
			found := false
			for j, n := range names {
				if n == ks {
					if j < len(args) {
						return nil, vErr(ErrType, "%s() got multiple values for argument '%s'", fname, ks)
					}
					out[j] = kw.vals[i]
					found = true
					break
				}
			}
			if !found {
				return nil, vErr(ErrType, "%s() got an unexpected keyword argument '%s'", fname, ks)
			}
		}
	}
	for i := 0; i < required; i++ {
		if out[i] == missing {
			return nil, vErr(ErrType, "%s() missing required argument '%s'", fname, names[i])
		}
	}
	return out, nil
}

func orDefault(v, def any) any {
	if v == missing {
		return def
	}
	return v
}

func argInt(fname, name string, v any) (int64, error) {
	i, _, flt, ok := asNumber(v)
	if !ok || flt {
		return 0, undefOr(v, vErr(ErrType, "%s(): argument '%s' must be an integer, not %s", fname, name, typeName(v)))
	}
	return i, nil
}

func argStr(fname, name string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", undefOr(v, vErr(ErrType, "%s(): argument '%s' must be a string, not %s", fname, name, typeName(v)))
	}
	return s, nil
}

// globals are the functions every template sees.
func globals() map[string]any {
	return map[string]any{
		"range":           &builtinFunc{fname: "range", fn: fnRange},
		"namespace":       &builtinFunc{fname: "namespace", fn: fnNamespace},
		"dict":            &builtinFunc{fname: "dict", fn: fnDict},
		"raise_exception": &builtinFunc{fname: "raise_exception", fn: fnRaise},
		"strftime_now":    &builtinFunc{fname: "strftime_now", fn: fnStrftimeNow},
	}
}

func fnRange(r *renderer, args []any, kw *Dict) (any, error) {
	if kw != nil && kw.Len() > 0 {
		return nil, vErr(ErrType, "range() takes no keyword arguments")
	}
	var start, stop, step int64 = 0, 0, 1
	ints := make([]int64, len(args))
	for i, a := range args {
		v, err := argInt("range", "argument", a)
		if err != nil {
			return nil, err
		}
		ints[i] = v
	}
	switch len(ints) {
	case 1:
		stop = ints[0]
	case 2:
		start, stop = ints[0], ints[1]
	case 3:
		start, stop, step = ints[0], ints[1], ints[2]
	default:
		return nil, vErr(ErrType, "range expected 1 to 3 arguments, got %d", len(ints))
	}
	if step == 0 {
		return nil, vErr(ErrType, "range() arg 3 must not be zero")
	}
	var n float64
	if step > 0 && stop > start {
		n = math.Ceil((float64(stop) - float64(start)) / float64(step))
	} else if step < 0 && stop < start {
		n = math.Ceil((float64(start) - float64(stop)) / -float64(step))
	}
	if n > maxRange {
		return nil, vErr(ErrLimit, "range too big, maximum size for range is %d", maxRange)
	}
	out := make([]any, 0, int(n))
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		out = append(out, i)
		if len(out) >= int(n) {
			break
		}
	}
	return out, nil
}

func fnNamespace(r *renderer, args []any, kw *Dict) (any, error) {
	ns := &namespace{attrs: NewDict()}
	for _, a := range args {
		d, ok := a.(*Dict)
		if !ok {
			return nil, vErr(ErrType, "namespace() positional argument must be a dict, not %s", typeName(a))
		}
		for i, k := range d.keys {
			ns.attrs.set(k, d.vals[i])
		}
	}
	if kw != nil {
		for i, k := range kw.keys {
			ns.attrs.set(k, kw.vals[i])
		}
	}
	return ns, nil
}

func fnDict(r *renderer, args []any, kw *Dict) (any, error) {
	d := NewDict()
	if len(args) > 1 {
		return nil, vErr(ErrType, "dict expected at most 1 argument, got %d", len(args))
	}
	if len(args) == 1 {
		switch a := args[0].(type) {
		case *Dict:
			for i, k := range a.keys {
				d.set(k, a.vals[i])
			}
		case []any:
			for _, item := range a {
				pair, ok := asSeq(item)
				if !ok || len(pair) != 2 {
					return nil, vErr(ErrType, "dict() sequence elements must be pairs")
				}
				if !d.set(pair[0], pair[1]) {
					return nil, vErr(ErrType, "unhashable type: '%s'", typeName(pair[0]))
				}
			}
		default:
			return nil, vErr(ErrType, "'%s' object is not iterable", typeName(a))
		}
	}
	if kw != nil {
		for i, k := range kw.keys {
			d.set(k, kw.vals[i])
		}
	}
	return d, nil
}

func fnRaise(r *renderer, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("raise_exception", args, kw, []string{"message"}, 0)
	if err != nil {
		return nil, err
	}
	msg := ""
	if a[0] != missing {
		if msg, err = r.str(a[0]); err != nil {
			return nil, err
		}
	}
	return nil, &RaiseError{Message: msg}
}

func fnStrftimeNow(r *renderer, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("strftime_now", args, kw, []string{"format"}, 1)
	if err != nil {
		return nil, err
	}
	f, err := argStr("strftime_now", "format", a[0])
	if err != nil {
		return nil, err
	}
	return strftime(r.opt.Now(), f), nil
}

// attrGetter is jinja2's make_attrgetter: a dotted path of attributes or integer indexes.
func attrGetter(obj any, path string) (any, error) {
	for _, part := range strings.Split(path, ".") {
		var key any = part
		if n, err := strconv.ParseInt(part, 10, 64); err == nil {
			key = n
		}
		var err error
		if obj, err = getItem(obj, key); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// sortKey maps a value for case-insensitive comparison (jinja2's ignore_case).
func sortKey(v any, caseSensitive bool) any {
	if s, ok := v.(string); ok && !caseSensitive {
		return pyLower(s)
	}
	return v
}

// pyStrip is Python's str.strip/lstrip/rstrip with optional chars (None: whitespace).
func pyStrip(s string, chars any, left, right bool) (string, error) {
	isCut := pyIsSpace
	switch c := chars.(type) {
	case nil, missingT:
	case string:
		isCut = func(r rune) bool { return strings.ContainsRune(c, r) }
	default:
		return "", undefOr(chars, vErr(ErrType, "strip arg must be None or str, not %s", typeName(chars)))
	}
	if left {
		s = strings.TrimLeftFunc(s, isCut)
	}
	if right {
		s = strings.TrimRightFunc(s, isCut)
	}
	return s, nil
}

// pySplit is Python's str.split (rsplit when fromRight).
func pySplit(s string, sep any, maxsplit int64, fromRight bool) ([]any, error) {
	var parts []string
	switch p := sep.(type) {
	case nil, missingT:
		fields := strings.FieldsFunc(s, pyIsSpace)
		if maxsplit >= 0 && int64(len(fields)) > maxsplit+1 {
			// Re-split keeping the remainder intact, as Python does.
			parts = nil
			rest := s
			for i := int64(0); i < maxsplit; i++ {
				if fromRight {
					rest = strings.TrimRightFunc(rest, pyIsSpace)
					j := strings.LastIndexFunc(rest, pyIsSpace)
					parts = append([]string{rest[j+1:]}, parts...)
					rest = rest[:max(j, 0)]
				} else {
					rest = strings.TrimLeftFunc(rest, pyIsSpace)
					j := strings.IndexFunc(rest, pyIsSpace)
					parts = append(parts, rest[:j])
					rest = rest[j:]
				}
			}
			if fromRight {
				parts = append([]string{strings.TrimRightFunc(rest, pyIsSpace)}, parts...)
			} else {
				parts = append(parts, strings.TrimLeftFunc(rest, pyIsSpace))
			}
		} else {
			parts = fields
		}
	case string:
		if p == "" {
			return nil, vErr(ErrType, "empty separator")
		}
		n := -1
		if maxsplit >= 0 {
			n = int(min(maxsplit, int64(len(s)))) + 1
		}
		if fromRight && n > 0 {
			all := strings.Split(s, p)
			if len(all) > n {
				head := strings.Join(all[:len(all)-n+1], p)
				parts = append([]string{head}, all[len(all)-n+1:]...)
			} else {
				parts = all
			}
		} else {
			parts = strings.SplitN(s, p, n)
		}
	default:
		return nil, undefOr(sep, vErr(ErrType, "must be str or None, not %s", typeName(sep)))
	}
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

// pySplitlines is Python's str.splitlines.
func pySplitlines(s string, keepends bool) []any {
	var out []any
	start := 0
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		switch rs[i] {
		case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			end := i + 1
			if rs[i] == '\r' && i+1 < len(rs) && rs[i+1] == '\n' {
				end++
			}
			if keepends {
				out = append(out, string(rs[start:end]))
			} else {
				out = append(out, string(rs[start:i]))
			}
			i = end - 1
			start = end
		}
	}
	if start < len(rs) {
		out = append(out, string(rs[start:]))
	}
	if out == nil {
		out = []any{}
	}
	return out
}

func isCased(r rune) bool { return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) }

// pyCapitalize is Python's str.capitalize: first character title-cased, the rest lower-cased.
func pyCapitalize(s string) string {
	if s == "" {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	pyTitleRune(&b, rs[0])
	// Lower-case the rest in context, so that a final sigma still sees the first letter.
	rest := []rune(pyLower(string(rs)))
	if len(rest) > 0 {
		_, n := firstRuneLower(rs[0])
		b.WriteString(string(rest[n:]))
	}
	return b.String()
}

// firstRuneLower returns how many runes pyLower produces for r.
func firstRuneLower(r rune) (string, int) {
	l := pyLower(string(r))
	return l, len([]rune(l))
}

// pyTitle is Python's str.title.
func pyTitle(s string) string {
	var b strings.Builder
	prevCased := false
	rs := []rune(s)
	for i, r := range rs {
		switch {
		case !prevCased:
			pyTitleRune(&b, r)
		case r == '\u03A3':
			b.WriteRune(sigmaLower(rs, i))
		case r == '\u0130':
			b.WriteString("i\u0307")
		default:
			b.WriteRune(unicode.ToLower(r))
		}
		prevCased = isCased(r)
	}
	return b.String()
}

// jinjaTitle is jinja2's title filter: words start after runs of "-", whitespace, "(", "{", "[",
// "<"; each word's first character is upper-cased and the rest lower-cased.
func jinjaTitle(s string) string {
	var b strings.Builder
	atStart := true
	for _, r := range s {
		if r == '-' || r == '(' || r == '{' || r == '[' || r == '<' || pyIsSpace(r) {
			b.WriteRune(r)
			atStart = true
			continue
		}
		if atStart {
			b.WriteString(pyUpper(string(r)))
		} else {
			b.WriteString(pyLower(string(r)))
		}
		atStart = false
	}
	return b.String()
}

// htmlEscape is markupsafe's escape.
func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\"", "&#34;", "'", "&#39;").Replace(s)
}

// sortValues sorts items stably by key(item) with Python ordering.
func sortValues(items []any, key func(any) (any, error), reverse bool) ([]any, error) {
	keys := make([]any, len(items))
	for i, it := range items {
		k, err := key(it)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	var cmpErr error
	sort.SliceStable(idx, func(a, b int) bool {
		c, err := compare(keys[idx[a]], keys[idx[b]])
		if err != nil && cmpErr == nil {
			cmpErr = err
		}
		if reverse {
			return c > 0
		}
		return c < 0
	})
	if cmpErr != nil {
		return nil, cmpErr
	}
	out := make([]any, len(items))
	for i, j := range idx {
		out[i] = items[j]
	}
	return out, nil
}

// strftime formats t with Python's strftime directives (C locale); "%-d" style flags drop
// padding as glibc does.
func strftime(t time.Time, f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 >= len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		noPad := false
		if f[i] == '-' && i+1 < len(f) {
			noPad = true
			i++
		}
		num := func(v, width int) {
			if noPad {
				b.WriteString(strconv.Itoa(v))
			} else {
				fmt.Fprintf(&b, "%0*d", width, v)
			}
		}
		switch f[i] {
		case 'Y':
			b.WriteString(strconv.Itoa(t.Year()))
		case 'y':
			num(t.Year()%100, 2)
		case 'm':
			v, _ := strconv.Atoi(t.Format("1"))
			num(v, 2)
		case 'd':
			v, _ := strconv.Atoi(t.Format("2"))
			num(v, 2)
		case 'e':
			fmt.Fprintf(&b, "%2s", t.Format("2"))
		case 'H':
			num(t.Hour(), 2)
		case 'I':
			h := t.Hour() % 12
			if h == 0 {
				h = 12
			}
			num(h, 2)
		case 'M':
			num(t.Minute(), 2)
		case 'S':
			num(t.Second(), 2)
		case 'j':
			num(t.YearDay(), 3)
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b', 'h':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case 'z':
			b.WriteString(t.Format("-0700"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			if noPad {
				b.WriteByte('-')
			}
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

// percentFormat is Python's "format % values" for the conversions s r a d i u f F e E g G x X o
// c and %%; values is a tuple (list), a dict (for %(name)s) or a single value.
func percentFormat(format string, values any, maxLen int) (string, error) {
	var args []any
	dict, _ := values.(*Dict)
	if l, ok := values.(tuple); ok {
		args = l
	} else {
		args = []any{values}
	}
	next := 0
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if b.Len() > maxLen {
			return "", vErr(ErrLimit, "string exceeds %d bytes", maxLen)
		}
		c := format[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(format) {
			return "", vErr(ErrType, "incomplete format")
		}
		var arg any
		haveArg := false
		if format[i] == '(' {
			end := strings.IndexByte(format[i:], ')')
			if end < 0 || dict == nil {
				return "", vErr(ErrType, "format requires a mapping")
			}
			v, ok := dict.Get(format[i+1 : i+end])
			if !ok {
				return "", vErr(ErrType, "format key %q not found", format[i+1:i+end])
			}
			arg, haveArg = v, true
			i += end + 1
		}
		spec := "%"
		for i < len(format) && strings.IndexByte("-+ 0#", format[i]) >= 0 {
			spec += string(format[i])
			i++
		}
		width := 0
		for i < len(format) && format[i] >= '0' && format[i] <= '9' {
			width = width*10 + int(format[i]-'0')
			if width > maxLen {
				return "", vErr(ErrLimit, "format width exceeds %d", maxLen)
			}
			spec += string(format[i])
			i++
		}
		if i < len(format) && format[i] == '.' {
			spec += "."
			i++
			prec := 0
			for i < len(format) && format[i] >= '0' && format[i] <= '9' {
				prec = prec*10 + int(format[i]-'0')
				if prec > 1000 {
					return "", vErr(ErrLimit, "format precision too large")
				}
				spec += string(format[i])
				i++
			}
		}
		if i >= len(format) {
			return "", vErr(ErrType, "incomplete format")
		}
		conv := format[i]
		if conv == '%' {
			b.WriteByte('%')
			continue
		}
		if !haveArg {
			if next >= len(args) {
				return "", vErr(ErrType, "not enough arguments for format string")
			}
			arg = args[next]
			next++
		}
		switch conv {
		case 's', 'r', 'a':
			s := toStr(arg)
			if conv != 's' {
				s = repr(arg)
			}
			fmt.Fprintf(&b, spec+"s", s)
		case 'd', 'i', 'u':
			n, f, flt, ok := asNumber(arg)
			if !ok {
				return "", undefOr(arg, vErr(ErrType, "%%%c format: a real number is required, not %s", conv, typeName(arg)))
			}
			if flt {
				n = int64(f)
			}
			fmt.Fprintf(&b, spec+"d", n)
		case 'f', 'F', 'e', 'E', 'g', 'G':
			_, f, _, ok := asNumber(arg)
			if !ok {
				return "", undefOr(arg, vErr(ErrType, "must be real number, not %s", typeName(arg)))
			}
			fmt.Fprintf(&b, spec+string(conv), f)
		case 'x', 'X', 'o':
			n, err := argInt("format", "%"+string(conv), arg)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, spec+string(conv), n)
		case 'c':
			switch v := arg.(type) {
			case string:
				fmt.Fprintf(&b, spec+"s", v)
			default:
				n, err := argInt("format", "%c", arg)
				if err != nil {
					return "", err
				}
				fmt.Fprintf(&b, spec+"c", rune(n))
			}
		default:
			return "", vErr(ErrType, "unsupported format character '%c'", conv)
		}
	}
	// CPython's check: leftover tuple items, or a lone argument that was never used unless it
	// supports the mapping protocol (lists and dicts do).
	_, isTuple := values.(tuple)
	mapping := false
	switch values.(type) {
	case []any, undefined, *Dict:
		mapping = true
	}
	if !mapping && ((isTuple && next < len(args)) || (!isTuple && next == 0)) {
		return "", vErr(ErrType, "not all arguments converted during string formatting")
	}
	return b.String(), nil
}

// pyStrFormat is Python's str.format for "{}", "{0}", "{name}" fields without format specs.
func pyStrFormat(r *renderer, format string, args []any, kw *Dict) (string, error) {
	var b strings.Builder
	auto := 0
	for i := 0; i < len(format); i++ {
		c := format[i]
		switch {
		case c == '{' && i+1 < len(format) && format[i+1] == '{':
			b.WriteByte('{')
			i++
		case c == '}' && i+1 < len(format) && format[i+1] == '}':
			b.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(format[i:], '}')
			if end < 0 {
				return "", vErr(ErrType, "single '{' encountered in format string")
			}
			field := format[i+1 : i+end]
			i += end
			if strings.ContainsAny(field, ":!") {
				return "", vErr(ErrUnsupported, "format specs in str.format are not supported: {%s}", field)
			}
			var v any
			if field == "" {
				if auto >= len(args) {
					return "", vErr(ErrType, "Replacement index %d out of range", auto)
				}
				v = args[auto]
				auto++
			} else if n, err := strconv.Atoi(field); err == nil {
				if n < 0 || n >= len(args) {
					return "", vErr(ErrType, "Replacement index %d out of range", n)
				}
				v = args[n]
			} else {
				var ok bool
				if kw != nil {
					v, ok = kw.Get(field)
				}
				if !ok {
					return "", vErr(ErrType, "KeyError: %s", pyQuote(field))
				}
			}
			s, err := r.str(v)
			if err != nil {
				return "", err
			}
			b.WriteString(s)
		case c == '}':
			return "", vErr(ErrType, "single '}' encountered in format string")
		default:
			b.WriteByte(c)
		}
		if b.Len() > r.opt.MaxOutput {
			return "", vErr(ErrLimit, "string exceeds %d bytes", r.opt.MaxOutput)
		}
	}
	return b.String(), nil
}
