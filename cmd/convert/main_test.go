package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/cli/clitest"
)

var (
	p1     = filepath.Join("..", "..", "testdata", "hf", "checkpoints", "p1")
	p2     = filepath.Join("..", "..", "testdata", "hf", "checkpoints", "p2")
	loraP1 = filepath.Join("..", "..", "testdata", "lora", "adapters", "p1_seed_r8")
)

// TestCLI runs the command with a table of arguments and checks the exit status, the output and
// the files in the output folder.
func TestCLI(t *testing.T) {
	tests := []struct {
		name      string
		args      []string // "OUT" is replaced by the output folder
		existing  []string // files created in the output folder first
		wantCode  int
		wantErr   string   // substring of stderr
		wantOut   string   // substring of stdout
		wantFiles []string // the output folder afterwards
	}{
		{name: "no arguments", wantCode: exitUsage, wantErr: "--in is required"},
		{name: "no out", args: []string{"--in", p1}, wantCode: exitUsage, wantErr: "--out is required"},
		{name: "unknown flag", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--bogus"}, wantCode: exitUsage, wantErr: "bogus"},
		{name: "stray argument", args: []string{"--in", p1, "--out", "OUT/m.gguf", "extra"}, wantCode: exitUsage, wantErr: `unexpected argument "extra"`},
		{name: "bad type", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--type", "q2_k"}, wantCode: exitUsage, wantErr: `--type "q2_k"`},
		{name: "bad vision type", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--vision-type", "x"}, wantCode: exitUsage, wantErr: `--vision-type "x"`},
		{name: "bad override", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--override", "(=f16"}, wantCode: exitUsage, wantErr: "--override"},
		{name: "negative threads", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--threads", "-2"}, wantCode: exitUsage, wantErr: "--threads -2"},
		{name: "missing output folder", args: []string{"--in", p1, "--out", "OUT/no/m.gguf"}, wantCode: exitUsage, wantErr: "output folder"},
		{name: "missing input", args: []string{"--in", "OUT/nothing", "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "nothing"},
		{
			name: "existing output without force", args: []string{"--in", p1, "--out", "OUT/m.gguf"}, existing: []string{"m.gguf"},
			wantCode: exitUsage, wantErr: "--force", wantFiles: []string{"m.gguf"},
		},
		{
			name: "existing mmproj without force", args: []string{"--in", p1, "--out", "OUT/m.gguf"}, existing: []string{"mmproj-m.gguf"},
			wantCode: exitUsage, wantErr: "mmproj-m.gguf", wantFiles: []string{"mmproj-m.gguf"},
		},
		{
			name: "dry run writes nothing", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--type", "q4_k_m", "--dry-run"},
			wantCode: exitOK, wantOut: "token_embd.weight", wantFiles: nil,
		},
		{
			name: "convert", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--type", "q8_0", "--threads", "1"},
			wantCode: exitOK, wantErr: "wrote", wantFiles: []string{"m.gguf", "mmproj-m.gguf"},
		},
		{
			name: "convert with force and mmproj path", args: []string{"--in", p1, "--out", "OUT/m.gguf", "--mmproj-out", "OUT/v.gguf", "--force", "--override", "ffn_up=f32"},
			existing: []string{"m.gguf"}, wantCode: exitOK, wantFiles: []string{"m.gguf", "v.gguf"},
		},
		{name: "help", args: []string{"--help"}, wantCode: exitOK, wantOut: "usage: convert"},
		{
			name: "merge an adapter", args: []string{"--in", p1, "--lora", loraP1 + ":0.5", "--out", "OUT/m.gguf", "--type", "q8_0"},
			wantCode: exitOK, wantErr: "wrote", wantFiles: []string{"m.gguf", "mmproj-m.gguf"},
		},
		{
			name: "merge dry run lists merged tensors", args: []string{"--in", p1, "--lora", loraP1, "--out", "OUT/m.gguf", "--dry-run"},
			wantCode: exitOK, wantOut: "LoRA p1_seed_r8 (r 8, scale 1)",
		},
		{
			name: "adapter export", args: []string{"--in", p1, "--lora-only", loraP1, "--out", "OUT/a.gguf"},
			wantCode: exitOK, wantErr: "wrote", wantFiles: []string{"a.gguf", "mmproj-a.gguf"},
		},
		{
			name: "adapter export of a text-only adapter", args: []string{"--synthetic", "tiny", "--synthetic-adapter", "4", "--out", "OUT/a.gguf"},
			wantCode: exitOK, wantErr: "leaves the vision tower", wantFiles: []string{"a.gguf"},
		},
		{name: "adapter as input", args: []string{"--in", loraP1, "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "PEFT adapter folder"},
		{name: "adapter on another base", args: []string{"--in", p2, "--lora", loraP1, "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "lora_A.weight"},
		{name: "adapter export on another base", args: []string{"--in", p2, "--lora-only", loraP1, "--out", "OUT/a.gguf"}, wantCode: exitUsage, wantErr: "lora_A.weight"},
		{name: "adapter scale NaN", args: []string{"--in", p1, "--lora", loraP1 + ":nan", "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "not a finite number"},
		{name: "missing adapter", args: []string{"--in", p1, "--lora", "OUT/none", "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "none"},
		{name: "lora-only with type", args: []string{"--in", p1, "--lora-only", loraP1, "--type", "q8_0", "--out", "OUT/a.gguf"}, wantCode: exitUsage, wantErr: "--type does not apply"},
		{name: "lora-only with lora", args: []string{"--in", p1, "--lora-only", loraP1, "--lora", loraP1, "--out", "OUT/a.gguf"}, wantCode: exitUsage, wantErr: "--lora does not apply"},
		{
			name: "adapter export exists", args: []string{"--in", p1, "--lora-only", loraP1, "--out", "OUT/a.gguf"}, existing: []string{"mmproj-a.gguf"},
			wantCode: exitUsage, wantErr: "--force", wantFiles: []string{"mmproj-a.gguf"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			for _, f := range tc.existing {
				if err := os.WriteFile(filepath.Join(out, f), []byte("old"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.ReplaceAll(a, "OUT", out)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.wantErr)
			}
			if !strings.Contains(stdout.String(), tc.wantOut) {
				t.Errorf("stdout does not contain %q", tc.wantOut)
			}
			if code != exitOK && strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 && tc.name != "help" {
				t.Errorf("error is not one line: %q", stderr.String())
			}
			var files []string
			entries, _ := os.ReadDir(out)
			for _, e := range entries {
				files = append(files, e.Name())
			}
			if !slices.Equal(files, tc.wantFiles) {
				t.Errorf("output folder holds %v, want %v", files, tc.wantFiles)
			}
			for _, f := range tc.existing {
				if code != exitOK {
					if b, _ := os.ReadFile(filepath.Join(out, f)); string(b) != "old" {
						t.Errorf("%s was modified", f)
					}
				}
			}
			if code == exitOK && len(tc.wantFiles) > 0 {
				for _, f := range tc.wantFiles {
					g, err := gguf.Open(filepath.Join(out, f))
					if err != nil {
						t.Fatalf("%s: %v", f, err)
					}
					g.Close()
				}
			}
		})
	}
}

// TestHelp: -h and --help print the help on stdout in the common format, with the exit codes, and exit with 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"--in", p1, "--help"}, {"--threads", "2", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), args, &stdout, &stderr); code != exitOK || stderr.Len() > 0 {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr.String())
			}
			if err := clitest.CheckHelp("convert", stdout.String()); err != nil {
				t.Fatalf("%v\n%s", err, stdout.String())
			}
			for _, code := range []string{"\nexit codes:\n  0 ", "\n  1 ", "\n  2 ", "130/143"} {
				if !strings.Contains(stdout.String(), code) {
					t.Errorf("help lacks %q", code)
				}
			}
		})
	}
}
