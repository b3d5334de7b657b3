// Package jinja is a Jinja2 template engine for chat templates: the subset of Jinja that the
// chat templates stored in Hugging Face tokenizer configs (and GGUF's tokenizer.chat_template)
// use, evaluated with Python semantics so that the output matches transformers'
// apply_chat_template byte for byte.
//
// transformers renders chat templates with jinja2's ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True) plus the loopcontrols extension and its own tojson filter and
// raise_exception / strftime_now globals; DefaultOptions reproduces that environment.
//
// Supported: {{ }}, {% %}, {# #} with whitespace control (-, +), trim_blocks, lstrip_blocks,
// {% raw %}; statements if/elif/else, for (loop variables, unpacking, inline if, else), set
// (including block set and namespace attributes), macro, with, filter blocks, break, continue and
// HF's generation block; expressions with Python operators, literals, attribute, item and slice
// access, calls with keyword arguments, the common filters and tests, and Python string, dict and
// list methods (non-mutating ones: the sandbox refuses mutation). Not supported: template
// inheritance and inclusion (extends, block, include, import), call blocks and recursive loops;
// they fail with ErrUnsupported.
//
// Values follow Python: str/int/float/bool/None, lists and tuples, insertion-ordered dicts,
// jinja2's Undefined (prints as "", fails on arithmetic and attribute access), Python's str()
// and repr() formatting (floats as repr), and the lazy single-use generators that map, select,
// reject, selectattr, rejectattr, unique, batch and items return (always true, no len()).
// testdata/cases.json and testdata/random.json hold jinja2 3.1.6's output for several hundred
// templates (the generator scripts sit beside them) and must be reproduced byte for byte.
//
// Known deviations: float ** may differ from CPython in the last bit (Go's math.Pow); dict
// views (d.keys(), d.values(), d.items()) are plain lists when printed; the full case mappings of
// upper/lower/title/capitalize cover Latin, Armenian and final sigma, not the Greek iota-subscript
// forms; str.format accepts no format specs; the filters groupby, slice, striptags, urlize,
// urlencode, wordwrap, xmlattr, filesizeformat and random are not provided (ErrUnsupported).
//
// Rendering never panics on any template or input, and is bounded: Options limits the number of
// evaluation steps, the output size, the macro call depth and the parser's nesting depth.
//
// # Why not a third-party engine
//
// This package is about a fifth of the repository's code, so it was measured against the two Go
// Jinja engines that build with this module's Go: github.com/ardanlabs/jinja v1.8.0 (v1.9.0 and
// later require Go 1.27) and github.com/nikolalohinski/gonja/v2 v2.9.1. The harness is the
// separate module in compare/, so that neither engine enters this module's build; run it with
//
//	cd internal/jinja/compare && go test -count=1 -v .
//
// ($JINJA_COMPARE_REPORT=FILE writes every failing case with both outputs.) It renders
// testdata/cases.json and testdata/random.json and compares with jinja2's output; where jinja2
// raised, the engine must fail too. It also renders every chat template of the fixtures with 13
// conversations (text and image parts, system/user/assistant turns, unicode, Jinja-like text,
// empty text, empty content, no messages) and add_generation_prompt true and false, against
// this package's output, which processor's tests check against transformers. The fixtures hold
// one distinct template, Idefics2's: 16 copies in the repository (tokenizer_config.json,
// chat_template.json, processor_config.json, the chat_template_public manifest, runner's
// idefics2ChatTemplate), 18 more in the full fixture tree (scanned with
// $JINJA_COMPARE_FIXTURES), none in GGUF metadata. ardanlabs/jinja has transformers' settings
// built in; gonja was given trim_blocks, lstrip_blocks and a raise_exception global and kept
// its own tojson. Dicts were passed as each engine's insertion-ordered dict type. Counts
// (identical / different output / engine failed where the reference rendered / engine rendered
// where the reference failed / panic; no engine hung past 5 s):
//
//	                    cases.json (90)      random.json (556)       fixture renderings (26)
//	this package        90 / 0 / 0 / 0 / 0   556 / 0 / 0 / 0 / 0     26 / 0 / 0 / 0 / 0
//	ardanlabs v1.8.0    45 / 26 / 9 / 9 / 1  241 / 120 / 51 / 144 / 0 24 / 0 / 0 / 2 / 0
//	gonja/v2 v2.9.1     61 / 16 / 5 / 7 / 1  372 / 40 / 58 / 77 / 9   26 / 0 / 0 / 0 / 0
//
// Neither engine renders the corpus identically (ardanlabs 286 of 646, gonja 433 of 646), so
// this package stays. Failures by category, with cases of cases.json (named) or random.json:
//
// ardanlabs/jinja v1.8.0:
//   - Whitespace and lexing: a template's single trailing newline is kept ("a\n" renders
//     "a\n", jinja2 "a"); \r\n is not normalized (crlf); {%+ does not disable lstrip_blocks
//     ("a\n    {%+ if true %}b{% endif %}" gives "a\n", not "a\n    b"); +%} is a syntax
//     error (plus disables trim, and 16 random cases).
//   - String methods: capitalize() keeps the rest of the string as is, so Idefics2's own
//     template renders a role "USER" as "USER:" where jinja2 writes "User:" (idefics2 upper
//     role); splitlines, rsplit and isdigit are missing (string methods, string predicates).
//   - Python semantics: -7 // 2 is -3 and -7 % 3 is -1 (arithmetic); 4 / 2 prints "2", not
//     "2.0"; {{ none }} prints "" not "None"; true == 1 is False; 3 * 'x' is "0"; tuples print
//     as lists; repr does not switch quotes ('it's'); "%s-%d" % ('a', 3) renders "0" (percent
//     format); 1e16 is a syntax error (float repr).
//   - Statements: no {% with %}; {% set a, b = 1, 2 %} and tests with an argument without
//     parentheses (9 is divisibleby 3) are syntax errors; {% set x | upper %}…{% endset %} drops
//     the value; a {% set %} inside a for loop leaks out of the iteration (loop scoping: "123"
//     for "111"); for a, b in … unpacks wrongly (for unpack).
//   - Filters: no center or truncate; int(7) ignores its default and int(base=16) its base;
//     round rounds half up, returns an int and ignores its method; -3 | abs renders -3;
//     tojson(indent=2) sorts keys and escapes U+2028, and sort_keys is ignored (tojson, tools);
//     items and dictsort print pairs as lists, not tuples; indent(blank=true) is ignored.
//   - Errors not raised: undefined + 1 renders "1", undefined.attr "", 'a' + 1 "a1", 1 // 0
//     "0", 1 < 'a' False; list.append, range(1000000) (beyond the sandbox's 100000), setting an
//     attribute of a dict and iterating an int all render; in the fixtures, a message whose
//     content is an empty list renders instead of failing on content[0]['type'].
//   - Panic: users | selectattr('name', 'equalto', 'b') and friends (map select): slice bounds
//     out of range.
//
// gonja/v2 v2.9.1:
//   - Whitespace: trim_blocks removes all the whitespace after a block tag, not one newline
//     ("{% endif %} {% endfor %}" loses the space: "onetwomany" for "one two many ", if elif
//     else), and a tab before a comment is dropped.
//   - Python semantics: -7 // 2 is -3, 2 ** 10 prints "1024.0", not 0 prints "1", {{ none }}
//     and None in lists print "" ([1, 'a', , True, 1.5]); strings iterate by bytes ('héllo'
//     gives "h.\xc3.\xa9.l.l.o."); dict.items()/keys() come sorted, not in insertion order;
//     true == 1 is False; tuples print as lists.
//   - String methods: lstrip(), rstrip() and split() without an argument fail ("argument
//     'cutset': 32 is not a string"). The % operator is numeric only: string formatting
//     ('%s' % 'one', percent format) and x % 0 or x % false (9 random cases) panic with an
//     integer division by zero.
//   - Statements: for a, b in …, {% set a, b = … %} and {% set x | upper %} are syntax errors.
//   - Filters: round rounds half up and returns floats (2.5 | round is 3.0, 5 | round 5.0);
//     default(…) replaces none; items and dictsort of a dict give []; format("%s", 1) gives
//     "%!s(int=1)"; its tojson is Go's compact, key-sorted encoding (no spaces after , and :),
//     without sort_keys (a custom tojson filter could be registered, which would fix only these
//     cases: 7 of its 184 random.json failures use tojson).
//   - Errors not raised: undefined + 1 renders "1", 'a' + 1 "a1", 1 // 0
//     "-9223372036854775808", 1 < 'a' True, range(1000000) | length "0"; list.append and
//     iterating an int render.
//
// On the fixtures gonja renders every conversation identically and ardanlabs/jinja all but the
// empty-content ones. Of the other chat templates in cases.json (llama2, chatml, zephyr, gemma,
// tools), both render llama2, chatml, zephyr and gemma identically and both fail tools (tojson).
package jinja
