package jinja

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonOpts are the json.dumps arguments transformers' tojson passes through.
type jsonOpts struct {
	indent      int    // -1: no indent (one line); otherwise newlines and indentStr per level
	indentStr   string // one level of indentation
	itemSep     string // between items: ", " without indent, "," with
	keySep      string // between key and value: ": "
	ensureASCII bool   // escape non-ASCII as \uXXXX
	sortKeys    bool
}

// writeJSON writes v as Python's json.dumps does.
func (r *renderer) writeJSON(b *strings.Builder, v any, o *jsonOpts, level int) error {
	if level > 100 {
		return vErr(ErrType, "maximum JSON nesting depth exceeded")
	}
	if !r.spend(1) || b.Len() > r.opt.MaxOutput {
		return vErr(ErrLimit, "tojson output exceeds the limits")
	}
	newline := func(l int) {
		if o.indent >= 0 {
			b.WriteByte('\n')
			for range l {
				b.WriteString(o.indentStr)
			}
		}
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(jsonFloat(x))
	case string:
		writeJSONString(b, x, o.ensureASCII)
	case []any, tuple:
		items, _ := asSeq(v)
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, e := range items {
			if i > 0 {
				b.WriteString(o.itemSep)
			}
			newline(level + 1)
			if err := r.writeJSON(b, e, o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		b.WriteByte(']')
	case *Dict:
		if x.Len() == 0 {
			b.WriteString("{}")
			return nil
		}
		order := make([]int, x.Len())
		keys := make([]string, x.Len())
		for i, k := range x.keys {
			order[i] = i
			ks, err := jsonKey(k)
			if err != nil {
				return err
			}
			keys[i] = ks
		}
		if o.sortKeys {
			sort.SliceStable(order, func(a, c int) bool { return keys[order[a]] < keys[order[c]] })
		}
		b.WriteByte('{')
		for n, i := range order {
			if n > 0 {
				b.WriteString(o.itemSep)
			}
			newline(level + 1)
			writeJSONString(b, keys[i], o.ensureASCII)
			b.WriteString(o.keySep)
			if err := r.writeJSON(b, x.vals[i], o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		b.WriteByte('}')
	default:
		return vErr(ErrType, "Object of type %s is not JSON serializable", typeName(v))
	}
	return nil
}

// jsonKey converts a dict key as json.dumps does.
func jsonKey(k any) (string, error) {
	switch x := k.(type) {
	case string:
		return x, nil
	case nil:
		return "null", nil
	case bool:
		if x {
			return "true", nil
		}
		return "false", nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return jsonFloat(x), nil
	}
	return "", vErr(ErrType, "keys must be str, int, float, bool or None, not %s", typeName(k))
}

// jsonFloat is json.dumps's float: repr, with NaN and the infinities spelled as JavaScript does.
func jsonFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return pyFloat(f)
}

// writeJSONString writes s quoted as json.dumps does: \" \\ \n \r \t \b \f, other control
// characters as \u00XX, and with ensureASCII every non-ASCII character as \uXXXX (surrogate
// pairs above U+FFFF). Invalid UTF-8 bytes are written as U+FFFD.
func writeJSONString(b *strings.Builder, s string, ensureASCII bool) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20:
				fmt.Fprintf(b, `\u%04x`, r)
			case ensureASCII && r >= 0x80 && r <= 0xffff:
				fmt.Fprintf(b, `\u%04x`, r)
			case ensureASCII && r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}
