package cli

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// values are the options of the test command.
type values struct {
	model   string
	n       int
	seed    uint64
	temp    float64
	verbose bool
	warmup  bool
	images  []string
}

func newTestSet(v *values) *FlagSet {
	fs := New("test", "test -m FILE [options] TEXT...")
	v.warmup = true
	v.seed = 1
	fs.String(&v.model, "model,m", "model `FILE`")
	fs.Int(&v.n, "max-tokens,n", "tokens")
	fs.Uint64(&v.seed, "seed", "seed")
	fs.Float(&v.temp, "temp", "temperature")
	fs.Bool(&v.verbose, "verbose,v", "log")
	fs.Bool(&v.warmup, "warmup", "warm up")
	fs.List(&v.images, "image", "image `FILE`")
	return fs
}

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		dashArgs bool
		want     values
		wantArgs []string
		wantSet  []string
	}{
		{name: "defaults", want: values{seed: 1, warmup: true}},
		{name: "long and short", args: []string{"--model", "a.gguf", "-n", "7"}, want: values{model: "a.gguf", n: 7, seed: 1, warmup: true}, wantSet: []string{"model", "m", "n"}},
		{name: "single dash long", args: []string{"-model", "a.gguf", "-verbose"}, want: values{model: "a.gguf", seed: 1, verbose: true, warmup: true}},
		{name: "equals", args: []string{"--max-tokens=-3", "--temp=0.5", "--seed=9"}, want: values{n: -3, temp: 0.5, seed: 9, warmup: true}},
		{name: "negative value", args: []string{"-n", "-3"}, want: values{n: -3, seed: 1, warmup: true}},
		{name: "bool false", args: []string{"--warmup=false", "-v=true"}, want: values{seed: 1, verbose: true}},
		{name: "list", args: []string{"--image", "a", "--image", "-", "--image=b"}, want: values{seed: 1, warmup: true, images: []string{"a", "-", "b"}}},
		{name: "positional anywhere", args: []string{"x", "-n", "2", "y", "-"}, want: values{n: 2, seed: 1, warmup: true}, wantArgs: []string{"x", "y", "-"}},
		{name: "double dash", args: []string{"-n", "2", "--", "-v", "--help"}, want: values{n: 2, seed: 1, warmup: true}, wantArgs: []string{"-v", "--help"}},
		{name: "dash args", args: []string{"-42", "-v"}, dashArgs: true, want: values{seed: 1, verbose: true, warmup: true}, wantArgs: []string{"-42"}},
		{name: "dash args far from options", args: []string{"--hello--", "-x", "-modle", "--", "--modle"}, dashArgs: true, want: values{seed: 1, warmup: true}, wantArgs: []string{"--hello--", "-x", "-modle", "--modle"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v values
			fs := newTestSet(&v)
			if tc.dashArgs {
				fs.AllowDashArgs()
			}
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(v, tc.want) {
				t.Errorf("values %+v, want %+v", v, tc.want)
			}
			if !reflect.DeepEqual(fs.Args(), tc.wantArgs) {
				t.Errorf("args %q, want %q", fs.Args(), tc.wantArgs)
			}
			for _, n := range tc.wantSet {
				if !fs.Set(n) {
					t.Errorf("Set(%q) false", n)
				}
			}
			if fs.Set("temp") != strings.Contains(strings.Join(tc.args, " "), "temp") {
				t.Errorf("Set(temp) %v for %q", fs.Set("temp"), tc.args)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // substring of the message; "" for ErrHelp
	}{
		{"help", []string{"-n", "2", "--help"}, ""},
		{"short help", []string{"-h", "--bogus"}, ""},
		{"single dash help", []string{"-help"}, ""},
		{"unknown", []string{"--bogus"}, "test: unknown option --bogus (see --help)"},
		{"typo", []string{"--tmp", "1"}, "test: unknown option --tmp (did you mean --temp? see --help)"},
		{"typo with value", []string{"--max-token=3"}, "unknown option --max-token=3 (did you mean --max-tokens? see --help)"},
		{"transposed", []string{"--modle", "a"}, "(did you mean --model?"},
		{"single dash typo", []string{"-verbos"}, "(did you mean --verbose?"},
		{"help typo", []string{"--hepl"}, "(did you mean --help?"},
		{"too far", []string{"--xyz"}, "test: unknown option --xyz (see --help)"},
		{"short unknown", []string{"-q"}, "test: unknown option -q (see --help)"},
		{"no value", []string{"-m"}, "test: option --model needs a value"},
		{"not an integer", []string{"-n", "many"}, `test: option --max-tokens: "many" is not an integer`},
		{"negative seed", []string{"--seed", "-1"}, `option --seed: "-1" is not an integer from 0`},
		{"seed out of range", []string{"--seed", "18446744073709551616"}, `option --seed: "18446744073709551616" is out of range (0 to 18446744073709551615)`},
		{"integer out of range", []string{"-n", "99999999999999999999"}, `option --max-tokens: "99999999999999999999" is out of range`},
		{"NaN", []string{"--temp", "NaN"}, `option --temp: "NaN" is not a number`},
		{"Inf", []string{"--temp=inf"}, `"inf" is not a number`},
		{"bool value", []string{"--verbose=maybe"}, `option --verbose: "maybe" is not true or false`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v values
			err := newTestSet(&v).Parse(tc.args)
			if tc.want == "" {
				if !errors.Is(err, ErrHelp) {
					t.Fatalf("error %v, want ErrHelp", err)
				}
				return
			}
			if !IsUsageError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a usage error naming %q", err, tc.want)
			}
		})
	}
}

// TestDashArgsTypo: with free-text arguments, a double-dash argument near an option is still a typo to report.
func TestDashArgsTypo(t *testing.T) {
	var v values
	fs := newTestSet(&v)
	fs.AllowDashArgs()
	err := fs.Parse([]string{"--modle", "a"})
	if !IsUsageError(err) || !strings.Contains(err.Error(), "unknown option --modle (did you mean --model? see --help; put -- before text that starts with dashes)") {
		t.Fatalf("error %v", err)
	}
}

func TestUsage(t *testing.T) {
	var v values
	fs := newTestSet(&v)
	fs.Describe("Says things.\n")
	fs.Exits("0    success", "2    bad usage")
	var b strings.Builder
	fs.Usage(&b)
	want := `usage: test -m FILE [options] TEXT...

Says things.

options:
  --help, -h                   show this help and exit
  --image FILE                 image FILE
  --max-tokens, -n N           tokens
  --model, -m FILE             model FILE
  --seed N                     seed (default 1)
  --temp X                     temperature
  --verbose, -v                log
  --warmup                     warm up (default true)

exit codes:
  0    success
  2    bad usage
`
	if b.String() != want {
		t.Errorf("usage:\n%s\nwant:\n%s", b.String(), want)
	}
}

// FuzzParse parses arbitrary argument lists: an error or a parse, never a panic.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"--model a.gguf -n 7", "-n=-3 --temp=0.5", "--image a --image=b x -- -v", "--help", "-n", "--temp=x", "---", "-=", "--seed=18446744073709551616"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var v values
		fs := newTestSet(&v)
		if err := fs.Parse(strings.Fields(line)); err != nil && !IsUsageError(err) && !errors.Is(err, ErrHelp) {
			t.Fatalf("%q: error %v is neither a usage error nor help", line, err)
		}
	})
}
