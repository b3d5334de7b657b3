package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/gguf"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/internal/npy"
	"github.com/idefics2-go/idefics2/processor"
	"github.com/idefics2-go/idefics2/runner"
)

// cmdInspect prints a GGUF file's metadata and tensors.
func cmdInspect(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("inspect", "idefics2-run inspect [--all] [--no-tensors] FILE.gguf",
		"idefics2-run inspect [--base MODEL.gguf] ADAPTER.gguf")
	fs.Describe("Prints a GGUF file's metadata and tensors. For a LoRA adapter (convert --lora-only) it first lists the\n" +
		"weights the adapter changes with their rank, and with --base checks it against that model or mmproj file.")
	var all, noTensors bool
	var base string
	fs.Bool(&all, "all", "print every array element")
	fs.Bool(&noTensors, "no-tensors", "omit the tensor table")
	fs.String(&base, "base", "with an adapter: check it against this model (or mmproj) `FILE`")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if len(fs.Args()) != 1 {
		return fail(stderr, cli.Usagef("inspect: want one GGUF file, got %d arguments", len(fs.Args())))
	}
	f, err := openGGUF(fs.Args()[0], "inspect")
	if err != nil {
		return fail(stderr, err)
	}
	defer f.Close()
	if t, _ := f.Metadata.String("general.type"); t == "adapter" {
		if err := inspectAdapter(stdout, f, base); err != nil {
			return fail(stderr, err)
		}
	} else if base != "" {
		return fail(stderr, cli.Usagef("inspect: --base applies to adapters, and %s is not one (general.type %q)", f.Path, t))
	}
	opts := gguf.DumpOptions{NoTensors: noTensors}
	if all {
		opts.MaxArray = -1
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	if err := gguf.Dump(w, f, opts); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// inspectAdapter prints an adapter's summary (architecture, alpha, the adapters it was made from, every weight it
// changes with its rank) and, with base, checks it against that file.
func inspectAdapter(w io.Writer, f *gguf.File, base string) error {
	info, err := runner.DescribeAdapter(f)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "LoRA adapter for %q: alpha %g, %d pairs\n", info.Architecture, info.Alpha, len(info.Pairs))
	if info.Alpha == 0 {
		fmt.Fprintln(w, "  (alpha 0: each lora_b carries its module's scale; a layer adds scale·B·(A·x))")
	}
	if names, err := f.Metadata.Strings("idefics2.adapters.names"); err == nil {
		sums, _ := f.Metadata.Strings("idefics2.adapters.sha256")
		ranks, _ := f.Metadata.Uint32s("idefics2.adapters.ranks")
		alphas, _ := f.Metadata.Float32s("idefics2.adapters.alphas")
		for i, n := range names {
			extra := ""
			if i < len(ranks) && i < len(alphas) {
				extra += fmt.Sprintf(" (r %d, lora_alpha %g)", ranks[i], alphas[i])
			}
			if i < len(sums) {
				extra += " sha256 " + sums[i]
			}
			fmt.Fprintf(w, "  from PEFT adapter %s%s\n", n, extra)
		}
	}
	for _, p := range info.Pairs {
		scale := info.Alpha / float32(p.Rank)
		if info.Alpha == 0 {
			scale = 1
		}
		fmt.Fprintf(w, "  %-40s rank %-4d [%d → %d]  scale %g\n", p.Weight, p.Rank, p.In, p.Out, scale)
	}
	if base != "" {
		bf, err := openGGUF(base, "inspect")
		if err != nil {
			return err
		}
		defer bf.Close()
		if err := runner.CheckAdapterBase(info, f.Path, bf); err != nil {
			return err
		}
		fmt.Fprintf(w, "fits %s\n", bf.Path)
	}
	fmt.Fprintln(w)
	return nil
}

// openGGUF opens a GGUF file, reporting a missing or malformed file as bad input.
func openGGUF(path, cmd string) (*gguf.File, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, cli.Usagef("%s: %v", cmd, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, cli.Usagef("%s: %v", cmd, err)
	}
	return f, nil
}

// loadTokenizer reads only the tokenizer of a text GGUF (no weights are loaded).
func loadTokenizer(path, cmd string) (*processor.Tokenizer, error) {
	if path == "" {
		return nil, cli.Usagef("%s: no model: pass -m model.gguf", cmd)
	}
	f, err := openGGUF(path, cmd)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if a, _ := f.Metadata.String("general.architecture"); a == "clip" {
		return nil, cli.Usagef("%s: %s is an mmproj (vision) file; pass the text model with -m", cmd, path)
	}
	t, err := runner.NewTokenizer(f)
	if err != nil {
		return nil, cli.Usagef("%s: %v", cmd, err)
	}
	return t, nil
}

// cmdTokenize prints the ids of TEXT as a JSON array; special tokens in the text are recognised as HF does.
func cmdTokenize(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("tokenize", "idefics2-run tokenize -m model.gguf [--no-bos] [--pieces] TEXT",
		"idefics2-run tokenize -m model.gguf [--no-bos] [--pieces] --file FILE")
	fs.AllowDashArgs()
	var model, file string
	var noBOS, pieces bool
	fs.String(&model, "model,m", "text model GGUF `FILE`")
	fs.String(&file, "file,f", "read the text from this `FILE` (- for stdin is not supported; use the argument)")
	fs.Bool(&noBOS, "no-bos", "do not add BOS (add_special_tokens=False)")
	fs.Bool(&pieces, "pieces", "print [id, piece] pairs")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	text := strings.Join(fs.Args(), " ")
	if file != "" {
		if len(fs.Args()) > 0 {
			return fail(stderr, cli.Usagef("tokenize: give the text as an argument or with --file, not both"))
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fail(stderr, cli.Usagef("tokenize: --file: %v", err))
		}
		text = string(b)
	} else if len(fs.Args()) == 0 {
		return fail(stderr, cli.Usagef("tokenize: no TEXT given"))
	}
	tok, err := loadTokenizer(model, "tokenize")
	if err != nil {
		return fail(stderr, err)
	}
	ids, err := tok.Encode(text, !noBOS)
	if err != nil {
		return fail(stderr, cli.Usagef("tokenize: %v", err))
	}
	if ids == nil {
		ids = []int32{}
	}
	var b []byte
	if pieces {
		pairs := make([][2]any, len(ids))
		for i, id := range ids {
			pairs[i] = [2]any{id, tok.Piece(id)}
		}
		b, _ = json.Marshal(pairs)
	} else {
		b, _ = json.Marshal(ids)
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return exitOK
}

// cmdDetokenize prints the text of token ids given as arguments or as one JSON array.
func cmdDetokenize(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("detokenize", "idefics2-run detokenize -m model.gguf [--keep-special] ID...",
		"idefics2-run detokenize -m model.gguf [--keep-special] '[ID, ...]'")
	var model string
	var keepSpecial bool
	fs.String(&model, "model,m", "text model GGUF `FILE`")
	fs.Bool(&keepSpecial, "keep-special", "keep special tokens (<s>, <image>, …) in the text")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if len(fs.Args()) == 0 {
		return fail(stderr, cli.Usagef("detokenize: no token ids given"))
	}
	var ids []int32
	if joined := strings.TrimSpace(strings.Join(fs.Args(), " ")); strings.HasPrefix(joined, "[") {
		if err := json.Unmarshal([]byte(joined), &ids); err != nil {
			return fail(stderr, cli.Usagef("detokenize: %q is not a JSON array of token ids: %v", short(joined), err))
		}
	} else {
		for _, a := range fs.Args() {
			for _, f := range strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == ' ' }) {
				n, err := strconv.ParseInt(f, 10, 32)
				if err != nil {
					return fail(stderr, cli.Usagef("detokenize: %q is not a token id", f))
				}
				ids = append(ids, int32(n))
			}
		}
	}
	tok, err := loadTokenizer(model, "detokenize")
	if err != nil {
		return fail(stderr, err)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= tok.VocabSize() {
			return fail(stderr, cli.Usagef("detokenize: token id %d is outside the vocabulary (%d tokens)", id, tok.VocabSize()))
		}
	}
	fmt.Fprintln(stdout, tok.Decode(ids, !keepSpecial))
	return exitOK
}

func short(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// cmdPreprocess runs the image processor alone and writes its outputs as NumPy files, shaped as HF's
// Idefics2Processor returns them (batch of one).
func cmdPreprocess(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("preprocess", "idefics2-run preprocess (--mmproj FILE | --processor-config FILE) --image FILE... [--no-split] (--out DIR | --preview DIR)")
	fs.Describe("Writes pixel_values.npy and pixel_attention_mask.npy into DIR, shaped as Hugging Face's Idefics2Processor returns them;\n" +
		"with --preview, PNGs of what the vision tower sees (each (sub-)image with its padding and patch grid, as serve's page draws it).")
	var mmproj, cfgPath, out, pipeline string
	var images []string
	var noSplit bool
	var imf imageFlags
	var previewDir string
	patch := 0
	pipeline = "processor"
	fs.String(&mmproj, "mmproj", "take the settings from this mmproj GGUF `FILE`")
	fs.String(&cfgPath, "processor-config", "take the settings from this Hugging Face preprocessor_config.json `FILE`")
	fs.List(&images, "image", "image `FILE` (repeatable, in order)")
	fs.Bool(&noSplit, "no-split", "turn image splitting off")
	imf.register(fs)
	fs.String(&out, "out,o", "output folder `DIR`")
	fs.String(&previewDir, "preview", "write PNGs of what the model sees into this folder `DIR`")
	fs.Int(&patch, "patch-size", "patch size in pixels for --preview with --processor-config (default 14, Idefics2VisionConfig's; an mmproj gives its own)")
	fs.String(&pipeline, "pipeline", "decoding as Hugging Face's Idefics2Processor (processor: EXIF transpose, alpha dropped) or Idefics2ImageProcessor called directly (image-processor: alpha over white)")
	if code, done := parseOnlyFlags(fs, "preprocess", "", args, stdout, stderr); done {
		return code
	}
	if (mmproj == "") == (cfgPath == "") {
		return fail(stderr, cli.Usagef("preprocess: give exactly one of --mmproj and --processor-config"))
	}
	if len(images) == 0 {
		return fail(stderr, cli.Usagef("preprocess: no --image given"))
	}
	if out == "" && previewDir == "" {
		return fail(stderr, cli.Usagef("preprocess: no --out or --preview folder given"))
	}
	if fs.Set("patch-size") && (mmproj != "" || previewDir == "" || patch <= 0) {
		return fail(stderr, cli.Usagef("preprocess: --patch-size %d: give a positive size, only with --preview and --processor-config", patch))
	}
	set, err := imf.settings("preprocess", noSplit)
	if err != nil {
		return fail(stderr, err)
	}
	var dopts processor.DecodeOptions
	switch pipeline {
	case "processor":
		dopts.Pipeline = processor.ProcessorPipeline
	case "image-processor":
		dopts.Pipeline = processor.ImageProcessorPipeline
	default:
		return fail(stderr, cli.Usagef("preprocess: --pipeline %q: want processor or image-processor", pipeline))
	}
	var cfg processor.ImageConfig
	imageSize := 0
	if mmproj != "" {
		f, err := openGGUF(mmproj, "preprocess")
		if err != nil {
			return fail(stderr, err)
		}
		if a, _ := f.Metadata.String("general.architecture"); a != "clip" {
			f.Close()
			return fail(stderr, cli.Usagef("preprocess: %s is not an mmproj (vision) file (architecture %q)", mmproj, a))
		}
		cfg, err = runner.ImageConfigFromGGUF(f.Metadata, mmproj)
		if err == nil {
			patch, imageSize, err = visionSizes(f.Metadata, mmproj)
		}
		f.Close()
		if err != nil {
			return fail(stderr, cli.Usagef("preprocess: %v", err))
		}
	} else if cfg, err = processor.LoadImageConfig(cfgPath); err != nil {
		return fail(stderr, cli.Usagef("preprocess: %v", err))
	}
	if patch == 0 {
		patch = defaultPatchSize
	}
	if cfg, err = runner.ApplyImageSettings(cfg, set, patch, imageSize); err != nil {
		return fail(stderr, cli.Usagef("preprocess: %s", strings.TrimPrefix(err.Error(), "runner: ")))
	}
	if noSplit {
		cfg.DoImageSplitting = false
	}
	var decoded []*processor.RGBImage
	for _, p := range images {
		img, err := processor.LoadImageFile(p, dopts)
		if err != nil {
			return fail(stderr, cli.Usagef("preprocess: %v", err))
		}
		decoded = append(decoded, img)
	}
	if previewDir != "" {
		paths, err := writePreview(previewDir, cfg, decoded, patch)
		if err != nil {
			return fail(stderr, cli.Usagef("preprocess: %v", err))
		}
		noun := "images"
		if len(images) == 1 {
			noun = "image"
		}
		fmt.Fprintf(stdout, "%d %s → %d preview PNGs in %s\n", len(images), noun, len(paths), previewDir)
		if out == "" {
			return exitOK
		}
	}
	b, err := cfg.Preprocess(decoded)
	if err != nil {
		return fail(stderr, cli.Usagef("preprocess: %v", err))
	}
	_, statErr := os.Stat(out)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fail(stderr, fmt.Errorf("preprocess: %w", err))
	}
	// All or nothing: each file is written atomically, and a failure removes what this run wrote (and the folder
	// when it created it).
	valuesPath, maskPath := filepath.Join(out, "pixel_values.npy"), filepath.Join(out, "pixel_attention_mask.npy")
	undo := func() {
		os.Remove(valuesPath)
		os.Remove(maskPath)
		if os.IsNotExist(statErr) {
			os.Remove(out)
		}
	}
	mask := b.Mask
	if mask == nil {
		// do_pad off: HF returns no mask and the model treats every pixel as real.
		mask = make([]bool, b.N*b.H*b.W)
		for i := range mask {
			mask[i] = true
		}
	}
	if err := npy.WriteFloat32(valuesPath, []int{1, b.N, 3, b.H, b.W}, b.PixelValues); err != nil {
		undo()
		return fail(stderr, fmt.Errorf("preprocess: %w", err))
	}
	if err := npy.WriteBool(maskPath, []int{1, b.N, b.H, b.W}, mask); err != nil {
		undo()
		return fail(stderr, fmt.Errorf("preprocess: %w", err))
	}
	fmt.Fprintf(stdout, "%s → %s of %d×%d (padded) in %s\n", plural(len(images), "image"), plural(b.N, "(sub-)image"), b.W, b.H, out)
	return exitOK
}
