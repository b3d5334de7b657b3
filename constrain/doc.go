// Package constrain restricts generation to the texts a grammar accepts: llama.cpp's GBNF grammars and JSON
// Schemas (compiled to GBNF). It is pure Go and knows nothing of models; it sits at the repository root beside
// processor/ because both runner/ and the command-line front ends use it, and it may be used on its own.
//
// A Grammar is compiled to a byte-level pushdown automaton: every character class becomes the UTF-8 byte
// sequences of its code points, so tokens that are single bytes of a longer character (SentencePiece byte
// fallback, "<0xE2>") advance it exactly like whole-character tokens do. The state is a set of stacks of grammar
// positions; stacks and sets of stacks are interned, so a state is a small integer and a transition on a byte is
// memoised. A Vocabulary holds the byte text of every token in a trie built once per model; a Matcher walks that
// trie from its state and prunes at the first byte the grammar refuses, which gives the set of tokens that keep
// the output a valid prefix (Matcher.Fill). Stop tokens are allowed only where the grammar accepts the whole
// output.
package constrain
