package ggml

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
	if os.Getenv("IDEFICS2_ISA_CHILD") != "" {
		t.Skip("in the child")
	}
	for _, c := range []struct{ cap, want string }{
		{"portable", "ok"}, {"avx2", "ok"}, {"avx2-vnni", "ok"}, {"avx512", "ok"}, {"avx9", MaxISAEnv},
	} {
		t.Run(c.cap, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestISACapChild$", "-test.v")
			cmd.Env = append(os.Environ(), "IDEFICS2_ISA_CHILD=1", MaxISAEnv+"="+c.cap)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "child: "+c.want) {
				t.Fatalf("child under %s=%s: %v\n%s", MaxISAEnv, c.cap, err, out)
			}
			t.Logf("%s", strings.TrimSpace(strings.Split(string(out), "child: ")[0]))
		})
	}
}

func TestISACapChild(t *testing.T) {
	if os.Getenv("IDEFICS2_ISA_CHILD") == "" {
		t.Skip("run by TestISACap")
	}
	level, set, err := MaxISA()
	if err != nil {
		if _, serr := SelectDevice("auto"); serr == nil || !strings.Contains(serr.Error(), MaxISAEnv) {
			t.Fatalf("SelectDevice under a bad cap: %v", serr)
		}
		t.Log("child: " + MaxISAEnv)
		return
	}
	if !set {
		t.Fatal("the cap was not read")
	}
	rep := LoadBackends()
	if v := rep.CPUVariant; v != "" && variantISA[v] > level {
		t.Fatalf("variant %s loaded under cap %s", v, level)
	}
	checks := []struct {
		name  string
		above bool
	}{
		{"q4x16 " + Q4X16BestISA().String(), (Q4X16BestISA() == Q4X16AVX512VNNI && level < ISAAVX512) ||
			(Q4X16BestISA() == Q4X16AVX2 && level < ISAAVX2)},
		{"attn " + AttnBestISA().String(), AttnBestISA() == AttnAVX512 && level < ISAAVX512},
		{"nf4 " + NF4BestISA().String(), (NF4BestISA() == NF4AVX2 && level < ISAAVX2) ||
			((NF4BestISA() == NF4AVX512 || NF4BestISA() == NF4AVX512VNNI) && level < ISAAVX512)},
	}
	for _, c := range checks {
		if c.above {
			t.Fatalf("path %s taken under cap %s", c.name, level)
		}
	}
	t.Logf("cap %s: variant %q (capped %v), paths %s, %s, %s", level, rep.CPUVariant, rep.Capped, checks[0].name, checks[1].name, checks[2].name)
	t.Log("child: ok")
}
