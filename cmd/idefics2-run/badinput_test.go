package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/ggufedit"
	"github.com/idefics2-go/idefics2/runner/testmodels"
)

// rewriteGGUF writes a copy of the GGUF at src into dir/name with the metadata values in kv replaced (or added) and
// the tensors in types given another type (their data zeroed at the new size).
func rewriteGGUF(t *testing.T, src, dir, name string, kv map[string]any, types map[string]gguf.Type) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if err := ggufedit.Copy(src, out, ggufedit.Edit{KV: kv, Types: types}); err != nil {
		t.Fatal(err)
	}
	return out
}

// badFiles are broken inputs made from the p1 pair (and p2's mmproj for a mismatched pair).
type badFiles struct {
	dir, model, mm, mm2                        string
	truncated, wrongArch, badType, hugeContext string
	zeroImage, hugeImage, junkImage, nonUTF8   string
	notWritable                                string
	adapterP1, adapterP2, adapterP2MM          string
}

func makeBadFiles(t *testing.T) badFiles {
	t.Helper()
	var b badFiles
	b.dir = t.TempDir()
	b.model, b.mm = pair(t, "p1")
	_, b.mm2 = pair(t, "p2")
	var err error
	if b.adapterP1, _, err = testmodels.Adapter("p1_seed_r8", "p1"); err != nil {
		t.Fatal(err)
	}
	if b.adapterP2, b.adapterP2MM, err = testmodels.Adapter("p2_all_rslora", "p2"); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(b.model)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(b.dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b.truncated = write("truncated.gguf", whole[:len(whole)/2])
	b.wrongArch = rewriteGGUF(t, b.model, b.dir, "gemma.gguf", map[string]any{"general.architecture": "gemma"}, nil)
	b.badType = rewriteGGUF(t, b.model, b.dir, "i32-norm.gguf", nil, map[string]gguf.Type{"output_norm.weight": gguf.TypeI32})
	b.hugeContext = rewriteGGUF(t, b.model, b.dir, "huge-context.gguf", map[string]any{"llama.context_length": uint32(1 << 30)}, nil)
	b.zeroImage = write("zero.png", nil)
	b.junkImage = write("junk.png", []byte("not a picture"))
	png, err := os.ReadFile(demoPNG("demo_00.png"))
	if err != nil {
		t.Fatal(err)
	}
	b.hugeImage = write("huge.png", pngWithSize(png, 100000, 100000))
	b.nonUTF8 = write("prompt.txt", []byte("caf\xe9 \xff"))
	b.notWritable = write("a-file", []byte("x"))
	return b
}

// TestCLIBadInputMatrix: the run side of the bad-input matrix, in process. Each case exits with its code
// (2 bad input, 1 runtime failure) and one stderr line naming the culprit; --dump and preprocess --out leave no
// output file behind.
func TestCLIBadInputMatrix(t *testing.T) {
	b := makeBadFiles(t)
	img := demoPNG("demo_00.png")
	pairArgs := append([]string{"-m", b.model, "--mmproj", b.mm}, cpu...)
	with := func(extra ...string) []string { return append(append([]string(nil), pairArgs...), extra...) }
	model := func(path string, extra ...string) []string {
		return append(append([]string{"-m", path, "--text-only"}, cpu...), extra...)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"directory as model", model(b.dir, "-p", "hi"), 2, "model file " + b.dir + " is not a regular file"},
		{"directory as mmproj", append([]string{"-m", b.model, "--mmproj", b.dir, "-p", "hi"}, cpu...), 2, "mmproj file " + b.dir + " is not a regular file"},
		{"directory as image", with("-p", "hi", "--image", b.dir), 2, b.dir},
		{"directory as prompt file", with("-f", b.dir), 2, "--file"},
		{"missing prompt file", with("-f", "/nonexistent/p.txt"), 2, "/nonexistent/p.txt"},
		{"truncated GGUF", model(b.truncated, "-p", "hi"), 2, "truncated.gguf"},
		{"mmproj of another model", append([]string{"-m", b.model, "--mmproj", b.mm2, "-p", "hi"}, cpu...), 2, "not a pair"},
		{"wrong architecture", model(b.wrongArch, "-p", "hi"), 2, `architecture "gemma"`},
		{"unsupported tensor type", model(b.badType, "-p", "hi"), 2, "output_norm.weight"},
		{"zero-size image", with("-p", "hi", "--image", b.zeroImage), 2, "zero.png"},
		{"undecodable image", with("-p", "hi", "--image", b.junkImage), 2, "junk.png"},
		{"huge-dimension image", with("-p", "hi", "--image", b.hugeImage), 2, "100000x100000"},
		{"non-UTF-8 prompt file", with("-f", b.nonUTF8), 2, "not valid UTF-8 (first bad byte at offset 3)"},
		{"non-UTF-8 -p", with("-p", "ok \xc3("), 2, "-p: the text is not valid UTF-8"},
		{"non-UTF-8 --system", with("-p", "hi", "--system", "\xff"), 2, "--system"},
		{"non-UTF-8 raw prompt", with("--raw", "-p", "\xfe"), 2, "not valid UTF-8"},
		{"context over the model's", with("-p", "hi", "-c", "2000000"), 2, "context size 2000000"},
		{"context that does not fit memory", model(b.hugeContext, "-p", "hi", "-c", "1073741824"), 1, "MiB of memory are available"},
		{"absurd threads", with("-p", "hi", "-t", "100000"), 2, "--threads 100000"},
		{"negative batch size", with("-p", "hi", "-b", "-1"), 2, "--batch-size -1"},
		{"negative context", with("-p", "hi", "-c", "-5"), 2, "--ctx-size -5"},
		{"negative top-k", with("-p", "hi", "--top-k", "-5"), 2, "top_k -5"},
		{"repeat-last-n below -1", with("-p", "hi", "--repeat-last-n", "-7"), 2, "repeat_last_n -7"},
		{"seed too large", with("-p", "hi", "--seed", "99999999999999999999"), 2, "--seed"},
		{"seed below -1", with("-p", "hi", "--seed", "-2"), 2, "--seed -2"},
		{"NaN temperature", with("-p", "hi", "--temp", "NaN"), 2, `"NaN" is not a number`},
		{"huge penalty", with("-p", "hi", "--presence-penalty", "1e300"), 2, "presence_penalty"},
		{"bool with a value", with("-p", "hi", "--json=maybe"), 2, `"maybe" is not true or false`},
		{"unknown device", with("-p", "hi", "--device", "quantum"), 2, `--device "quantum"`},
		{"empty device name", with("-p", "hi", "--device", "gpu7"), 2, `--device "gpu7"`},
		{"dump into a file", with("-p", "hi", "-n", "1", "--dump", filepath.Join(b.notWritable, "sub")), 1, "a-file"},
		{"dump with a bad image", with("-p", "hi", "--image", b.junkImage, "--dump", filepath.Join(b.dir, "dump1")), 2, "junk.png"},
		{"preprocess a bad image", []string{"preprocess", "--mmproj", b.mm, "--image", img, "--image", b.junkImage, "--out", filepath.Join(b.dir, "pre1")}, 2, "junk.png"},
		{"preprocess into a file", []string{"preprocess", "--mmproj", b.mm, "--image", img, "--out", filepath.Join(b.notWritable, "x")}, 1, "a-file"},
		{"serve absurd queue", append([]string{"serve", "-m", b.model, "--queue", "-1"}, cpu...), 2, "--queue -1"},
		{"serve zero timeout", append([]string{"serve", "-m", b.model, "--timeout", "0"}, cpu...), 2, "--timeout 0"},
		{"serve negative drain timeout", append([]string{"serve", "-m", b.model, "--drain-timeout", "-1"}, cpu...), 2, "--drain-timeout -1"},
		{"serve huge drain timeout", append([]string{"serve", "-m", b.model, "--drain-timeout", "2000000000"}, cpu...), 2, "--drain-timeout 2000000000"},
		{"batch bad device", append([]string{"batch", "-m", b.model, "--device", "tpu"}, cpu[2:]...), 2, `--device "tpu"`},
		{"chat missing model", append([]string{"chat", "-m", "/nonexistent/m.gguf"}, cpu...), 2, "/nonexistent/m.gguf"},
		{"adapter of another model", with("-p", "hi", "--lora", b.adapterP2), 2, "blk.0.attn_q.weight.lora_a"},
		{"adapter mmproj of another adapter", with("-p", "hi", "--lora", b.adapterP1, "--lora-mmproj", b.adapterP2MM), 2, "made from adapter"},
		{"model as adapter", with("-p", "hi", "--lora", b.model), 2, "general.type"},
		{"missing adapter", with("-p", "hi", "--lora", "/nonexistent/a.gguf"), 2, "/nonexistent/a.gguf"},
		{"adapter scale NaN", with("-p", "hi", "--lora", b.adapterP1+":nan"), 2, "not a finite number"},
		{"lora-mmproj without lora", with("-p", "hi", "--lora-mmproj", b.adapterP2MM), 2, "has no --lora"},
		{"serve adapter of another model", append([]string{"serve", "-m", b.model, "--lora", b.adapterP2}, cpu...), 2, "lora_a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "", tc.args...)
			noPanic(t, errs)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, errs)
			}
			if lines := strings.Split(strings.TrimRight(errs, "\n"), "\n"); len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), errs)
			}
			if !strings.Contains(errs, tc.want) || !strings.HasPrefix(errs, "idefics2-run: ") || strings.HasPrefix(errs, "idefics2-run: idefics2-run:") {
				t.Fatalf("stderr %q, want one line starting idefics2-run: and naming %q", errs, tc.want)
			}
			if tc.args[0] != "preprocess" && out != "" {
				t.Fatalf("stdout %q, want nothing", out)
			}
		})
	}
	for _, d := range []string{"dump1", "pre1"} {
		if _, err := os.Stat(filepath.Join(b.dir, d)); !os.IsNotExist(err) {
			t.Errorf("a failed run left %s behind (%v)", d, err)
		}
	}
}

// pngWithSize rewrites the IHDR width and height of a PNG file (and the chunk's CRC) without touching its pixels.
func pngWithSize(b []byte, w, h uint32) []byte {
	out := append([]byte(nil), b...)
	binary.BigEndian.PutUint32(out[16:], w)
	binary.BigEndian.PutUint32(out[20:], h)
	binary.BigEndian.PutUint32(out[29:], crc32.ChecksumIEEE(out[12:29]))
	return out
}

// TestBinaryBadInput runs a representative part of the bad-input matrix through the built binary: real exit codes,
// one stderr line, nothing on stdout, no stack trace.
func TestBinaryBadInput(t *testing.T) {
	b := makeBadFiles(t)
	pairArgs := append([]string{"-m", b.model, "--mmproj", b.mm}, cpu...)
	with := func(extra ...string) []string { return append(append([]string(nil), pairArgs...), extra...) }
	tests := []struct {
		args []string
		code int
		want string
	}{
		{append([]string{"-m", b.dir, "-p", "hi"}, cpu...), 2, "is not a regular file"},
		{append([]string{"-m", b.truncated, "--text-only", "-p", "hi"}, cpu...), 2, "truncated.gguf"},
		{append([]string{"-m", b.mm, "-p", "hi"}, cpu...), 2, "is an mmproj"},
		{append([]string{"-m", b.model, "--mmproj", b.model, "-p", "hi"}, cpu...), 2, "is a text model"},
		{append([]string{"-m", b.model, "--mmproj", b.mm2, "-p", "hi"}, cpu...), 2, "not a pair"},
		{append([]string{"-m", b.badType, "--text-only", "-p", "hi"}, cpu...), 2, `"output_norm.weight" has type i32`},
		{append([]string{"-m", b.wrongArch, "--text-only", "-p", "hi"}, cpu...), 2, `architecture "gemma"`},
		{with("-p", ""), 2, "prompt is empty"},
		{with("--raw", "-p", "<image><image>", "--image", b.hugeImage), 2, "2 <image> markers but 1 image was given"},
		{with("-p", "hi", "--image", b.hugeImage), 2, "image too large"},
		{with("-p", "hi", "--image", b.zeroImage), 2, "image is empty"},
		{with("-f", b.nonUTF8), 2, "not valid UTF-8"},
		{with("-p", strings.Repeat("word ", 300), "-c", "64"), 2, "does not fit the context size 64"},
		{append([]string{"-m", b.hugeContext, "--text-only", "-p", "hi", "-c", "1073741824"}, cpu...), 1, "MiB of memory are available"},
		{with("-p", "hi", "-t", "100000"), 2, "--threads 100000"},
		{with("-p", "hi", "-n", "-5"), 2, "--max-tokens -5"},
		{with("-p", "hi", "--device", "tpu"), 2, `--device "tpu"`},
		{with("-p", "hi", "-n", "1", "--dump", filepath.Join(b.notWritable, "d")), 1, "a-file"},
		{with("-p", "hi", "-n", "1", "--dump-tensors", "dec.*"), 2, "a dump folder is needed"},
		{with("-p", "hi", "-n", "1", "--dump", filepath.Join(b.dir, "dump-bad"), "--dump-tensors", "dec.blk.["), 2, "syntax error"},
		{with("-p", "hi", "-n", "1", "--dump", filepath.Join(b.dir, "dump-none"), "--dump-tensors", "vis.*"), 2, "matches no intermediate"},
	}
	bin := buildBinary(t)
	for _, tc := range tests {
		var stdout, stderr strings.Builder
		cmd := exec.Command(bin, tc.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		errs := stderr.String()
		noPanic(t, errs)
		lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
		if code != tc.code || len(lines) != 1 || !strings.Contains(errs, tc.want) || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and one line naming %q", tc.args, code, stdout.String(), errs, tc.code, tc.want)
		}
	}
}

// failingWriter accepts n bytes, then fails as a full disk does.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	k := w.n
	w.n = 0
	return k, errors.New("no space left on device")
}

// TestWriteErrors: a failing standard output (a full disk under a redirect) stops the command with exit 1 and one
// line saying what could not be written.
func TestWriteErrors(t *testing.T) {
	model, mm := pair(t, "p1")
	base := append([]string{"-m", model, "--mmproj", mm}, cpu...)
	var in strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&in, `{"id":%d,"prompt":"hi","max_tokens":4}`+"\n", i)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"streamed answer", append(base, "-p", "Tell me a story", "-n", "200"), "", "writing the answer to standard output: no space left on device"},
		{"--json answer", append(base, "-p", "Tell me a story", "-n", "200", "--json"), "", "writing the answer to standard output: no space left on device"},
		{"batch results", append([]string{"batch"}, base...), in.String(), "batch: writing results: no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			code := run(context.Background(), tc.args, strings.NewReader(tc.stdin), &failingWriter{n: 20}, &stderr)
			errs := stderr.String()
			noPanic(t, errs)
			if code != exitRuntime || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and one line naming %q", code, errs, tc.want)
			}
		})
	}
}
