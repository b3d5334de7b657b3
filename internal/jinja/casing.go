package jinja

import (
	"strings"
	"unicode"
)

// Python's str.upper/lower/capitalize/title use Unicode's full case mappings; Go's unicode
// package has only the one-to-one mappings. specialUpper holds the unconditional one-to-many
// mappings of SpecialCasing.txt for Latin and Armenian ({upper, title}); the Greek iota-subscript
// forms are left to the simple mappings.
var specialUpper = map[rune][2]string{
	'\u00DF': {"SS", "Ss"},
	'\uFB00': {"FF", "Ff"},
	'\uFB01': {"FI", "Fi"},
	'\uFB02': {"FL", "Fl"},
	'\uFB03': {"FFI", "Ffi"},
	'\uFB04': {"FFL", "Ffl"},
	'\uFB05': {"ST", "St"},
	'\uFB06': {"ST", "St"},
	'\u0587': {"\u0535\u0552", "\u0535\u0582"},
	'\uFB13': {"\u0544\u0546", "\u0544\u0576"},
	'\uFB14': {"\u0544\u0535", "\u0544\u0565"},
	'\uFB15': {"\u0544\u053B", "\u0544\u056B"},
	'\uFB16': {"\u054E\u0546", "\u054E\u0576"},
	'\uFB17': {"\u0544\u053D", "\u0544\u056D"},
	'\u0149': {"\u02BCN", "\u02BCN"},
	'\u0390': {"\u0399\u0308\u0301", "\u0399\u0308\u0301"},
	'\u03B0': {"\u03A5\u0308\u0301", "\u03A5\u0308\u0301"},
	'\u01F0': {"J\u030C", "J\u030C"},
	'\u1E96': {"H\u0331", "H\u0331"},
	'\u1E97': {"T\u0308", "T\u0308"},
	'\u1E98': {"W\u030A", "W\u030A"},
	'\u1E99': {"Y\u030A", "Y\u030A"},
	'\u1E9A': {"A\u02BE", "A\u02BE"},
}

// pyUpper is Python's str.upper.
func pyUpper(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if m, ok := specialUpper[r]; ok {
			b.WriteString(m[0])
			continue
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// pyTitleRune writes the full title-case mapping of r.
func pyTitleRune(b *strings.Builder, r rune) {
	if m, ok := specialUpper[r]; ok {
		b.WriteString(m[1])
		return
	}
	b.WriteRune(unicode.ToTitle(r))
}

// caseIgnorable approximates Unicode's Case_Ignorable property (used by the final sigma rule).
func caseIgnorable(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk) ||
		r == '\'' || r == '.' || r == ':' || r == '^' || r == '`' || r == '\u00AD' || r == '\u2019'
}

// pyLower is Python's str.lower: full mappings (İ → i̇) and the final sigma rule (Σ → ς at the
// end of a word).
func pyLower(s string) string {
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch r {
		case '\u0130':
			b.WriteString("i\u0307")
		case '\u03A3':
			b.WriteRune(sigmaLower(rs, i))
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// sigmaLower applies Final_Sigma to the capital sigma at rs[i].
func sigmaLower(rs []rune, i int) rune {
	before := false
	for j := i - 1; j >= 0; j-- {
		if caseIgnorable(rs[j]) {
			continue
		}
		before = isCased(rs[j])
		break
	}
	after := false
	for j := i + 1; j < len(rs); j++ {
		if caseIgnorable(rs[j]) {
			continue
		}
		after = isCased(rs[j])
		break
	}
	if before && !after {
		return '\u03C2'
	}
	return '\u03C3'
}
