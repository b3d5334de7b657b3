// Package cli parses the command lines of this module's commands (convert, and idefics2-run with its subcommands)
// and prints their help, so that every command takes options and shows --help the same way.
//
// Conventions (llama.cpp's): long options as --name or -name, short aliases (-m, -p, -n), "--name=value" or
// "--name value", repeatable list options, positional arguments anywhere, "--" ending the options, -h and --help
// asking for the help. Go's flag package stops at the first positional argument and has no aliases.
package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ErrHelp is returned by Parse when -h or --help is given: the caller prints Usage on standard output and exits
// with success.
var ErrHelp = errors.New("cli: help requested")

// UsageError is a bad command line (an unknown option, a missing or malformed value, a value out of range): front
// ends exit with their usage code.
type UsageError struct {
	Msg string
}

// Error returns the message.
func (e *UsageError) Error() string { return e.Msg }

// Usagef formats a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// IsUsageError reports whether err is (or wraps) a *UsageError.
func IsUsageError(err error) bool {
	var ue *UsageError
	return errors.As(err, &ue)
}

type kind int

const (
	kindBool kind = iota
	kindString
	kindInt
	kindUint64
	kindFloat
	kindList
)

// option is one registered option.
type option struct {
	names []string // without dashes; the first is the canonical name
	kind  kind
	usage string // with the value placeholder's backquotes removed
	arg   string // value placeholder in the help ("" for booleans)
	def   string // default as shown in the help ("" when none)
	ptr   any
	set   bool
}

// flag is how messages name the option: its canonical name with one dash when it is a single letter, two otherwise.
func (o *option) flag() string { return dashed(o.names[0]) }

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// FlagSet holds the options of one command, its synopsis and description, and after Parse the positional
// arguments.
type FlagSet struct {
	name     string
	synopsis []string
	about    string
	byName   map[string]*option
	all      []*option
	args     []string
	dashArgs bool
	exits    []string
}

// New returns a FlagSet for the command that messages call name ("convert", "chat"); synopsis holds the usage
// lines, each the whole command line as typed ("idefics2-run chat -m model.gguf [options]").
func New(name string, synopsis ...string) *FlagSet {
	return &FlagSet{name: name, synopsis: synopsis, byName: map[string]*option{}}
}

// Describe sets the text the help prints between the synopsis and the options.
func (fs *FlagSet) Describe(text string) { fs.about = strings.TrimSpace(text) }

// AllowDashArgs makes an argument that starts with "-" but names no option a positional argument, for commands
// whose positional arguments are free text (such as "-42").
func (fs *FlagSet) AllowDashArgs() { fs.dashArgs = true }

// add registers an option under names ("model,m"). A placeholder for the value may be given in backquotes in the
// usage text ("text model `FILE`"); otherwise one is derived from the kind. Registering a name twice is a
// programming error and panics.
func (fs *FlagSet) add(k kind, ptr any, names, def, usage string) {
	o := &option{names: strings.Split(names, ","), kind: k, ptr: ptr, def: def}
	o.usage, o.arg = placeholder(usage, k)
	for _, n := range o.names {
		if n == "" || n == "h" || n == "help" {
			panic(fmt.Sprintf("cli: %s: bad option name %q in %q", fs.name, n, names))
		}
		if _, dup := fs.byName[n]; dup {
			panic(fmt.Sprintf("cli: %s: option %q registered twice", fs.name, n))
		}
		fs.byName[n] = o
	}
	fs.all = append(fs.all, o)
}

// placeholder splits a usage text into the text without backquotes and the value placeholder.
func placeholder(usage string, k kind) (text, arg string) {
	if i := strings.IndexByte(usage, '`'); i >= 0 {
		if j := strings.IndexByte(usage[i+1:], '`'); j >= 0 {
			arg = usage[i+1 : i+1+j]
			usage = usage[:i] + arg + usage[i+1+j+1:]
		}
	}
	if k == kindBool {
		return usage, ""
	}
	if arg == "" {
		switch k {
		case kindInt, kindUint64:
			arg = "N"
		case kindFloat:
			arg = "X"
		default:
			arg = "TEXT"
		}
	}
	return usage, arg
}

// Bool registers a boolean option; its default is *p's value. "--name" sets true, "--name=false" false.
func (fs *FlagSet) Bool(p *bool, names, usage string) {
	def := ""
	if *p {
		def = "true"
	}
	fs.add(kindBool, p, names, def, usage)
}

// String registers a string option; its default is *p's value.
func (fs *FlagSet) String(p *string, names, usage string) {
	def := *p
	if def != "" {
		def = strconv.Quote(def)
	}
	fs.add(kindString, p, names, def, usage)
}

// Int registers an integer option; its default is *p's value (shown in the help unless 0).
func (fs *FlagSet) Int(p *int, names, usage string) {
	fs.add(kindInt, p, names, nonZero(strconv.Itoa(*p)), usage)
}

// Uint64 registers an unsigned integer option; its default is *p's value (shown in the help unless 0).
func (fs *FlagSet) Uint64(p *uint64, names, usage string) {
	fs.add(kindUint64, p, names, nonZero(strconv.FormatUint(*p, 10)), usage)
}

// Float registers a floating-point option (finite values only); its default is *p's value (shown unless 0).
func (fs *FlagSet) Float(p *float64, names, usage string) {
	fs.add(kindFloat, p, names, nonZero(strconv.FormatFloat(*p, 'g', -1, 64)), usage)
}

// List registers a repeatable string option: each occurrence appends its value to *p.
func (fs *FlagSet) List(p *[]string, names, usage string) { fs.add(kindList, p, names, "", usage) }

func nonZero(s string) string {
	if s == "0" {
		return ""
	}
	return s
}

// Set reports whether the option with this name (any of its names) was given on the command line.
func (fs *FlagSet) Set(name string) bool {
	o, ok := fs.byName[name]
	return ok && o.set
}

// Args returns the positional arguments, in order.
func (fs *FlagSet) Args() []string { return fs.args }

// Parse reads args. It returns ErrHelp when -h or --help is among the options, and a *UsageError naming the
// option for an unknown option, a missing value or a value of the wrong kind.
func (fs *FlagSet) Parse(args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			fs.args = append(fs.args, args[i+1:]...)
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			fs.args = append(fs.args, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		val, hasVal := "", false
		if j := strings.IndexByte(name, '='); j >= 0 {
			name, val, hasVal = name[:j], name[j+1:], true
		}
		if name == "h" || name == "help" {
			return ErrHelp
		}
		o, ok := fs.byName[name]
		if !ok {
			near := fs.nearest(name)
			if fs.dashArgs && strings.HasPrefix(a, "--") && near != "" {
				// Free text may start with dashes, but "--no-bso" beside --no-bos is a typo, not text.
				return Usagef("%s: unknown option %s (did you mean %s? see --help; put -- before text that starts with dashes)", fs.name, a, dashed(near))
			}
			if fs.dashArgs {
				fs.args = append(fs.args, a)
				continue
			}
			if near != "" {
				return Usagef("%s: unknown option %s (did you mean %s? see --help)", fs.name, a, dashed(near))
			}
			return Usagef("%s: unknown option %s (see --help)", fs.name, a)
		}
		if o.kind == kindBool {
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return Usagef("%s: option %s: %q is not true or false", fs.name, o.flag(), val)
				}
			}
			*o.ptr.(*bool) = b
			o.set = true
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return Usagef("%s: option %s needs a value", fs.name, o.flag())
			}
			i++
			val = args[i]
		}
		if err := o.setValue(val); err != nil {
			return Usagef("%s: option %s: %v", fs.name, o.flag(), err)
		}
		o.set = true
	}
	return nil
}

func (o *option) setValue(val string) error {
	switch o.kind {
	case kindString:
		*o.ptr.(*string) = val
	case kindList:
		p := o.ptr.(*[]string)
		*p = append(*p, val)
	case kindInt:
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("%q is out of range (%d to %d)", val, math.MinInt, math.MaxInt)
		}
		if err != nil {
			return fmt.Errorf("%q is not an integer", val)
		}
		*o.ptr.(*int) = n
	case kindUint64:
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("%q is out of range (0 to %d)", val, uint64(math.MaxUint64))
		}
		if err != nil {
			return fmt.Errorf("%q is not an integer from 0 to %d", val, uint64(math.MaxUint64))
		}
		*o.ptr.(*uint64) = n
	case kindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", val)
		}
		*o.ptr.(*float64) = f
	}
	return nil
}

// Usage writes the help: the synopsis lines, the description, and the options sorted by name, one per line.
//
//	usage: CMD ...
//	       CMD ...
//
//	DESCRIPTION
//
//	options:
//	  --name, -n N                 what it does (default 4)
func (fs *FlagSet) Usage(w io.Writer) {
	for i, s := range fs.synopsis {
		if i == 0 {
			fmt.Fprintf(w, "usage: %s\n", s)
		} else {
			fmt.Fprintf(w, "       %s\n", s)
		}
	}
	if fs.about != "" {
		fmt.Fprintf(w, "\n%s\n", fs.about)
	}
	fmt.Fprint(w, "\noptions:\n")
	defer fs.writeExits(w)
	opts := append([]*option{{names: []string{"help", "h"}, kind: kindBool, usage: "show this help and exit"}}, fs.all...)
	sort.SliceStable(opts, func(i, j int) bool { return opts[i].names[0] < opts[j].names[0] })
	for _, o := range opts {
		var names []string
		for _, n := range o.names {
			names = append(names, dashed(n))
		}
		head := strings.Join(names, ", ")
		if o.arg != "" {
			head += " " + o.arg
		}
		def := ""
		if o.def != "" {
			def = " (default " + o.def + ")"
		}
		fmt.Fprintf(w, "  %-28s %s%s\n", head, o.usage, def)
	}
}
