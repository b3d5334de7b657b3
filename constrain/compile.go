package constrain

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Grammar is a compiled grammar: rules of alternatives of byte-level elements. It is immutable and safe for
// concurrent use by many Matchers.
type Grammar struct {
	elems    []elem      // every alternative of every rule, each ended by an elemEnd
	sets     [][4]uint64 // byte sets referenced by elemBytes
	ruleAlts [][]int32   // per rule, the position in elems where each alternative starts
	ruleName []string    // per rule, for messages (anonymous rules name their defining rule)
	root     int32
	src      string // the GBNF text
}

type elemKind uint8

const (
	elemEnd   elemKind = iota // end of an alternative
	elemBytes                 // one byte from sets[arg]
	elemRef                   // rule arg
)

type elem struct {
	kind elemKind
	arg  int32
}

// GBNF returns the grammar's source text.
func (g *Grammar) GBNF() string { return g.src }

// ParseGBNF compiles a GBNF grammar (see the syntax above); the rule "root" is the whole output.
func ParseGBNF(src string) (*Grammar, error) {
	pg, err := parseGBNF(src)
	if err != nil {
		return nil, err
	}
	c := &compiler{pg: pg, ruleIndex: map[string]int32{}, classRule: map[string]int32{}, setIndex: map[[4]uint64]int32{}}
	if _, ok := pg.rules["root"]; !ok {
		return nil, &GrammarError{Msg: `no rule named "root"`}
	}
	// Named rules take the first indices, root first.
	order := append([]string{"root"}, pg.names...)
	for _, n := range order {
		if _, ok := c.ruleIndex[n]; !ok {
			c.ruleIndex[n] = int32(len(c.alts))
			c.alts = append(c.alts, nil)
			c.names = append(c.names, n)
		}
	}
	for _, n := range order[1:] {
		c.cur = n
		alts, err := c.alternatives(pg.rules[n])
		if err != nil {
			return nil, err
		}
		c.alts[c.ruleIndex[n]] = alts
	}
	g := &Grammar{src: src, ruleName: c.names, root: c.ruleIndex["root"]}
	for _, s := range c.setList {
		g.sets = append(g.sets, s)
	}
	for _, alts := range c.alts {
		var starts []int32
		for _, a := range alts {
			starts = append(starts, int32(len(g.elems)))
			g.elems = append(g.elems, a...)
			g.elems = append(g.elems, elem{kind: elemEnd})
		}
		g.ruleAlts = append(g.ruleAlts, starts)
		if len(g.elems) > maxGrammarSize {
			return nil, &GrammarError{Msg: fmt.Sprintf("more than %d positions after expansion", maxGrammarSize)}
		}
	}
	if err := g.checkLeftRecursion(); err != nil {
		return nil, err
	}
	return g, nil
}

type compiler struct {
	pg        *parsedGrammar
	ruleIndex map[string]int32
	alts      [][][]elem
	names     []string
	classRule map[string]int32
	setIndex  map[[4]uint64]int32
	setList   [][4]uint64
	cur       string // the named rule being compiled
	size      int
}

func (c *compiler) newRule(alts [][]elem) int32 {
	c.alts = append(c.alts, alts)
	c.names = append(c.names, c.cur)
	return int32(len(c.alts) - 1)
}

func (c *compiler) grow(n int) error {
	c.size += n
	if c.size > maxGrammarSize {
		return &GrammarError{Rule: c.cur, Msg: fmt.Sprintf("more than %d positions after expansion", maxGrammarSize)}
	}
	return nil
}

func (c *compiler) alternatives(e expr) ([][]elem, error) {
	if a, ok := e.(*exAlt); ok {
		var out [][]elem
		for _, x := range a.alts {
			s, err := c.sequence(x)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := c.sequence(e)
	if err != nil {
		return nil, err
	}
	return [][]elem{s}, nil
}

func (c *compiler) set(s [4]uint64) elem {
	i, ok := c.setIndex[s]
	if !ok {
		i = int32(len(c.setList))
		c.setIndex[s] = i
		c.setList = append(c.setList, s)
	}
	return elem{kind: elemBytes, arg: i}
}

func byteSet(lo, hi byte) [4]uint64 {
	var s [4]uint64
	for b := int(lo); b <= int(hi); b++ {
		s[b>>6] |= 1 << (b & 63)
	}
	return s
}

// sequence compiles e into the elements of one alternative.
func (c *compiler) sequence(e expr) ([]elem, error) {
	switch x := e.(type) {
	case *exSeq:
		var out []elem
		for _, it := range x.items {
			s, err := c.sequence(it)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case *exLit:
		if err := c.grow(len(x.s)); err != nil {
			return nil, err
		}
		out := make([]elem, 0, len(x.s))
		for i := 0; i < len(x.s); i++ {
			out = append(out, c.set(byteSet(x.s[i], x.s[i])))
		}
		return out, nil
	case *exClass:
		return c.class(x.ranges)
	case *exRef:
		i, ok := c.ruleIndex[x.name]
		if !ok {
			return nil, &GrammarError{Rule: c.cur, Msg: fmt.Sprintf("line %d col %d: rule %q is not defined", x.line, x.col, x.name)}
		}
		return []elem{{kind: elemRef, arg: i}}, nil
	case *exAlt:
		alts, err := c.alternatives(x)
		if err != nil {
			return nil, err
		}
		return []elem{{kind: elemRef, arg: c.newRule(alts)}}, nil
	case *exRepeat:
		body, err := c.sequence(x.x)
		if err != nil {
			return nil, err
		}
		if len(body) > 1 {
			// Repeat a reference to the body, not the body itself, to keep the expansion small.
			body = []elem{{kind: elemRef, arg: c.newRule([][]elem{body})}}
		}
		if err := c.grow(x.min + max(x.max-x.min, 1)); err != nil {
			return nil, err
		}
		var out []elem
		for range x.min {
			out = append(out, body...)
		}
		switch {
		case x.max < 0:
			// r ::= body r | ε
			r := c.newRule(nil)
			c.alts[r] = [][]elem{append(append([]elem(nil), body...), elem{kind: elemRef, arg: r}), nil}
			out = append(out, elem{kind: elemRef, arg: r})
		case x.max > x.min:
			// Nested optionals: o1 ::= body | ε, ok ::= body o(k−1) | ε — linear, and unambiguous.
			prev := int32(-1)
			for range x.max - x.min {
				alt := append([]elem(nil), body...)
				if prev >= 0 {
					alt = append(alt, elem{kind: elemRef, arg: prev})
				}
				prev = c.newRule([][]elem{alt, nil})
			}
			out = append(out, elem{kind: elemRef, arg: prev})
		}
		return out, nil
	}
	return nil, fmt.Errorf("constrain: internal error: unknown grammar node %T", e)
}

// class compiles a character class into one byte set (ASCII only) or a rule whose alternatives are the UTF-8
// byte sequences of its code points.
func (c *compiler) class(rs []runeRange) ([]elem, error) {
	if len(rs) == 0 {
		return nil, &GrammarError{Rule: c.cur, Msg: "a character class matches no character"}
	}
	if rs[len(rs)-1].hi < utf8.RuneSelf {
		var s [4]uint64
		for _, r := range rs {
			t := byteSet(byte(r.lo), byte(r.hi))
			for i := range s {
				s[i] |= t[i]
			}
		}
		return []elem{c.set(s)}, nil
	}
	var key strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&key, "%x-%x,", r.lo, r.hi)
	}
	if i, ok := c.classRule[key.String()]; ok {
		return []elem{{kind: elemRef, arg: i}}, nil
	}
	var seqs [][]byteRange
	for _, r := range rs {
		seqs = utf8Sequences(seqs, r.lo, r.hi)
	}
	var alts [][]elem
	// Single-byte sequences merge into one set.
	var ascii [4]uint64
	hasASCII := false
	for _, s := range seqs {
		if len(s) == 1 {
			t := byteSet(s[0].lo, s[0].hi)
			for i := range ascii {
				ascii[i] |= t[i]
			}
			hasASCII = true
			continue
		}
		var alt []elem
		for _, br := range s {
			alt = append(alt, c.set(byteSet(br.lo, br.hi)))
		}
		alts = append(alts, alt)
	}
	if hasASCII {
		alts = append([][]elem{{c.set(ascii)}}, alts...)
	}
	if err := c.grow(4 * len(alts)); err != nil {
		return nil, err
	}
	i := c.newRule(alts)
	c.classRule[key.String()] = i
	return []elem{{kind: elemRef, arg: i}}, nil
}

type byteRange struct{ lo, hi byte }

// utf8Sequences appends the byte-range sequences whose concatenations are exactly the UTF-8 encodings of the code
// points lo…hi, surrogates excluded (the standard split: by encoded length, then by shared leading bytes).
func utf8Sequences(out [][]byteRange, lo, hi rune) [][]byteRange {
	if lo > hi {
		return out
	}
	if lo <= 0xDFFF && hi >= 0xD800 {
		out = utf8Sequences(out, lo, 0xD7FF)
		return utf8Sequences(out, 0xE000, hi)
	}
	for _, m := range []rune{0x7F, 0x7FF, 0xFFFF} {
		if lo <= m && hi > m {
			out = utf8Sequences(out, lo, m)
			return utf8Sequences(out, m+1, hi)
		}
	}
	if hi < utf8.RuneSelf {
		return append(out, []byteRange{{byte(lo), byte(hi)}})
	}
	for i := 1; i < 4; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				out = utf8Sequences(out, lo, lo|m)
				return utf8Sequences(out, (lo|m)+1, hi)
			}
			if hi&m != m {
				out = utf8Sequences(out, lo, (hi&^m)-1)
				return utf8Sequences(out, hi&^m, hi)
			}
		}
	}
	var a, b [4]byte
	n := utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	seq := make([]byteRange, n)
	for i := range n {
		seq[i] = byteRange{a[i], b[i]}
	}
	return append(out, seq)
}

// checkLeftRecursion refuses a rule that can reach itself without consuming a byte: the automaton expands rules
// eagerly and would never stop.
func (g *Grammar) checkLeftRecursion() error {
	n := len(g.ruleAlts)
	nullable := make([]bool, n)
	for changed := true; changed; {
		changed = false
		for r := range n {
			if nullable[r] {
				continue
			}
			for _, start := range g.ruleAlts[r] {
				if g.nullableFrom(start, nullable) {
					nullable[r] = true
					changed = true
					break
				}
			}
		}
	}
	// Edges r → s where s can be the first thing r expands.
	edges := make([][]int32, n)
	for r := range n {
		for _, start := range g.ruleAlts[r] {
			for p := start; g.elems[p].kind != elemEnd; p++ {
				e := g.elems[p]
				if e.kind == elemBytes {
					break
				}
				edges[r] = append(edges[r], e.arg)
				if !nullable[e.arg] {
					break
				}
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, n)
	type frame struct {
		r int32
		i int
	}
	for r0 := range n {
		if color[r0] != white {
			continue
		}
		stack := []frame{{int32(r0), 0}}
		color[r0] = grey
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.i == len(edges[f.r]) {
				color[f.r] = black
				stack = stack[:len(stack)-1]
				continue
			}
			s := edges[f.r][f.i]
			f.i++
			switch color[s] {
			case grey:
				msg := "is left-recursive: it can reach itself before matching any character"
				if g.ruleName[s] != "" && g.ruleIndexOf(g.ruleName[s]) != s {
					msg = "has a repetition or group that is left-recursive or repeats an item that can match nothing"
				}
				return &GrammarError{Rule: g.ruleName[s], Msg: msg}
			case white:
				color[s] = grey
				stack = append(stack, frame{s, 0})
			}
		}
	}
	return nil
}

func (g *Grammar) ruleIndexOf(name string) int32 {
	for i, n := range g.ruleName {
		if n == name {
			return int32(i)
		}
	}
	return -1
}

func (g *Grammar) nullableFrom(p int32, nullable []bool) bool {
	for ; g.elems[p].kind != elemEnd; p++ {
		e := g.elems[p]
		if e.kind == elemBytes || !nullable[e.arg] {
			return false
		}
	}
	return true
}
