package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// Progress modes (--progress).
const (
	progressAuto  = "auto"  // a bar on a terminal; plain lines for long steps otherwise
	progressBar   = "bar"   // a bar, terminal or not
	progressLines = "lines" // plain lines: the start, every tenth of the total and the end of each step
	progressOff   = "off"
)

// In auto mode off a terminal, a step writes lines only once it has run for progressQuiet (short steps stay silent,
// so that scripts on small inputs see nothing), then at most one per progressEvery, and always its last.
const (
	progressQuiet = 2 * time.Second
	progressEvery = time.Second
)

// checkProgressMode validates --progress.
func checkProgressMode(cmd, mode string) error {
	switch mode {
	case progressAuto, progressBar, progressLines, progressOff:
		return nil
	}
	return cli.Usagef("%s: --progress %q: want auto, bar, lines or off", cmd, mode)
}

// reporter shows the progress of long steps on stderr: as a bar, or as lines such as
// "idefics2-run: prefill: 512/2048 tokens (25%)".
type reporter struct {
	w        io.Writer
	bar      bool // draw bars
	lines    bool // write lines
	throttle bool // lines only for long steps, spaced out

	imgLayers int // layers per sub-image, once a report said it (onGenerate's own state)
	imgLast   int // the last layer count shown, which the report after a sub-image repeats

	mu      sync.Mutex
	step    string
	start   time.Time
	last    time.Time // the last line written (zero: none yet for this step)
	lastPct int       // the percentage of the last line written (-1: none yet)
	b       *progressbar.ProgressBar
	barDone bool
}

// newReporter resolves mode for stderr.
func newReporter(stderr io.Writer, mode string) *reporter {
	r := &reporter{w: stderr}
	switch mode {
	case progressBar:
		r.bar = true
	case progressLines:
		r.lines = true
	case progressAuto:
		if isTerminal(stderr) {
			r.bar = true
		} else {
			r.lines, r.throttle = true, true
		}
	}
	return r
}

// update reports done of total units of the named step ("prefill", 512, 2048, "token"); a new name starts a new
// step. total ≤ 0 is unknown.
func (r *reporter) update(name string, done, total int, unit string, extra string) {
	if r == nil || (!r.bar && !r.lines) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if name != r.step {
		r.finishBar()
		r.step, r.start, r.last, r.lastPct = name, now, time.Time{}, -1
	}
	final := total > 0 && done >= total
	if r.bar {
		if r.b == nil {
			max := total
			if max <= 0 {
				max = -1
			}
			r.b = progressbar.NewOptions(max, progressbar.OptionSetWriter(r.w), progressbar.OptionSetDescription(name),
				progressbar.OptionShowCount(), progressbar.OptionSetItsString(unit), progressbar.OptionShowIts(),
				progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish())
			r.barDone = false
		}
		_ = r.b.Set(done)
		if final {
			r.finishBar()
			r.step = ""
		}
		return
	}
	pct := -1
	if total > 0 {
		pct = 100 * min(done, total) / total
	}
	switch {
	case r.throttle:
		if now.Sub(r.start) < progressQuiet || (!final && !r.last.IsZero() && now.Sub(r.last) < progressEvery) {
			return
		}
	case pct >= 0 && !final && r.lastPct >= 0 && pct-r.lastPct < 10:
		return
	}
	r.last, r.lastPct = now, pct
	line := fmt.Sprintf("idefics2-run: %s: %d", name, done)
	if total > 0 {
		line += fmt.Sprintf("/%d %s (%d%%)", total, pluralWord(total, unit), pct)
	} else {
		line += " " + pluralWord(done, unit)
	}
	if extra != "" {
		line += ", " + extra
	}
	fmt.Fprintln(r.w, line)
	if final {
		r.step = ""
	}
}

// finishBar ends the current bar, if any (the caller holds mu).
func (r *reporter) finishBar() {
	if r.b != nil && !r.barDone {
		_ = r.b.Finish()
		r.barDone = true
	}
	r.b = nil
}

// done ends whatever step is showing.
func (r *reporter) done() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finishBar()
	r.step = ""
}

// generateHook is the runner.GenerateOptions.OnProgress that shows image encoding and prefill; nil when nothing
// is shown, so that the runner does not watch the vision tower's layers for nobody.
func (r *reporter) generateHook() func(runner.Progress) {
	if !r.bar && !r.lines {
		return nil
	}
	return r.onGenerate
}

// onGenerate shows image encoding in layers (those of the vision tower and the perceiver, over every sub-image)
// once the first layer report says how many a sub-image has, and in sub-images for features that came from the
// cache; and the prefill in tokens.
func (r *reporter) onGenerate(p runner.Progress) {
	switch p.Stage {
	case runner.ProgressImages:
		if p.Layers > 0 {
			r.imgLayers = p.Layers
		}
		switch {
		case r.imgLayers > 0:
			v := p.Done*r.imgLayers + p.Layer
			if v == r.imgLast {
				return
			}
			r.imgLast = v
			sub := fmt.Sprintf("sub-image %d/%d", min(p.Done+1, p.Total), p.Total)
			if p.Layer == 0 {
				sub = fmt.Sprintf("sub-image %d/%d", p.Done, p.Total) // features from the cache
			}
			r.update("image encoding", v, p.Total*r.imgLayers, "layer", sub)
		case p.Done == p.Total:
			r.update("image encoding", p.Done, p.Total, "sub-image", "")
		}
	case runner.ProgressPrefill:
		r.update("prefill", p.Done, p.Total, "token", "")
	}
}

// pluralWord is word, with an s for any n but 1.
func pluralWord(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// eta formats the time left for remaining units at the mean pace so far ("" until one unit is done and once none
// remains).
func eta(elapsed time.Duration, done, remaining int) string {
	if done <= 0 || remaining <= 0 {
		return ""
	}
	left := time.Duration(float64(elapsed) / float64(done) * float64(remaining))
	return "ETA " + left.Round(time.Second).String()
}

// batchProgress shows the lines a batch has answered, out of the total when standard input is a regular file (its
// request lines are counted first), with the time left at the mean pace so far.
type batchProgress struct {
	r     *reporter
	total int // request lines; 0: unknown (a pipe)
	start time.Time
	done  int
}

func newBatchProgress(stderr io.Writer, mode string, stdin io.Reader) *batchProgress {
	return &batchProgress{r: newReporter(stderr, mode), total: countRequestLines(stdin), start: time.Now()}
}

// lineDone reports one more request line answered.
func (b *batchProgress) lineDone() {
	b.done++
	extra := ""
	if b.total > 0 {
		extra = eta(time.Since(b.start), b.done, b.total-b.done)
	}
	b.r.update("batch", b.done, b.total, "line", extra)
}

func (b *batchProgress) finish() { b.r.done() }

// countRequestLines counts the non-blank lines from the current offset of stdin when it is a regular file, and
// seeks back; 0 for anything else (a pipe, a terminal) or on a read error.
func countRequestLines(stdin io.Reader) int {
	f, ok := stdin.(*os.File)
	if !ok {
		return 0
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0
	}
	defer f.Seek(off, io.SeekStart)
	n, blank := 0, true
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		for _, c := range buf[:k] {
			switch c {
			case '\n':
				if !blank {
					n++
				}
				blank = true
			case ' ', '\t', '\r':
			default:
				blank = false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0
		}
	}
	if !blank {
		n++
	}
	return n
}
