package ggml

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/internal/testexec"
)

func TestParseISALevel(t *testing.T) {
	cases := []struct {
		in   string
		want ISALevel
		ok   bool
	}{
		{"portable", ISAPortable, true}, {"AVX2", ISAAVX2, true}, {" avx2-vnni ", ISAAVX2VNNI, true},
		{"avx512", ISAAVX512, true}, {"avx", 0, false}, {"", 0, false}, {"sse4", 0, false},
	}
	for _, c := range cases {
		got, err := ParseISALevel(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("ParseISALevel(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), MaxISAEnv) {
			t.Errorf("ParseISALevel(%q): error %q does not name %s", c.in, err, MaxISAEnv)
		}
	}
}

// TestISACap runs this test binary again under each cap and checks, in the child (TestISACapChild), that no path
// or CPU variant above the cap is taken; an unreadable cap makes device selection fail naming the variable.
func TestISACap(t *testing.T) {
	for _, c := range []struct{ cap, want string }{
		{"portable", "ok"}, {"avx2", "ok"}, {"avx2-vnni", "ok"}, {"avx512", "ok"}, {"avx9", MaxISAEnv},
	} {
		t.Run(c.cap, func(t *testing.T) {
			cmd := testexec.Command(context.Background(), os.Args[0])
			cmd.Env = append(os.Environ(), isaChildEnv+"=1", MaxISAEnv+"="+c.cap)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "child: "+c.want) {
				t.Fatalf("child under %s=%s: %v\n%s", MaxISAEnv, c.cap, err, out)
			}
			t.Logf("%s", strings.TrimSpace(strings.Split(string(out), "child: ")[0]))
		})
	}
}

// isaChildEnv makes the test binary run isaCapChild instead of the tests (TestMain), in a process whose cap was
// read from the environment at start.
const isaChildEnv = "IDEFICS2_ISA_CHILD"

// isaCapChild checks, under the cap the process started with, that no path or CPU variant above it is taken, and
// prints "child: ok" (or "child: IDEFICS2_MAX_ISA" when an unreadable cap made device selection fail as it must).
func isaCapChild() error {
	level, set, err := MaxISA()
	if err != nil {
		if _, serr := SelectDevice("auto"); serr == nil || !strings.Contains(serr.Error(), MaxISAEnv) {
			return fmt.Errorf("SelectDevice under a bad cap: %v", serr)
		}
		fmt.Println("child: " + MaxISAEnv)
		return nil
	}
	if !set {
		return fmt.Errorf("the cap was not read")
	}
	rep := LoadBackends()
	if v := rep.CPUVariant; v != "" && variantISA[v] > level {
		return fmt.Errorf("variant %s loaded under cap %s", v, level)
	}
	checks := []struct {
		name  string
		above bool
	}{
		{"q4x16 " + Q4X16BestISA().String(), (Q4X16BestISA() == Q4X16AVX512VNNI && level < ISAAVX512) ||
			(Q4X16BestISA() == Q4X16AVX2VNNI && level < ISAAVX2VNNI) || (Q4X16BestISA() == Q4X16AVX2 && level < ISAAVX2)},
		{"attn " + AttnBestISA().String(), (AttnBestISA() == AttnAVX512 && level < ISAAVX512) ||
			(AttnBestISA() == AttnAVX2 && level < ISAAVX2)},
		{"nf4 " + NF4BestISA().String(), (NF4BestISA() == NF4AVX2 && level < ISAAVX2) ||
			(NF4BestISA() == NF4AVX2VNNI && level < ISAAVX2VNNI) ||
			((NF4BestISA() == NF4AVX512 || NF4BestISA() == NF4AVX512VNNI) && level < ISAAVX512)},
	}
	for _, c := range checks {
		if c.above {
			return fmt.Errorf("path %s taken under cap %s", c.name, level)
		}
	}
	fmt.Printf("cap %s: variant %q (capped %v), paths %s, %s, %s\n", level, rep.CPUVariant, rep.Capped, checks[0].name, checks[1].name, checks[2].name)
	fmt.Println("child: ok")
	return nil
}

// TestMain runs isaCapChild instead of the tests in the child processes of TestISACap.
func TestMain(m *testing.M) {
	if os.Getenv(isaChildEnv) != "" {
		if err := isaCapChild(); err != nil {
			fmt.Println("child failed:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
