package jinja

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// boundMethod is a Python method bound to its receiver, e.g. "abc".upper.
type boundMethod struct {
	recv  any
	mname string
	fn    func(r *renderer, recv any, args []any, kw *Dict) (any, error)
}

func (m *boundMethod) name() string { return typeName(m.recv) + "." + m.mname }
func (m *boundMethod) call(r *renderer, pos int, args []any, kw *Dict) (any, error) {
	return m.fn(r, m.recv, args, kw)
}

// unsafeMethod is a mutating method that the immutable sandbox refuses to call.
type unsafeMethod struct {
	typ, mname string
}

func (m *unsafeMethod) name() string { return m.typ + "." + m.mname }
func (m *unsafeMethod) call(r *renderer, pos int, args []any, kw *Dict) (any, error) {
	return nil, vErr(ErrUnsupported, "access to attribute '%s' of '%s' object is unsafe", m.mname, m.typ)
}

type methodFunc = func(r *renderer, recv any, args []any, kw *Dict) (any, error)

var (
	strMethods  map[string]methodFunc
	dictMethods map[string]methodFunc
	listMethods map[string]methodFunc
	// mutating methods of Python's list and dict: present, but refused when called.
	listMutators = map[string]bool{"append": true, "extend": true, "insert": true, "pop": true, "remove": true, "reverse": true, "sort": true, "clear": true}
	dictMutators = map[string]bool{"pop": true, "popitem": true, "setdefault": true, "update": true, "clear": true}
)

func init() {
	strMethods = map[string]methodFunc{
		"upper":      strNoArg(pyUpper),
		"lower":      strNoArg(pyLower),
		"casefold":   strNoArg(pyLower),
		"capitalize": strNoArg(pyCapitalize),
		"title":      strNoArg(pyTitle),
		"swapcase": strNoArg(func(s string) string {
			return strings.Map(func(c rune) rune {
				if unicode.IsUpper(c) {
					return unicode.ToLower(c)
				}
				return unicode.ToUpper(c)
			}, s)
		}),
		"strip":      strStrip(true, true),
		"lstrip":     strStrip(true, false),
		"rstrip":     strStrip(false, true),
		"split":      strSplit(false),
		"rsplit":     strSplit(true),
		"splitlines": mSplitlines,
		"startswith": strAffix(true),
		"endswith":   strAffix(false),
		"replace":    mReplace,
		"find":       strFind(false, false),
		"rfind":      strFind(true, false),
		"index":      strFind(false, true),
		"rindex":     strFind(true, true),
		"count":      mStrCount,
		"join":       mJoin,
		"format":     mFormat,
		"isdigit":    strPredicate(func(c rune) bool { return unicode.IsDigit(c) }),
		"isnumeric":  strPredicate(func(c rune) bool { return unicode.IsNumber(c) }),
		"isdecimal":  strPredicate(func(c rune) bool { return unicode.Is(unicode.Nd, c) }),
		"isalpha":    strPredicate(unicode.IsLetter),
		"isalnum":    strPredicate(func(c rune) bool { return unicode.IsLetter(c) || unicode.IsNumber(c) }),
		"isspace":    strPredicate(pyIsSpace),
		"islower":    mCaseTest("lower"),
		"isupper":    mCaseTest("upper"),
		"removeprefix": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			a, err := bindArgs("removeprefix", args, kw, []string{"prefix"}, 1)
			if err != nil {
				return nil, err
			}
			p, err := argStr("removeprefix", "prefix", a[0])
			if err != nil {
				return nil, err
			}
			return strings.TrimPrefix(recv.(string), p), nil
		},
		"removesuffix": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			a, err := bindArgs("removesuffix", args, kw, []string{"suffix"}, 1)
			if err != nil {
				return nil, err
			}
			p, err := argStr("removesuffix", "suffix", a[0])
			if err != nil {
				return nil, err
			}
			return strings.TrimSuffix(recv.(string), p), nil
		},
	}
	dictMethods = map[string]methodFunc{
		"items": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			if _, err := bindArgs("items", args, kw, nil, 0); err != nil {
				return nil, err
			}
			return dictItems(recv.(*Dict)), nil
		},
		"keys": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			if _, err := bindArgs("keys", args, kw, nil, 0); err != nil {
				return nil, err
			}
			return append([]any{}, recv.(*Dict).keys...), nil
		},
		"values": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			if _, err := bindArgs("values", args, kw, nil, 0); err != nil {
				return nil, err
			}
			return append([]any{}, recv.(*Dict).vals...), nil
		},
		"get": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			a, err := bindArgs("get", args, kw, []string{"key", "default"}, 1)
			if err != nil {
				return nil, err
			}
			if v, ok := recv.(*Dict).Get(a[0]); ok {
				return v, nil
			}
			return orDefault(a[1], nil), nil
		},
		"copy": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			d := recv.(*Dict)
			c := NewDict()
			for i, k := range d.keys {
				c.set(k, d.vals[i])
			}
			return c, nil
		},
	}
	listMethods = map[string]methodFunc{
		"count": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			a, err := bindArgs("count", args, kw, []string{"value"}, 1)
			if err != nil {
				return nil, err
			}
			n := int64(0)
			items, _ := asSeq(recv)
			for _, it := range items {
				if equalR(r, it, a[0]) {
					n++
				}
			}
			return n, nil
		},
		"index": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			a, err := bindArgs("index", args, kw, []string{"value"}, 1)
			if err != nil {
				return nil, err
			}
			items, _ := asSeq(recv)
			for i, it := range items {
				if equalR(r, it, a[0]) {
					return int64(i), nil
				}
			}
			return nil, vErr(ErrType, "%s is not in list", repr(a[0]))
		},
		"copy": func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
			items, _ := asSeq(recv)
			return append([]any{}, items...), nil
		},
	}
}

// methodOf returns the bound method name of obj, if its Python type has one.
func methodOf(obj any, name string) (any, bool) {
	var table map[string]methodFunc
	var mutators map[string]bool
	switch obj.(type) {
	case string:
		table = strMethods
	case *Dict:
		table, mutators = dictMethods, dictMutators
	case []any:
		table, mutators = listMethods, listMutators
	case tuple:
		if name != "count" && name != "index" {
			return nil, false
		}
		table = listMethods
	default:
		return nil, false
	}
	if fn, ok := table[name]; ok {
		return &boundMethod{recv: obj, mname: name, fn: fn}, true
	}
	if mutators[name] {
		return &unsafeMethod{typ: typeName(obj), mname: name}, true
	}
	return nil, false
}

func strNoArg(fn func(string) string) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		if _, err := bindArgs("method", args, kw, nil, 0); err != nil {
			return nil, err
		}
		return fn(recv.(string)), nil
	}
}

func strPredicate(fn func(rune) bool) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		s := recv.(string)
		if s == "" {
			return false, nil
		}
		for _, c := range s {
			if !fn(c) {
				return false, nil
			}
		}
		return true, nil
	}
}

func mCaseTest(name string) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		return r.runTest(name, recv, nil, nil)
	}
}

func strStrip(left, right bool) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		a, err := bindArgs("strip", args, kw, []string{"chars"}, 0)
		if err != nil {
			return nil, err
		}
		return pyStrip(recv.(string), a[0], left, right)
	}
}

func strSplit(fromRight bool) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		a, err := bindArgs("split", args, kw, []string{"sep", "maxsplit"}, 0)
		if err != nil {
			return nil, err
		}
		maxsplit, err := argInt("split", "maxsplit", orDefault(a[1], int64(-1)))
		if err != nil {
			return nil, err
		}
		return pySplit(recv.(string), a[0], maxsplit, fromRight)
	}
}

func mSplitlines(r *renderer, recv any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("splitlines", args, kw, []string{"keepends"}, 0)
	if err != nil {
		return nil, err
	}
	return pySplitlines(recv.(string), truthy(orDefault(a[0], false))), nil
}

// runeSlice applies Python's optional start/end arguments (character indexes) to s.
func runeSlice(s string, start, end any) (string, error) {
	if start == missing && end == missing {
		return s, nil
	}
	if start == missing {
		start = nil
	}
	if end == missing {
		end = nil
	}
	v, err := sliceValue(s, start, end, nil)
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func strAffix(prefix bool) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		a, err := bindArgs("startswith", args, kw, []string{"prefix", "start", "end"}, 1)
		if err != nil {
			return nil, err
		}
		s, err := runeSlice(recv.(string), a[1], a[2])
		if err != nil {
			return nil, err
		}
		var cands []any
		switch p := a[0].(type) {
		case string:
			cands = []any{p}
		case []any:
			cands = p
		case tuple:
			cands = p
		default:
			return nil, undefOr(p, vErr(ErrType, "startswith first arg must be str or a tuple of str, not %s", typeName(p)))
		}
		for _, c := range cands {
			cs, ok := c.(string)
			if !ok {
				return nil, vErr(ErrType, "tuple for startswith must only contain str, not %s", typeName(c))
			}
			if (prefix && strings.HasPrefix(s, cs)) || (!prefix && strings.HasSuffix(s, cs)) {
				return true, nil
			}
		}
		return false, nil
	}
}

func mReplace(r *renderer, recv any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("replace", args, kw, []string{"old", "new", "count"}, 2)
	if err != nil {
		return nil, err
	}
	old, err := argStr("replace", "old", a[0])
	if err != nil {
		return nil, err
	}
	nw, err := argStr("replace", "new", a[1])
	if err != nil {
		return nil, err
	}
	n, err := argInt("replace", "count", orDefault(a[2], int64(-1)))
	if err != nil {
		return nil, err
	}
	return boundedReplace(recv.(string), old, nw, n, r.opt.MaxOutput)
}

func strFind(fromRight, raise bool) methodFunc {
	return func(r *renderer, recv any, args []any, kw *Dict) (any, error) {
		a, err := bindArgs("find", args, kw, []string{"sub", "start", "end"}, 1)
		if err != nil {
			return nil, err
		}
		sub, err := argStr("find", "sub", a[0])
		if err != nil {
			return nil, err
		}
		s := recv.(string)
		offset := 0
		if a[1] != missing && a[1] != nil {
			st, err := argInt("find", "start", a[1])
			if err != nil {
				return nil, err
			}
			n := int64(utf8.RuneCountInString(s))
			if st < 0 {
				st = max(st+n, 0)
			}
			offset = int(min(st, n))
		}
		if s, err = runeSlice(s, a[1], a[2]); err != nil {
			return nil, err
		}
		var i int
		if fromRight {
			i = strings.LastIndex(s, sub)
		} else {
			i = strings.Index(s, sub)
		}
		if i < 0 {
			if raise {
				return nil, vErr(ErrType, "substring not found")
			}
			return int64(-1), nil
		}
		return int64(offset + utf8.RuneCountInString(s[:i])), nil
	}
}

func mStrCount(r *renderer, recv any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("count", args, kw, []string{"sub"}, 1)
	if err != nil {
		return nil, err
	}
	sub, err := argStr("count", "sub", a[0])
	if err != nil {
		return nil, err
	}
	s := recv.(string)
	if sub == "" {
		return int64(utf8.RuneCountInString(s) + 1), nil
	}
	return int64(strings.Count(s, sub)), nil
}

func mJoin(r *renderer, recv any, args []any, kw *Dict) (any, error) {
	a, err := bindArgs("join", args, kw, []string{"iterable"}, 1)
	if err != nil {
		return nil, err
	}
	items, err := r.iterate(a[0])
	if err != nil {
		return nil, err
	}
	parts := make([]string, len(items))
	total := 0
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, vErr(ErrType, "sequence item %d: expected str instance, %s found", i, typeName(it))
		}
		parts[i] = s
		total += len(s) + len(recv.(string))
		if total > r.opt.MaxOutput {
			return nil, vErr(ErrLimit, "string exceeds %d bytes", r.opt.MaxOutput)
		}
	}
	return strings.Join(parts, recv.(string)), nil
}

func mFormat(r *renderer, recv any, args []any, kw *Dict) (any, error) {
	return pyStrFormat(r, recv.(string), args, kw)
}
