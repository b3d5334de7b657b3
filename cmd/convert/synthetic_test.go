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
)

// TestSynthetic runs --synthetic with the tiny preset: flags refused before anything is written,
// the temporary checkpoint removed after a conversion, --synthetic-dir kept and reusable with --in.
func TestSynthetic(t *testing.T) {
	tests := []struct {
		name      string
		args      []string // "OUT" is replaced by the output folder
		existing  []string // files created in the output folder first
		wantCode  int
		wantErr   string   // substring of stderr
		wantFiles []string // the output folder afterwards (folders end with "/")
	}{
		{name: "unknown preset", args: []string{"--synthetic", "nope", "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: `unknown preset "nope"`},
		{name: "dir without preset", args: []string{"--synthetic-dir", "OUT/ck", "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "--synthetic-dir needs --synthetic"},
		{name: "with --in", args: []string{"--synthetic", "tiny", "--in", p1, "--out", "OUT/m.gguf"}, wantCode: exitUsage, wantErr: "--in and --synthetic"},
		{name: "no out", args: []string{"--synthetic", "tiny"}, wantCode: exitUsage, wantErr: "--out is required"},
		{name: "missing output folder", args: []string{"--synthetic", "tiny", "--out", "OUT/no/m.gguf"}, wantCode: exitUsage, wantErr: "output folder"},
		{
			name: "existing output refused before writing", args: []string{"--synthetic", "tiny", "--out", "OUT/m.gguf"},
			existing: []string{"mmproj-m.gguf"}, wantCode: exitUsage, wantErr: "--force", wantFiles: []string{"mmproj-m.gguf"},
		},
		{
			name: "existing synthetic dir", args: []string{"--synthetic", "tiny", "--synthetic-dir", "OUT/ck", "--out", "OUT/m.gguf"},
			existing: []string{"ck"}, wantCode: exitUsage, wantErr: "already exists", wantFiles: []string{"ck"},
		},
		{
			name: "temporary checkpoint removed", args: []string{"--synthetic", "tiny", "--type", "q4_0", "--out", "OUT/m.gguf", "--threads", "1"},
			wantCode: exitOK, wantErr: "m.gguf and ", wantFiles: []string{"m.gguf", "mmproj-m.gguf"},
		},
		{
			name: "kept checkpoint", args: []string{"--synthetic", "tiny", "--synthetic-dir", "OUT/ck", "--synthetic-seed", "7", "--out", "OUT/m.gguf"},
			wantCode: exitOK, wantErr: "wrote synthetic tiny checkpoint", wantFiles: []string{"ck/", "m.gguf", "mmproj-m.gguf"},
		},
		{
			name: "dry run removes the checkpoint", args: []string{"--synthetic", "tiny", "--out", "OUT/m.gguf", "--dry-run"},
			wantCode: exitOK, wantFiles: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			for _, name := range tt.existing {
				if err := os.WriteFile(filepath.Join(out, name), []byte("old"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "OUT", out)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit status %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantErr)
			}
			if code != exitOK && strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
				t.Errorf("error is not one line: %q", stderr.String())
			}
			var got []string
			entries, err := os.ReadDir(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				name := e.Name()
				if e.IsDir() {
					name += "/"
				}
				got = append(got, name)
			}
			want := slices.Clone(tt.wantFiles)
			if slices.Contains(tt.existing, "ck") {
				want = []string{"ck"} // the existing "ck" is a file here
			}
			if !slices.Equal(got, want) {
				t.Errorf("output folder holds %v, want %v", got, want)
			}
			if slices.Contains(want, "m.gguf") {
				f, err := gguf.Open(filepath.Join(out, "m.gguf"))
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			if slices.Contains(want, "ck/") {
				if _, err := os.Stat(filepath.Join(out, "ck", "config.json")); err != nil {
					t.Errorf("kept checkpoint: %v", err)
				}
				// The kept folder converts again with --in.
				stderr.Reset()
				args := []string{"--in", filepath.Join(out, "ck"), "--out", filepath.Join(out, "again.gguf"), "--type", "q8_0"}
				if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
					t.Errorf("--in on the kept checkpoint: exit status %d: %s", code, stderr.String())
				}
			}
		})
	}
}

// TestSyntheticInterrupted checks that a cancelled run leaves neither the temporary checkpoint
// nor an output behind.
func TestSyntheticInterrupted(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--synthetic", "tiny", "--out", filepath.Join(out, "m.gguf")}, &stdout, &stderr)
	if code == exitOK {
		t.Fatalf("exit status 0 for a cancelled run; stderr: %s", stderr.String())
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("cancelled run left %d entries, first %q", len(entries), entries[0].Name())
	}
}
