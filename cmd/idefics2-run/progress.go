package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// warmThreshold is the total size above which loading shows a progress bar: smaller files load in well under a
// second.
const warmThreshold = 256 << 20

// warmFiles reads the model files once while showing the progress (mode: --progress), so that the (memory-mapped)
// load that follows finds them in the page cache; reading them is what dominates loading big files from disk.
func warmFiles(stderr io.Writer, mode string, paths ...string) {
	r := newReporter(stderr, mode)
	if !r.bar && !r.lines {
		return
	}
	var total int64
	var files []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			total += st.Size()
			files = append(files, p)
		}
	}
	if total < warmThreshold {
		return
	}
	if !r.bar {
		warmLines(r, files, total)
		return
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("loading"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	buf := make([]byte, 4<<20)
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		_, _ = io.CopyBuffer(io.Discard, io.TeeReader(f, barWriter{bar}), buf)
		f.Close()
	}
	_ = bar.Finish()
}

// warmLines is warmFiles writing lines: MiB read of the total.
func warmLines(r *reporter, files []string, total int64) {
	var read int64
	buf := make([]byte, 4<<20)
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		for {
			n, err := f.Read(buf)
			read += int64(n)
			r.update("loading", int(read>>20), int(total>>20), "MiB", "")
			if err != nil {
				break
			}
		}
		f.Close()
	}
	r.done()
}

type barWriter struct{ b *progressbar.ProgressBar }

func (w barWriter) Write(p []byte) (int, error) {
	_ = w.b.Add(len(p))
	return len(p), nil
}
