package jinja

import (
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// filterFunc implements a filter: v is the value before the "|".
type filterFunc func(r *renderer, v any, args []any, kw *Dict) (any, error)

var filters map[string]filterFunc

func init() {
	filters = map[string]filterFunc{
		"abs":         fAbs,
		"attr":        fAttr,
		"batch":       fBatch,
		"capitalize":  strFilter(pyCapitalize),
		"center":      fCenter,
		"count":       fLength,
		"d":           fDefault,
		"default":     fDefault,
		"dictsort":    fDictsort,
		"e":           fEscape,
		"escape":      fEscape,
		"first":       fFirst,
		"float":       fFloat,
		"forceescape": fEscape,
		"format":      fFormat,
		"indent":      fIndent,
		"int":         fInt,
		"items":       fItems,
		"join":        fJoin,
		"last":        fLast,
		"length":      fLength,
		"list":        fList,
		"lower":       strFilter(pyLower),
		"map":         fMap,
		"max":         fMinMax(true),
		"min":         fMinMax(false),
		"pprint":      func(r *renderer, v any, args []any, kw *Dict) (any, error) { return repr(v), nil },
		"reject":      fSelect(false, false),
		"rejectattr":  fSelect(false, true),
		"replace":     fReplace,
		"reverse":     fReverse,
		"round":       fRound,
		"safe":        func(r *renderer, v any, args []any, kw *Dict) (any, error) { return v, nil },
		"select":      fSelect(true, false),
		"selectattr":  fSelect(true, true),
		"sort":        fSort,
		"string":      func(r *renderer, v any, args []any, kw *Dict) (any, error) { return r.str(v) },
		"sum":         fSum,
		"title":       strFilter(jinjaTitle),
		"tojson":      fToJSON,
		"trim":        fTrim,
		"truncate":    fTruncate,
		"unique":      fUnique,
		"upper":       strFilter(pyUpper),
		"wordcount":   fWordcount,
	}
}

func (r *renderer) applyFilter(f *filterExpr, v any) (any, error) {
	fn, ok := filters[f.name]
	if !ok {
		return nil, errAt(f.pos, ErrUnsupported, "no filter named '%s'", f.name)
	}
	args, kw, err := r.evalArgs(f.args, f.kwName, f.kwVal)
	if err != nil {
		return nil, err
	}
	out, err := fn(r, v, args, kw)
	if err != nil {
		return nil, r.fail(f.pos, err)
	}
	return out, nil
}

// strFilter is a filter taking no arguments that maps str(value).
func strFilter(fn func(string) string) filterFunc {
	return func(r *renderer, v any, args []any, kw *Dict) (any, error) {
		if _, err := bindArgs("filter", args, kw, nil, 0); err != nil {
			return nil, err
		}
		s, err := r.str(v)
		if err != nil {
			return nil, err
		}
		return fn(s), nil
	}
}

func fAbs(r *renderer, v any, args []any, kw *Dict) (any, error) {
	i, f, flt, ok := asNumber(v)
	if !ok {
		return nil, undefOr(v, vErr(ErrType, "bad operand type for abs(): '%s'", typeName(v)))
	}
	if flt {
		return math.Abs(f), nil
	}
	if i == math.MinInt64 {
		return nil, vErr(ErrType, "integer overflow")
	}
	if i < 0 {
		return -i, nil
	}
	return i, nil
}

func fAttr(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("attr", args, kw, []string{"name"}, 1)
	if err != nil {
		return nil, err
	}
	name, err := argStr("attr", "name", a[0])
	if err != nil {
		return nil, err
	}
	return getAttr(v, name)
}

func fBatch(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("batch", args, kw, []string{"linecount", "fill_with"}, 1)
	if err != nil {
		return nil, err
	}
	n, err := argInt("batch", "linecount", a[0])
	if err != nil {
		return nil, err
	}
	var rows []any
	started := false
	i := 0
	return &iterator{kind: "generator", fname: "do_batch", pull: func() (any, bool, error) {
		if !started {
			started = true
			items, err := r.iterate(v)
			if err != nil {
				return nil, false, err
			}
			if n <= 0 && len(items) > 0 {
				return nil, false, vErr(ErrType, "batch(): linecount must be positive")
			}
			for start := 0; start < len(items); start += int(n) {
				row := append([]any{}, items[start:min(start+int(n), len(items))]...)
				if a[1] != missing {
					for int64(len(row)) < n {
						row = append(row, a[1])
					}
				}
				rows = append(rows, row)
			}
		}
		if i >= len(rows) {
			return nil, false, nil
		}
		i++
		return rows[i-1], true, nil
	}}, nil
}

func fCenter(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("center", args, kw, []string{"width"}, 0)
	if err != nil {
		return nil, err
	}
	w, err := argInt("center", "width", orDefault(a[0], int64(80)))
	if err != nil {
		return nil, err
	}
	if w > int64(r.opt.MaxOutput) {
		return nil, vErr(ErrLimit, "center(): width %d exceeds %d", w, r.opt.MaxOutput)
	}
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	n := utf8.RuneCountInString(s)
	if int64(n) >= w {
		return s, nil
	}
	// Python's str.center puts the extra space on the right when the margin is odd and the
	// width even, on the left otherwise.
	marg := int(w) - n
	left := marg/2 + (marg & int(w) & 1)
	return strings.Repeat(" ", left) + s + strings.Repeat(" ", marg-left), nil
}

func fDefault(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("default", args, kw, []string{"default_value", "boolean"}, 0)
	if err != nil {
		return nil, err
	}
	_, isUndef := v.(undefined)
	if isUndef || (truthy(orDefault(a[1], false)) && !truthy(v)) {
		return orDefault(a[0], ""), nil
	}
	return v, nil
}

func fDictsort(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("dictsort", args, kw, []string{"case_sensitive", "by", "reverse"}, 0)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*Dict)
	if !ok {
		return nil, undefOr(v, vErr(ErrType, "dictsort(): dict required, not %s", typeName(v)))
	}
	by := orDefault(a[1], "key")
	pos := 0
	switch by {
	case "key":
	case "value":
		pos = 1
	default:
		return nil, vErr(ErrType, "You can only sort by either \"key\" or \"value\"")
	}
	cs := truthy(orDefault(a[0], false))
	items := make([]any, d.Len())
	for i, k := range d.keys {
		items[i] = tuple{k, d.vals[i]}
	}
	return sortValues(items, func(it any) (any, error) { return sortKey(it.(tuple)[pos], cs), nil }, truthy(orDefault(a[2], false)))
}

func fEscape(r *renderer, v any, args []any, kw *Dict) (any, error) {
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	return htmlEscape(s), nil
}

func fFirst(r *renderer, v any, args []any, kw *Dict) (any, error) {
	// next(iter(seq)): an iterator gives up only its first item.
	if it, ok := v.(*iterator); ok {
		item, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return undefined{msg: "No first item, sequence was empty."}, nil
		}
		return item, nil
	}
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return undefined{msg: "No first item, sequence was empty."}, nil
	}
	return items[0], nil
}

func fLast(r *renderer, v any, args []any, kw *Dict) (any, error) {
	// next(iter(reversed(seq))): iterators are not reversible.
	if it, ok := v.(*iterator); ok {
		return nil, vErr(ErrType, "'%s' object is not reversible", it.kind)
	}
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return undefined{msg: "No last item, sequence was empty."}, nil
	}
	return items[len(items)-1], nil
}

// fWordcount counts the runs of Python's \w (letters, digits, underscore) in str(value).
func fWordcount(r *renderer, v any, args []any, kw *Dict) (any, error) {
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	n, in := int64(0), false
	for _, c := range s {
		w := c == '_' || unicode.IsLetter(c) || unicode.IsNumber(c)
		if w && !in {
			n++
		}
		in = w
	}
	return n, nil
}

func fFloat(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("float", args, kw, []string{"default"}, 0)
	if err != nil {
		return nil, err
	}
	if u, ok := v.(undefined); ok { // float(Undefined) raises UndefinedError
		return nil, vErr(ErrUndefined, "%s", u.describe())
	}
	def := orDefault(a[0], 0.0)
	switch x := v.(type) {
	case string:
		f, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimFunc(x, pyIsSpace), "_", ""), 64)
		if err != nil && !isRangeErr(err) {
			return def, nil
		}
		return f, nil
	}
	if _, f, _, ok := asNumber(v); ok {
		return f, nil
	}
	return def, nil
}

func fInt(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("int", args, kw, []string{"default", "base"}, 0)
	if err != nil {
		return nil, err
	}
	def := orDefault(a[0], int64(0))
	base, err := argInt("int", "base", orDefault(a[1], int64(10)))
	if err != nil {
		return nil, err
	}
	if u, ok := v.(undefined); ok { // int(Undefined) raises UndefinedError
		return nil, vErr(ErrUndefined, "%s", u.describe())
	}
	switch x := v.(type) {
	case string:
		s := strings.ReplaceAll(strings.TrimFunc(x, pyIsSpace), "_", "")
		if base == 16 || base == 8 || base == 2 {
			s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(s), "0x"), "0o"), "0b")
		}
		if base >= 2 && base <= 36 {
			if n, err := strconv.ParseInt(s, int(base), 64); err == nil {
				return n, nil
			}
		}
		// jinja2 falls back to int(float(value)).
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) && math.Abs(f) < 9.2e18 {
			return int64(f), nil
		}
		return def, nil
	}
	if i, f, flt, ok := asNumber(v); ok {
		if flt {
			if math.IsInf(f, 0) || math.IsNaN(f) || math.Abs(f) >= 9.2e18 {
				return def, nil
			}
			return int64(f), nil
		}
		return i, nil
	}
	return def, nil
}

func fItems(r *renderer, v any, args []any, kw *Dict) (any, error) {
	// jinja2's do_items is a generator function: even its type check waits for the first item.
	started := false
	var pairs []any
	i := 0
	return &iterator{kind: "generator", fname: "do_items", pull: func() (any, bool, error) {
		if !started {
			started = true
			switch d := v.(type) {
			case undefined:
			case *Dict:
				pairs = dictItems(d)
			default:
				return nil, false, vErr(ErrType, "Can only get item pairs from a mapping.")
			}
		}
		if i >= len(pairs) {
			return nil, false, nil
		}
		i++
		return pairs[i-1], true, nil
	}}, nil
}

// dictItems is list(d.items()): (key, value) tuples.
func dictItems(d *Dict) []any {
	out := make([]any, d.Len())
	for i, k := range d.keys {
		out[i] = tuple{k, d.vals[i]}
	}
	return out
}

func fJoin(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("join", args, kw, []string{"d", "attribute"}, 0)
	if err != nil {
		return nil, err
	}
	sep, err := r.str(orDefault(a[0], ""))
	if err != nil {
		return nil, err
	}
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for i, it := range items {
		if a[1] != missing {
			if it, err = attrGetter(it, toStr(a[1])); err != nil {
				return nil, err
			}
		}
		if i > 0 {
			b.WriteString(sep)
		}
		s, err := r.str(it)
		if err != nil {
			return nil, err
		}
		b.WriteString(s)
		if b.Len() > r.opt.MaxOutput {
			return nil, vErr(ErrLimit, "string exceeds %d bytes", r.opt.MaxOutput)
		}
	}
	return b.String(), nil
}

func fLength(r *renderer, v any, args []any, kw *Dict) (any, error) {
	n, err := length(v)
	return int64(n), err
}

func fList(r *renderer, v any, args []any, kw *Dict) (any, error) {
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	return append([]any{}, items...), nil
}

func fMap(r *renderer, v any, args []any, kw *Dict) (any, error) {
	if len(args) == 0 && kw != nil {
		a, err := bindArgs("map", nil, kw, []string{"attribute", "default"}, 1)
		if err != nil {
			return nil, err
		}
		return lazyIter(r, "sync_do_map", v, true, func(it any) (any, bool, error) {
			x, err := attrGetter(it, toStr(a[0]))
			if err != nil {
				return nil, false, err
			}
			if _, undef := x.(undefined); undef && a[1] != missing {
				x = a[1]
			}
			return x, true, nil
		}), nil
	}
	if len(args) == 0 {
		return nil, vErr(ErrType, "map requires a filter argument")
	}
	name, err := argStr("map", "filter", args[0])
	if err != nil {
		return nil, err
	}
	rest := args[1:]
	return lazyIter(r, "sync_do_map", v, true, func(it any) (any, bool, error) {
		fn, ok := filters[name]
		if !ok {
			return nil, false, vErr(ErrUnsupported, "no filter named '%s'", name)
		}
		x, err := fn(r, it, rest, kw)
		return x, true, err
	}), nil
}

func fMinMax(isMax bool) filterFunc {
	return func(r *renderer, v any, args []any, kw *Dict) (any, error) {
		a, err := bindArgs("min/max", args, kw, []string{"case_sensitive", "attribute"}, 0)
		if err != nil {
			return nil, err
		}
		items, err := r.iterate(v)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return undefined{msg: "No aggregated item, sequence was empty."}, nil
		}
		cs := truthy(orDefault(a[0], false))
		key := func(it any) (any, error) {
			if a[1] != missing {
				var err error
				if it, err = attrGetter(it, toStr(a[1])); err != nil {
					return nil, err
				}
			}
			return sortKey(it, cs), nil
		}
		best := items[0]
		bk, err := key(best)
		if err != nil {
			return nil, err
		}
		for _, it := range items[1:] {
			k, err := key(it)
			if err != nil {
				return nil, err
			}
			c, err := compare(k, bk)
			if err != nil {
				return nil, err
			}
			if (isMax && c > 0) || (!isMax && c < 0) {
				best, bk = it, k
			}
		}
		return best, nil
	}
}

// fSelect implements select, reject, selectattr and rejectattr.
func fSelect(keep, byAttr bool) filterFunc {
	return func(r *renderer, v any, args []any, kw *Dict) (any, error) {
		attr := ""
		var err error
		if byAttr {
			if len(args) == 0 {
				return nil, vErr(ErrType, "missing parameter for attribute name")
			}
			if attr, err = argStr("selectattr", "attribute", args[0]); err != nil {
				return nil, err
			}
			args = args[1:]
		}
		test := ""
		if len(args) > 0 {
			if test, err = argStr("select", "test", args[0]); err != nil {
				return nil, err
			}
			args = args[1:]
		}
		return lazyIter(r, "select_or_reject", v, true, func(it any) (any, bool, error) {
			x := it
			if byAttr {
				var err error
				if x, err = attrGetter(it, attr); err != nil {
					return nil, false, err
				}
			}
			ok := truthy(x)
			if test != "" {
				res, err := r.runTest(test, x, args, kw)
				if err != nil {
					return nil, false, err
				}
				ok = res.(bool)
			}
			return it, ok == keep, nil
		}), nil
	}
}

func fReplace(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("replace", args, kw, []string{"old", "new", "count"}, 2)
	if err != nil {
		return nil, err
	}
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	old, err := r.str(a[0])
	if err != nil {
		return nil, err
	}
	nw, err := r.str(a[1])
	if err != nil {
		return nil, err
	}
	n := int64(-1)
	if a[2] != missing && a[2] != nil {
		if n, err = argInt("replace", "count", a[2]); err != nil {
			return nil, err
		}
	}
	return boundedReplace(s, old, nw, n, r.opt.MaxOutput)
}

// boundedReplace is Python's str.replace(old, new, count) refusing results over maxLen.
func boundedReplace(s, old, nw string, n int64, maxLen int) (string, error) {
	count := int64(strings.Count(s, old))
	if old == "" {
		count = int64(utf8.RuneCountInString(s)) + 1
	}
	if n >= 0 && n < count {
		count = n
	}
	if int64(len(s))+count*(int64(len(nw))-int64(len(old))) > int64(maxLen) {
		return "", vErr(ErrLimit, "string exceeds %d bytes", maxLen)
	}
	if n < 0 {
		return strings.ReplaceAll(s, old, nw), nil
	}
	return strings.Replace(s, old, nw, int(min(n, int64(math.MaxInt32)))), nil
}

func fReverse(r *renderer, v any, args []any, kw *Dict) (any, error) {
	switch x := v.(type) {
	case string:
		rs := []rune(x)
		for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
			rs[i], rs[j] = rs[j], rs[i]
		}
		return string(rs), nil
	case []any, tuple, *Dict:
		// reversed(value): a lazy reverse iterator.
		items, err := r.iterate(x)
		if err != nil {
			return nil, err
		}
		rev := make([]any, len(items))
		for i, it := range items {
			rev[len(items)-1-i] = it
		}
		kind := "list_reverseiterator"
		if _, ok := x.(*Dict); ok {
			kind = "dict_reversekeyiterator"
		} else if _, ok := x.(tuple); ok {
			kind = "reversed"
		}
		return sliceIter(kind, rev), nil
	}
	// Not reversible: list(value), reversed in place.
	items, err := r.iterate(v)
	if err != nil {
		return nil, vErr(ErrType, "argument must be iterable")
	}
	out := make([]any, len(items))
	for i, it := range items {
		out[len(items)-1-i] = it
	}
	return out, nil
}

func fRound(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("round", args, kw, []string{"precision", "method"}, 0)
	if err != nil {
		return nil, err
	}
	prec, err := argInt("round", "precision", orDefault(a[0], int64(0)))
	if err != nil {
		return nil, err
	}
	method := orDefault(a[1], "common")
	i, f, flt, ok := asNumber(v)
	if !ok {
		return nil, undefOr(v, vErr(ErrType, "round(): number required, not %s", typeName(v)))
	}
	if !flt {
		f = float64(i)
	}
	p := math.Pow(10, float64(max(min(prec, 300), -300)))
	var out float64
	switch method {
	case "common":
		// Python's round(): half to even.
		out = math.RoundToEven(f*p) / p
	case "ceil":
		out = math.Ceil(f*p) / p
	case "floor":
		out = math.Floor(f*p) / p
	default:
		return nil, vErr(ErrType, "method must be common, ceil or floor")
	}
	if !flt && method == "common" {
		return i, nil
	}
	return out, nil
}

func fSort(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("sort", args, kw, []string{"reverse", "case_sensitive", "attribute"}, 0)
	if err != nil {
		return nil, err
	}
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	cs := truthy(orDefault(a[1], false))
	// jinja2's sort keys are lists ([value]), so equal values compare equal without calling
	// "<" (which would fail on Undefined).
	return sortValues(items, func(it any) (any, error) {
		if a[2] != missing {
			var err error
			if it, err = attrGetter(it, toStr(a[2])); err != nil {
				return nil, err
			}
		}
		return tuple{sortKey(it, cs)}, nil
	}, truthy(orDefault(a[0], false)))
}

func fSum(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("sum", args, kw, []string{"attribute", "start"}, 0)
	if err != nil {
		return nil, err
	}
	items, err := r.iterate(v)
	if err != nil {
		return nil, err
	}
	total := orDefault(a[1], int64(0))
	for _, it := range items {
		if a[0] != missing {
			if it, err = attrGetter(it, toStr(a[0])); err != nil {
				return nil, err
			}
		}
		if total, err = arith("+", total, it, r.opt.MaxOutput); err != nil {
			return nil, err
		}
	}
	return total, nil
}

func fToJSON(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("tojson", args, kw, []string{"ensure_ascii", "indent", "separators", "sort_keys"}, 0)
	if err != nil {
		return nil, err
	}
	// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent,
	// separators=separators, sort_keys=sort_keys); positionally, jinja2's tojson(indent) is the
	// common use, so a lone positional integer is taken as indent.
	if len(args) == 1 {
		if _, _, flt, ok := asNumber(args[0]); ok && !flt {
			a[0], a[1] = missing, args[0]
		}
	}
	opts := jsonOpts{indent: -1, ensureASCII: truthy(orDefault(a[0], false)), sortKeys: truthy(orDefault(a[3], false))}
	switch ind := orDefault(a[1], nil).(type) {
	case nil:
	case string:
		opts.indentStr, opts.indent = ind, 0
	default:
		n, err := argInt("tojson", "indent", ind)
		if err != nil {
			return nil, err
		}
		if n > 1000 {
			return nil, vErr(ErrLimit, "tojson(): indent %d too large", n)
		}
		opts.indentStr, opts.indent = strings.Repeat(" ", int(max(n, 0))), 0
	}
	opts.itemSep, opts.keySep = ", ", ": "
	if opts.indent >= 0 {
		opts.itemSep = ","
	}
	if s := orDefault(a[2], nil); s != nil {
		l, ok := asSeq(s)
		if !ok || len(l) != 2 {
			return nil, vErr(ErrType, "tojson(): separators must be a pair of strings")
		}
		opts.itemSep, opts.keySep = toStr(l[0]), toStr(l[1])
	}
	var b strings.Builder
	if err := r.writeJSON(&b, v, &opts, 0); err != nil {
		return nil, err
	}
	return b.String(), nil
}

func fTrim(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("trim", args, kw, []string{"chars"}, 0)
	if err != nil {
		return nil, err
	}
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	return pyStrip(s, a[0], true, true)
}

func fTruncate(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("truncate", args, kw, []string{"length", "killwords", "end", "leeway"}, 0)
	if err != nil {
		return nil, err
	}
	// jinja2's truncate measures len(s) and slices s: str only, plus the values whose len()
	// keeps them under the limit (returned unchanged).
	s, isStr := v.(string)
	n, err := argInt("truncate", "length", orDefault(a[0], int64(255)))
	if err != nil {
		return nil, err
	}
	end := toStr(orDefault(a[2], "..."))
	leeway, err := argInt("truncate", "leeway", orDefault(a[3], int64(5)))
	if err != nil {
		return nil, err
	}
	endLen := int64(utf8.RuneCountInString(end))
	if n < endLen {
		return nil, vErr(ErrType, "expected length >= %d, got %d", endLen, n)
	}
	if !isStr {
		if _, ok := v.(undefined); ok {
			return v, nil
		}
		l, err := length(v)
		if err != nil {
			return nil, err
		}
		if int64(l) <= n+leeway {
			return v, nil
		}
		return nil, vErr(ErrUnsupported, "truncate of a long %s", typeName(v))
	}
	rs := []rune(s)
	if int64(len(rs)) <= n+leeway {
		return s, nil
	}
	cut := string(rs[:n-endLen])
	if truthy(orDefault(a[1], false)) {
		return cut + end, nil
	}
	if i := strings.LastIndexByte(cut, ' '); i >= 0 {
		cut = cut[:i]
	}
	return cut + end, nil
}

func fUnique(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("unique", args, kw, []string{"case_sensitive", "attribute"}, 0)
	if err != nil {
		return nil, err
	}
	cs := truthy(orDefault(a[0], false))
	var seen []any
	return lazyIter(r, "sync_do_unique", v, false, func(it any) (any, bool, error) {
		k := it
		if a[1] != missing {
			var err error
			if k, err = attrGetter(it, toStr(a[1])); err != nil {
				return nil, false, err
			}
		}
		k = sortKey(k, cs)
		for _, s := range seen {
			if equalR(r, s, k) {
				return nil, false, nil
			}
		}
		seen = append(seen, k)
		return it, true, nil
	}), nil
}

func fFormat(r *renderer, v any, args []any, kw *Dict) (any, error) {
	s, err := r.str(v)
	if err != nil {
		return nil, err
	}
	if kw != nil && kw.Len() > 0 {
		if len(args) > 0 {
			return nil, vErr(ErrType, "can't handle positional and keyword arguments at the same time")
		}
		return percentFormat(s, kw, r.opt.MaxOutput)
	}
	return percentFormat(s, tuple(args), r.opt.MaxOutput)
}

func fIndent(r *renderer, v any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("indent", args, kw, []string{"width", "first", "blank"}, 0)
	if err != nil {
		return nil, err
	}
	// jinja2's indent works on str only (s += "\n" fails on anything else).
	s, ok := v.(string)
	if !ok {
		return nil, undefOr(v, vErr(ErrType, "unsupported operand type(s) for +=: '%s' and 'str'", typeName(v)))
	}
	var pad string
	switch w := orDefault(a[0], int64(4)).(type) {
	case string:
		pad = w
	default:
		n, err := argInt("indent", "width", w)
		if err != nil {
			return nil, err
		}
		if n > 1000 {
			return nil, vErr(ErrLimit, "indent(): width %d too large", n)
		}
		pad = strings.Repeat(" ", int(max(n, 0)))
	}
	first, blank := truthy(orDefault(a[1], false)), truthy(orDefault(a[2], false))
	if int64(len(s))*int64(len(pad)+1) > int64(r.opt.MaxOutput) {
		return nil, vErr(ErrLimit, "string exceeds %d bytes", r.opt.MaxOutput)
	}
	// jinja2: s += "\n"; lines = s.splitlines(); empty lines are not indented unless blank.
	lines := pySplitlines(s+"\n", false)
	var b strings.Builder
	if first {
		b.WriteString(pad)
	}
	for i, l := range lines {
		line := l.(string)
		if i > 0 {
			b.WriteByte('\n')
			if blank || line != "" {
				b.WriteString(pad)
			}
		}
		b.WriteString(line)
	}
	return b.String(), nil
}
