package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/idefics2-go/idefics2/convert"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/synth"
)

// syntheticFlags are --synthetic, --synthetic-dir and --synthetic-seed: convert a synthetic
// checkpoint (synth/) instead of --in.
type syntheticFlags struct {
	preset      string
	dir         string
	seed        uint64
	adapterRank int
}

// addSyntheticFlags registers the synthetic-checkpoint flags on fs.
func addSyntheticFlags(fs *cli.FlagSet) *syntheticFlags {
	s := &syntheticFlags{seed: 1}
	fs.String(&s.preset, "synthetic", "convert a synthetic checkpoint of `PRESET` ("+strings.Join(synth.PresetNames(), ", ")+
		") instead of --in: written to a temporary folder next to --out and removed afterwards")
	fs.String(&s.dir, "synthetic-dir", "with --synthetic: write the checkpoint to `DIR` (which must not exist) and keep it")
	fs.Uint64(&s.seed, "synthetic-seed", "with --synthetic: `SEED` of the random weights (same seed, same bytes)")
	fs.Int(&s.adapterRank, "synthetic-adapter", "with --synthetic: write a run-time LoRA adapter of `RANK` (alpha = RANK) on every linear layer of the preset's text model to --out instead of a model")
	return s
}

// enabled reports whether a synthetic flag was given (and --in is therefore not required).
func (s *syntheticFlags) enabled() bool { return s.preset != "" || s.dir != "" }

// usageError marks err as bad usage (exit status 2).
func usageError(format string, args ...any) error {
	return &convert.InputError{Err: fmt.Errorf(format, args...)}
}

// prepare writes the synthetic checkpoint and points opts.InDir at it. The returned cleanup,
// never nil, removes the temporary folder (not a --synthetic-dir folder); call it once the
// conversion is over, whatever its outcome. Bad flags and outputs that --force would be needed
// for are refused before anything is written, so that a mistake costs no 16 GB write.
func (s *syntheticFlags) prepare(ctx context.Context, opts *convert.Options, stderr io.Writer) (cleanup func(), err error) {
	cleanup = func() {}
	switch {
	case s.preset == "":
		return cleanup, usageError("convert: --synthetic-dir needs --synthetic PRESET")
	case opts.InDir != "":
		return cleanup, usageError("convert: --in and --synthetic exclude each other")
	}
	cfg, err := synth.Preset(s.preset)
	if err != nil {
		return cleanup, usageError("convert: --synthetic: %s", strings.TrimPrefix(err.Error(), "synth: "))
	}
	if err := checkOutputsEarly(opts); err != nil {
		return cleanup, err
	}

	dir := s.dir
	if dir == "" {
		// Next to the output, so that the checkpoint and the model land on one file system and
		// the temporary folder is found (and removable) where the user looks.
		tmp, err := os.MkdirTemp(filepath.Dir(opts.Out), ".convert-synthetic-")
		if err != nil {
			return cleanup, fmt.Errorf("convert: --synthetic: %w", err)
		}
		cleanup = func() { os.RemoveAll(tmp) }
		dir = filepath.Join(tmp, "checkpoint")
	} else if _, err := os.Lstat(s.dir); err == nil {
		return cleanup, usageError("convert: --synthetic-dir %s already exists (convert it with --in, or remove it)", s.dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return cleanup, fmt.Errorf("convert: --synthetic-dir: %w", err)
	}
	if err := checkFreeSpace(filepath.Dir(filepath.Clean(dir)), cfg.DataBytes()); err != nil {
		return cleanup, err
	}

	total := cfg.DataBytes()
	bar := newBar(total, stderr, "writing "+s.preset)
	start := time.Now()
	err = synth.WriteCheckpoint(ctx, dir, cfg, s.seed, func(n int64) { _ = bar.Add64(n) })
	if err != nil {
		_ = bar.Exit()
		if isTerminal(stderr) {
			fmt.Fprintln(stderr)
		}
		return cleanup, err
	}
	_ = bar.Finish()
	if isTerminal(stderr) {
		fmt.Fprintln(stderr)
	}
	fmt.Fprintf(stderr, "convert: wrote synthetic %s checkpoint (%d MiB) to %s in %.1fs\n",
		s.preset, total>>20, dir, time.Since(start).Seconds())
	opts.InDir = dir
	return cleanup, nil
}

// prepareAdapter writes a synthetic PEFT adapter folder (and its base's config files) for
// --synthetic-adapter and returns the folder; cleanup, never nil, removes a temporary folder.
func (s *syntheticFlags) prepareAdapter(opts *convert.Options) (adapterDir string, cleanup func(), err error) {
	cleanup = func() {}
	switch {
	case s.preset == "":
		return "", cleanup, usageError("convert: --synthetic-adapter needs --synthetic PRESET")
	case opts.InDir != "":
		return "", cleanup, usageError("convert: --in and --synthetic exclude each other")
	case s.adapterRank <= 0:
		return "", cleanup, usageError("convert: --synthetic-adapter %d: want a rank of 1 or more", s.adapterRank)
	}
	cfg, err := synth.Preset(s.preset)
	if err != nil {
		return "", cleanup, usageError("convert: --synthetic: %s", strings.TrimPrefix(err.Error(), "synth: "))
	}
	dir := s.dir
	if dir == "" {
		tmp, err := os.MkdirTemp(filepath.Dir(opts.Out), ".convert-synthetic-")
		if err != nil {
			return "", cleanup, fmt.Errorf("convert: --synthetic: %w", err)
		}
		cleanup = func() { os.RemoveAll(tmp) }
		dir = filepath.Join(tmp, fmt.Sprintf("synthetic-%s-lora-r%d", s.preset, s.adapterRank))
	} else if _, err := os.Lstat(s.dir); err == nil {
		return "", cleanup, usageError("convert: --synthetic-dir %s already exists (convert it with --in DIR/base --lora-only DIR, or remove it)", s.dir)
	}
	if err := synth.WriteAdapter(dir, cfg, s.adapterRank, float64(s.adapterRank), s.seed); err != nil {
		return "", cleanup, usageError("convert: --synthetic-adapter: %s", strings.TrimPrefix(err.Error(), "synth: "))
	}
	opts.InDir = filepath.Join(dir, "base")
	return dir, cleanup, nil
}

// checkOutputsEarly refuses, before the checkpoint is written, outputs that the converter would
// refuse after it: a missing output folder, or an existing output without --force.
func checkOutputsEarly(opts *convert.Options) error {
	mm := opts.MMProjOut
	if mm == "" {
		mm = convert.DefaultMMProjPath(opts.Out)
	}
	for _, path := range []string{opts.Out, mm} {
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return usageError("convert: %s: output folder %s does not exist", path, dir)
		}
		if _, err := os.Lstat(path); err == nil && !opts.Force {
			return &convert.InputError{Err: fmt.Errorf("%w: %s (use --force to replace it)", convert.ErrOutputExists, path)}
		}
	}
	return nil
}

// checkFreeSpace fails when the file system holding dir has less than need bytes available
// (plus 1% for the small files and the file system's own overhead). Where free space cannot be
// read it passes.
func checkFreeSpace(dir string, need int64) error {
	free, ok := freeBytes(dir)
	if !ok {
		return nil
	}
	need += need / 100
	if free < uint64(need) {
		return fmt.Errorf("convert: --synthetic: the checkpoint needs %d MiB but %s has %d MiB free", need>>20, dir, free>>20)
	}
	return nil
}

// newBar is the progress bar of a long step: shown on terminals only.
func newBar(total int64, stderr io.Writer, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetVisibility(isTerminal(stderr)),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
	)
}
