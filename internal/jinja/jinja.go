package jinja

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors matched with errors.Is by the *Error values this package returns.
var (
	// ErrSyntax: the template does not parse.
	ErrSyntax = errors.New("jinja: syntax error")
	// ErrUndefined: an undefined value was used where a value is required (attribute of it,
	// arithmetic, call).
	ErrUndefined = errors.New("jinja: undefined value")
	// ErrType: an operation on values of the wrong type, e.g. 1 + "a", or a bad argument.
	ErrType = errors.New("jinja: type error")
	// ErrUnsupported: a Jinja feature outside this implementation, or one the sandbox forbids.
	ErrUnsupported = errors.New("jinja: unsupported")
	// ErrLimit: a resource limit of Options was exceeded.
	ErrLimit = errors.New("jinja: limit exceeded")
)

// Error is a template error with its place: Line and Col (1-based, Col in characters) in the
// template source, after newline normalization.
type Error struct {
	Line, Col int
	Msg       string
	Err       error // ErrSyntax, ErrUndefined, ErrType, ErrUnsupported, ErrLimit or a *RaiseError
}

// Error formats the error as "jinja: line L col C: MSG".
func (e *Error) Error() string {
	return fmt.Sprintf("jinja: line %d col %d: %s", e.Line, e.Col, e.Msg)
}

// Unwrap returns the error's category (or the *RaiseError).
func (e *Error) Unwrap() error { return e.Err }

// RaiseError is the error of the template function raise_exception(message), which chat
// templates call to reject a conversation (e.g. roles that do not alternate).
type RaiseError struct {
	Message string
}

// Error returns "raise_exception: MESSAGE".
func (e *RaiseError) Error() string { return "raise_exception: " + e.Message }

// Options configures parsing and rendering.
type Options struct {
	TrimBlocks          bool // remove the first newline after a block tag (jinja2 trim_blocks)
	LstripBlocks        bool // strip spaces and tabs before a block tag on its line (lstrip_blocks)
	KeepTrailingNewline bool // keep a single trailing newline of the template source

	MaxSteps     int // evaluation steps (expressions, statements, loop iterations); 0 = default
	MaxOutput    int // bytes of output and of any single string or list built; 0 = default
	MaxCallDepth int // nested macro calls; 0 = default
	MaxNesting   int // nesting depth of statements and expressions in the source; 0 = default

	// Now is the clock behind strftime_now; nil means time.Now.
	Now func() time.Time
}

// Defaults of the Options limits.
const (
	DefaultMaxSteps     = 10_000_000
	DefaultMaxOutput    = 64 << 20
	DefaultMaxCallDepth = 100
	DefaultMaxNesting   = 200
)

// DefaultOptions returns the environment transformers uses for chat templates: trim_blocks and
// lstrip_blocks on, trailing newline dropped, default limits.
func DefaultOptions() Options {
	return Options{TrimBlocks: true, LstripBlocks: true}
}

func (o *Options) fill() {
	if o.MaxSteps <= 0 {
		o.MaxSteps = DefaultMaxSteps
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	if o.MaxCallDepth <= 0 {
		o.MaxCallDepth = DefaultMaxCallDepth
	}
	if o.MaxNesting <= 0 {
		o.MaxNesting = DefaultMaxNesting
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Template is a parsed template; it is immutable and safe for concurrent Render calls.
type Template struct {
	src  string // after newline normalization; error positions refer to it
	body []node
	opt  Options
}

// Parse parses src with opt.
func Parse(src string, opt Options) (*Template, error) {
	opt.fill()
	src = normalizeNewlines(src)
	if !opt.KeepTrailingNewline {
		src = strings.TrimSuffix(src, "\n")
	}
	toks, err := lex(src, &opt)
	if err != nil {
		return nil, positioned(src, err)
	}
	p := &parser{toks: toks, maxNesting: opt.MaxNesting}
	body, err := p.parseTemplate()
	if err != nil {
		return nil, positioned(src, err)
	}
	return &Template{src: src, body: body, opt: opt}, nil
}

// Render renders the template with vars as its context. Go values are converted with FromGo:
// maps, slices, strings, numbers, bools and nil, recursively; map keys are sorted for a
// deterministic order (use *Dict for an explicit order).
func (t *Template) Render(vars map[string]any) (string, error) {
	root := make(map[string]any, len(vars))
	for k, v := range vars {
		cv, err := fromGo(v)
		if err != nil {
			return "", fmt.Errorf("jinja: variable %q: %w", k, err)
		}
		root[k] = cv
	}
	r := &renderer{tmpl: t, opt: &t.opt}
	r.frames = []map[string]any{globals(), root, {}}
	var out strings.Builder
	r.out = &out
	if _, err := r.execBody(t.body); err != nil {
		return "", positioned(t.src, err)
	}
	return out.String(), nil
}

// normalizeNewlines turns "\r\n" and "\r" into "\n", as jinja2's lexer does.
func normalizeNewlines(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// posError is an error at a byte offset of the source, turned into *Error by positioned.
type posError struct {
	pos int
	msg string
	err error
}

func (e *posError) Error() string { return e.msg }

func errAt(pos int, kind error, format string, args ...any) error {
	return &posError{pos: pos, msg: fmt.Sprintf(format, args...), err: kind}
}

// positioned converts a *posError into an *Error with line and column.
func positioned(src string, err error) error {
	var pe *posError
	if !errors.As(err, &pe) {
		return err
	}
	pos := min(max(pe.pos, 0), len(src))
	line := 1 + strings.Count(src[:pos], "\n")
	lineStart := strings.LastIndexByte(src[:pos], '\n') + 1
	col := 1 + utf8.RuneCountInString(src[lineStart:pos])
	return &Error{Line: line, Col: col, Msg: pe.msg, Err: pe.err}
}
