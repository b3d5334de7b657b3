package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

type flagKind int

const (
	kindBool flagKind = iota
	kindString
	kindInt
	kindFloat
	kindList
)

type flagDef struct {
	names []string // without dashes; the first is the canonical long name
	kind  flagKind
	usage string
	ptr   any
	def   string
	set   bool
}

// flagSet is a small command-line parser with llama.cpp-style conventions: long options as --name or -name, short
// aliases (-m, -p, -n), "--name=value" or "--name value", repeatable list options, positional arguments anywhere,
// "--" ending the options. Go's flag package stops at the first positional argument and has no aliases.
type flagSet struct {
	cmd  string
	defs map[string]*flagDef
	all  []*flagDef
	args []string
	// dashArgs makes an argument that starts with "-" but names no option a positional argument (for TEXT
	// arguments such as "-42").
	dashArgs bool
}

func newFlagSet(cmd string) *flagSet { return &flagSet{cmd: cmd, defs: map[string]*flagDef{}} }

func (fs *flagSet) add(kind flagKind, ptr any, names, def, usage string) {
	d := &flagDef{names: strings.Split(names, ","), kind: kind, usage: usage, ptr: ptr, def: def}
	for _, n := range d.names {
		fs.defs[n] = d
	}
	fs.all = append(fs.all, d)
}

func (fs *flagSet) Bool(p *bool, names, usage string) { fs.add(kindBool, p, names, "", usage) }
func (fs *flagSet) String(p *string, names, usage string) {
	fs.add(kindString, p, names, *p, usage)
}
func (fs *flagSet) Int(p *int, names, usage string) {
	fs.add(kindInt, p, names, strconv.Itoa(*p), usage)
}
func (fs *flagSet) Float(p *float64, names, usage string) {
	fs.add(kindFloat, p, names, strconv.FormatFloat(*p, 'g', -1, 64), usage)
}
func (fs *flagSet) List(p *[]string, names, usage string) { fs.add(kindList, p, names, "", usage) }

// Set reports whether the option with canonical name was given.
func (fs *flagSet) Set(name string) bool {
	d, ok := fs.defs[name]
	return ok && d.set
}

func (fs *flagSet) parse(args []string) error {
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
		d, ok := fs.defs[name]
		if !ok {
			if fs.dashArgs {
				fs.args = append(fs.args, a)
				continue
			}
			return usagef("%s: unknown option %s (see --help)", fs.cmd, a)
		}
		flag := "--" + d.names[0]
		if d.kind == kindBool {
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return usagef("%s: option %s: %q is not true or false", fs.cmd, flag, val)
				}
			}
			*d.ptr.(*bool) = b
			d.set = true
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usagef("%s: option %s needs a value", fs.cmd, flag)
			}
			i++
			val = args[i]
		}
		if err := d.setValue(val); err != nil {
			return usagef("%s: option %s: %v", fs.cmd, flag, err)
		}
		d.set = true
	}
	return nil
}

func (d *flagDef) setValue(val string) error {
	switch d.kind {
	case kindString:
		*d.ptr.(*string) = val
	case kindList:
		p := d.ptr.(*[]string)
		*p = append(*p, val)
	case kindInt:
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("%q is not an integer", val)
		}
		*d.ptr.(*int) = n
	case kindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", val)
		}
		*d.ptr.(*float64) = f
	}
	return nil
}

// usage writes the options, one per line.
func (fs *flagSet) usage(w io.Writer) {
	defs := append([]*flagDef(nil), fs.all...)
	sort.SliceStable(defs, func(i, j int) bool { return defs[i].names[0] < defs[j].names[0] })
	for _, d := range defs {
		var names []string
		for _, n := range d.names {
			if len(n) == 1 {
				names = append(names, "-"+n)
			} else {
				names = append(names, "--"+n)
			}
		}
		arg := ""
		switch d.kind {
		case kindString, kindList:
			arg = " S"
		case kindInt:
			arg = " N"
		case kindFloat:
			arg = " X"
		}
		def := ""
		if d.def != "" && d.def != "0" && d.kind != kindBool {
			def = " (default " + d.def + ")"
		}
		fmt.Fprintf(w, "  %-28s %s%s\n", strings.Join(names, ", ")+arg, d.usage, def)
	}
}
