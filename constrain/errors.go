package constrain

import "fmt"

// SyntaxError is a GBNF text that does not parse: Line and Col (1-based, bytes) locate the fault.
type SyntaxError struct {
	Line, Col int
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("constrain: grammar line %d col %d: %s", e.Line, e.Col, e.Msg)
}

// GrammarError is a grammar that parses but cannot be used (an undefined rule, left recursion, no root rule,
// a size beyond the limits), naming the Rule at fault.
type GrammarError struct {
	Rule string
	Msg  string
}

func (e *GrammarError) Error() string {
	if e.Rule == "" {
		return "constrain: grammar: " + e.Msg
	}
	return fmt.Sprintf("constrain: grammar: rule %q: %s", e.Rule, e.Msg)
}

// SchemaError is a JSON Schema that is malformed or uses a keyword this package cannot enforce; Path is the JSON
// pointer of the schema location at fault and Keyword the keyword, when there is one.
type SchemaError struct {
	Path    string
	Keyword string
	Msg     string
}

func (e *SchemaError) Error() string {
	loc := e.Path
	if loc == "" {
		loc = "#"
	}
	if e.Keyword != "" {
		return fmt.Sprintf("constrain: json schema %s: keyword %q: %s", loc, e.Keyword, e.Msg)
	}
	return fmt.Sprintf("constrain: json schema %s: %s", loc, e.Msg)
}

// TokenError is a token that the grammar does not allow at this point (Matcher.Accept).
type TokenError struct {
	ID   int32
	Text string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("constrain: token %d %q is not allowed by the grammar here", e.ID, e.Text)
}
