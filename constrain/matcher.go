package constrain

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// TokenKind says how a vocabulary token takes part in constrained generation.
type TokenKind uint8

// Token kinds.
const (
	TokenText  TokenKind = iota // produces its bytes
	TokenStop                   // ends generation: allowed only where the grammar accepts the whole output
	TokenNever                  // never allowed (control tokens, image placeholders, empty tokens)
)

// Vocabulary is the byte text of every token of a model, in a trie, built once per model and shared by all the
// Matchers of that model. It is immutable and safe for concurrent use.
type Vocabulary struct {
	size  int
	texts [][]byte
	stops []int32
	// The trie: node 0 is the root. Children of a node are the contiguous range kids[first[n]:first[n+1]].
	first  []int32
	kids   []trieEdge
	tokens [][]int32 // per node, the tokens whose text ends there
	// StripLeadingSpace: the decoder removes one leading space from the first text of the output
	// (SentencePiece's add_space_prefix), so a first token " {" produces "{".
	stripLeadingSpace bool
}

type trieEdge struct {
	b    byte
	node int32
}

// NewVocabulary builds the trie of texts[i] (the bytes token i produces) for the tokens of kind TokenText, and
// records the stop tokens. stripLeadingSpace says that the decoder drops one leading space of the output's first
// text (SentencePiece decoders with add_space_prefix).
func NewVocabulary(texts [][]byte, kinds []TokenKind, stripLeadingSpace bool) (*Vocabulary, error) {
	if len(texts) != len(kinds) {
		return nil, fmt.Errorf("constrain: vocabulary: %d texts but %d kinds", len(texts), len(kinds))
	}
	if len(texts) == 0 {
		return nil, errors.New("constrain: vocabulary: no tokens")
	}
	v := &Vocabulary{size: len(texts), texts: texts, stripLeadingSpace: stripLeadingSpace}
	// Build a pointer trie, then flatten it breadth-first.
	type pnode struct {
		kids   map[byte]*pnode
		tokens []int32
	}
	root := &pnode{}
	for i, t := range texts {
		switch kinds[i] {
		case TokenStop:
			v.stops = append(v.stops, int32(i))
			continue
		case TokenNever:
			continue
		}
		if len(t) == 0 {
			continue // produces nothing: allowing it would let the output stall
		}
		n := root
		for _, b := range t {
			if n.kids == nil {
				n.kids = map[byte]*pnode{}
			}
			k := n.kids[b]
			if k == nil {
				k = &pnode{}
				n.kids[b] = k
			}
			n = k
		}
		n.tokens = append(n.tokens, int32(i))
	}
	queue := []*pnode{root}
	v.first = append(v.first, 0)
	for qi := 0; qi < len(queue); qi++ {
		n := queue[qi]
		v.tokens = append(v.tokens, n.tokens)
		bs := make([]byte, 0, len(n.kids))
		for b := range n.kids {
			bs = append(bs, b)
		}
		slices.Sort(bs)
		for _, b := range bs {
			v.kids = append(v.kids, trieEdge{b: b, node: int32(len(queue))})
			queue = append(queue, n.kids[b])
		}
		v.first = append(v.first, int32(len(v.kids)))
	}
	return v, nil
}

// IsStop reports whether id is a stop token.
func (v *Vocabulary) IsStop(id int32) bool { return slices.Contains(v.stops, id) }

// Size is the number of token ids.
func (v *Vocabulary) Size() int { return v.size }

// machine is the automaton state shared by the positions a Matcher reaches: interned stacks and stack sets and
// memoised byte transitions. A stack is a node: a grammar position and the node below it (−1: bottom).
type machine struct {
	g        *Grammar
	nodes    []stackNode
	nodeID   map[uint64]int32
	sets     [][]int32 // interned sets of ready nodes (their top is a byte element), sorted
	accept   []bool    // per set: some stack was emptied (the whole output is accepted)
	setID    map[string]int32
	next     map[uint64]int32 // (set<<8 | byte) → set
	seen     []uint32
	stamp    uint32
	scratch  []int32
	keyBuf   []byte
	accepted bool
}

type stackNode struct {
	pos    int32
	parent int32
}

// Limits on the memo tables: past them the transition memo is cleared (states stay valid).
const maxMemo = 1 << 20

func newMachine(g *Grammar) *machine {
	m := &machine{g: g, nodeID: map[uint64]int32{}, setID: map[string]int32{}, next: map[uint64]int32{}}
	m.intern(nil, false) // set 0: the dead state
	return m
}

func (m *machine) node(pos, parent int32) int32 {
	k := uint64(uint32(pos))<<32 | uint64(uint32(parent))
	if id, ok := m.nodeID[k]; ok {
		return id
	}
	id := int32(len(m.nodes))
	m.nodes = append(m.nodes, stackNode{pos, parent})
	m.nodeID[k] = id
	return id
}

func (m *machine) intern(ready []int32, accept bool) int32 {
	slices.Sort(ready)
	ready = slices.Compact(ready)
	if len(ready) == 0 && !accept {
		if len(m.sets) > 0 {
			return 0
		}
	}
	m.keyBuf = m.keyBuf[:0]
	for _, n := range ready {
		m.keyBuf = binary.LittleEndian.AppendUint32(m.keyBuf, uint32(n))
	}
	if accept {
		m.keyBuf = append(m.keyBuf, 'A')
	}
	key := string(m.keyBuf)
	if id, ok := m.setID[key]; ok {
		return id
	}
	id := int32(len(m.sets))
	m.sets = append(m.sets, append([]int32(nil), ready...))
	m.accept = append(m.accept, accept)
	m.setID[key] = id
	return id
}

// closure adds to m.scratch the ready nodes reachable from node n by expanding rule references and popping
// finished alternatives; reaching the bottom sets m.accepted.
func (m *machine) closure(n int32) {
	if int(n) >= len(m.seen) {
		m.seen = append(m.seen, make([]uint32, int(n)+1-len(m.seen)+len(m.seen)/2)...)
	}
	if m.seen[n] == m.stamp {
		return
	}
	m.seen[n] = m.stamp
	sn := m.nodes[n]
	e := m.g.elems[sn.pos]
	switch e.kind {
	case elemBytes:
		m.scratch = append(m.scratch, n)
	case elemEnd:
		if sn.parent < 0 {
			m.accepted = true
			return
		}
		m.closure(sn.parent)
	case elemRef:
		ret := m.node(sn.pos+1, sn.parent)
		for _, start := range m.g.ruleAlts[e.arg] {
			m.closure(m.node(start, ret))
		}
	}
}

func (m *machine) begin() {
	m.stamp++
	if m.stamp == 0 {
		clear(m.seen)
		m.stamp = 1
	}
	m.scratch = m.scratch[:0]
	m.accepted = false
}

// start is the state before any output.
func (m *machine) start() int32 {
	m.begin()
	for _, s := range m.g.ruleAlts[m.g.root] {
		m.closure(m.node(s, -1))
	}
	return m.intern(m.scratch, m.accepted)
}

// step is the state after byte b from state s (0 when b is refused).
func (m *machine) step(s int32, b byte) int32 {
	if s == 0 {
		return 0
	}
	k := uint64(s)<<8 | uint64(b)
	if t, ok := m.next[k]; ok {
		return t
	}
	m.begin()
	for _, n := range m.sets[s] {
		sn := m.nodes[n]
		set := &m.g.sets[m.g.elems[sn.pos].arg]
		if set[b>>6]&(1<<(b&63)) != 0 {
			m.closure(m.node(sn.pos+1, sn.parent))
		}
	}
	t := m.intern(m.scratch, m.accepted)
	if len(m.next) >= maxMemo {
		clear(m.next)
	}
	m.next[k] = t
	return t
}

// Matcher follows one output through a grammar and tells which tokens may come next. It is not safe for
// concurrent use.
type Matcher struct {
	g       *Grammar
	v       *Vocabulary
	m       *machine
	state   int32
	started bool // some text was produced (the leading-space rule no longer applies)
	stopped bool
	// masks caches Fill's result per state (and leading-space rule): outputs revisit states often (every
	// character inside a JSON string returns to the same one), and a state's mask never changes.
	masks map[int32]cachedMask
}

type cachedMask struct {
	bits []uint64
	n    int
}

// maxCachedMasks bounds the masks a Matcher keeps (each is Size()/8 bytes: 4 KB for a 32000-token vocabulary).
const maxCachedMasks = 256

// NewMatcher returns a matcher at the start of the output.
func NewMatcher(g *Grammar, v *Vocabulary) *Matcher {
	mm := newMachine(g)
	return &Matcher{g: g, v: v, m: mm, state: mm.start()}
}

// Complete reports whether the output so far is a whole sentence of the grammar (a stop token is allowed).
func (x *Matcher) Complete() bool { return x.m.accept[x.state] }

// Dead reports whether no continuation is possible but the output is not complete either; it happens only with
// a grammar whose language has no sentence, or with a vocabulary that cannot spell the rest.
func (x *Matcher) Dead() bool { return len(x.m.sets[x.state]) == 0 && !x.Complete() }

// Fill sets allowed[id/64] bit id%64 for every token that may come next and clears the others; allowed must have
// (Size()+63)/64 words. It returns the number of tokens allowed.
func (x *Matcher) Fill(allowed []uint64) int {
	clear(allowed)
	if x.stopped {
		return 0
	}
	key := x.state << 1
	if !x.started && x.v.stripLeadingSpace {
		key |= 1
	}
	if c, ok := x.masks[key]; ok {
		copy(allowed, c.bits)
		return c.n
	}
	n := x.fill(allowed)
	if x.masks == nil {
		x.masks = map[int32]cachedMask{}
	}
	if len(x.masks) < maxCachedMasks {
		x.masks[key] = cachedMask{bits: append([]uint64(nil), allowed...), n: n}
	}
	return n
}

// fill computes the mask of the current state (see Fill) by walking the vocabulary trie.
func (x *Matcher) fill(allowed []uint64) int {
	n := 0
	if x.Complete() {
		for _, id := range x.v.stops {
			allowed[id>>6] |= 1 << (id & 63)
			n++
		}
	}
	v := x.v
	strip := !x.started && v.stripLeadingSpace
	var walk func(node, s int32)
	walk = func(node, s int32) {
		for _, e := range v.kids[v.first[node]:v.first[node+1]] {
			if node == 0 && strip && e.b == ' ' {
				continue // handled below: the first space is dropped, not matched
			}
			t := x.m.step(s, e.b)
			if t == 0 {
				continue
			}
			for _, id := range v.tokens[e.node] {
				allowed[id>>6] |= 1 << (id & 63)
				n++
			}
			if len(x.m.sets[t]) > 0 {
				walk(e.node, t)
			}
		}
	}
	if strip {
		// A first token " xyz" produces "xyz": walk below the root's space edge from the current state.
		for _, e := range v.kids[v.first[0]:v.first[1]] {
			if e.b == ' ' {
				for _, id := range v.tokens[e.node] {
					allowed[id>>6] |= 1 << (id & 63)
					n++
				}
				walk(e.node, x.state)
			}
		}
	}
	walk(0, x.state)
	return n
}

// Allowed reports whether token id may come next.
func (x *Matcher) Allowed(id int32) bool {
	if x.stopped || id < 0 || int(id) >= x.v.size {
		return false
	}
	if slices.Contains(x.v.stops, id) {
		return x.Complete()
	}
	_, ok := x.advance(id)
	return ok
}

func (x *Matcher) advance(id int32) (int32, bool) {
	t := x.v.texts[id]
	if !x.v.isText(id) {
		return 0, false
	}
	if !x.started && x.v.stripLeadingSpace && t[0] == ' ' {
		t = t[1:]
	}
	s := x.state
	for _, b := range t {
		if s = x.m.step(s, b); s == 0 {
			return 0, false
		}
	}
	return s, true
}

func (v *Vocabulary) isText(id int32) bool {
	if len(v.texts[id]) == 0 || slices.Contains(v.stops, id) {
		return false
	}
	// A text token sits in the trie; walk its bytes.
	n := int32(0)
	for _, b := range v.texts[id] {
		kids := v.kids[v.first[n]:v.first[n+1]]
		i, ok := slices.BinarySearchFunc(kids, b, func(e trieEdge, b byte) int { return int(e.b) - int(b) })
		if !ok {
			return false
		}
		n = kids[i].node
	}
	return slices.Contains(v.tokens[n], id)
}

// Accept advances past token id; a token the grammar does not allow here is a *TokenError and leaves the matcher
// unchanged. After a stop token nothing more is allowed.
func (x *Matcher) Accept(id int32) error {
	if id < 0 || int(id) >= x.v.size {
		return fmt.Errorf("constrain: token %d is outside the vocabulary (%d tokens)", id, x.v.size)
	}
	if slices.Contains(x.v.stops, id) {
		if !x.Complete() || x.stopped {
			return &TokenError{ID: id, Text: string(x.v.texts[id])}
		}
		x.stopped = true
		return nil
	}
	s, ok := x.advance(id)
	if !ok || x.stopped {
		return &TokenError{ID: id, Text: string(x.v.texts[id])}
	}
	x.state = s
	x.started = true
	return nil
}

// AcceptBytes advances past text as if a token produced it (the leading-space rule applies); it reports whether
// the grammar allowed it, and on false leaves the matcher unchanged.
func (x *Matcher) AcceptBytes(text []byte) bool {
	if x.stopped {
		return false
	}
	if !x.started && x.v.stripLeadingSpace && len(text) > 0 && text[0] == ' ' {
		text = text[1:]
	}
	s := x.state
	for _, b := range text {
		if s = x.m.step(s, b); s == 0 {
			return false
		}
	}
	x.state = s
	if len(text) > 0 {
		x.started = true
	}
	return true
}
