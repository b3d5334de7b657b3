package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/idefics2-go/idefics2/bench"
	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// mixedResult is the mixed test: streams generating while an image of side×side pixels is encoded for a newcomer.
type mixedResult struct {
	Test          string  `json:"test"`
	Streams       int     `json:"streams"`
	Side          int     `json:"image_side"`
	NThreads      int     `json:"n_threads"`
	StreamTPS     float64 `json:"stream_tps_solo"`   // aggregate rate of the streams alone
	DuringTPS     float64 `json:"stream_tps_encode"` // their aggregate rate while the image is encoded
	StreamRatio   float64 `json:"stream_ratio"`      // DuringTPS / StreamTPS (target ≥ 1/3)
	EncodeS       float64 `json:"encode_s_solo"`     // the image alone
	EncodeDuringS float64 `json:"encode_s_streams"`  // beside the streams
	EncodeRatio   float64 `json:"encode_ratio"`      // EncodeDuringS / EncodeS (target ≤ 1.5)
}

// mixedStreams is the number of streams of the mixed test (the two).
const mixedStreams = 2

// mixedWindow is how long the mixed test measures the streams alone before the image arrives (tests shorten it).
var mixedWindow = 15 * time.Second

// runBatchedBench runs `bench --parallel` (and --mixed) for each thread count: the batched table with
// llama-batched-bench's fields, and the mixed image test through the scheduler.
func runBatchedBench(ctx context.Context, a benchArgs, stdout, stderr io.Writer) int {
	mm := a.mmproj
	if a.mixed > 0 && mm == "" {
		if mm = runner.FindMMProj(a.model); mm == "" {
			return fail(stderr, cli.Usagef("bench: --mixed needs --mmproj (none found next to %s)", a.model))
		}
	}
	if a.mixed == 0 {
		mm = ""
	}
	var all []any
	for i, t := range a.threads {
		m, err := runner.Load(ctx, runner.Options{ModelPath: a.model, MMProjPath: mm, TextOnly: mm == "", Device: a.load.Device,
			Threads: t, Attention: attnOf(a.load.FlashAttn)})
		if err != nil {
			return fail(stderr, cli.Usagef("bench: %v", err))
		}
		if i == 0 && !a.json {
			bench.WriteBatchedHeader(stdout)
		}
		cfg := bench.BatchedConfig{PP: a.pp[0], TG: a.tg[0], PL: a.parallel, Threads: t}
		err = bench.RunBatched(ctx, m.Graph(), cfg, func(r bench.BatchedResult) {
			all = append(all, r)
			if !a.json {
				bench.WriteBatchedRow(stdout, r)
			}
		})
		if err == nil && a.mixed > 0 {
			var r mixedResult
			r, err = mixedTest(ctx, m, a.mixed, t)
			if err == nil {
				all = append(all, r)
				if !a.json {
					fmt.Fprintf(stdout, "\nmixed (%d threads): %d streams alone %.2f t/s, during a %d×%d encode %.2f t/s (%.2f×); "+
						"encode alone %.1f s, beside the streams %.1f s (%.2f×)\n", t, r.Streams, r.StreamTPS, r.Side, r.Side,
						r.DuringTPS, r.StreamRatio, r.EncodeS, r.EncodeDuringS, r.EncodeRatio)
				}
			}
		}
		m.Close()
		if err != nil {
			return failCtx(ctx, stderr, err)
		}
	}
	if a.json {
		return writeBenchJSON(stdout, stderr, all)
	}
	return exitOK
}

func attnOf(flash bool) runner.AttnKernel {
	if flash {
		return runner.AttnFlash
	}
	return runner.AttnAuto
}

// mixedTest measures, on one scheduler with no cache memory: the aggregate token rate of mixedStreams greedy
// streams alone (over mixedWindow after they start), their rate while a side×side image (random pixels, one
// sub-image) is encoded for a newcomer, the encode time beside them, and afterwards the same encode alone.
func mixedTest(ctx context.Context, m *runner.Model, side, threads int) (mixedResult, error) {
	r := mixedResult{Test: "mixed", Streams: mixedStreams, Side: side, NThreads: threads}
	ctxSize := min(4096, m.ContextLength())
	sched, err := m.NewScheduler(runner.SchedulerOptions{Parallel: mixedStreams + 1, CtxSize: ctxSize, CacheMem: 1})
	if err != nil {
		return r, err
	}
	defer sched.Close()
	text, err := m.RawPrompt(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 4), nil, runner.PromptOptions{})
	if err != nil {
		return r, err
	}
	imgPrompt := func(seed uint64) (*runner.Prompt, error) {
		img, err := randomPNG(side, seed)
		if err != nil {
			return nil, err
		}
		return m.RawPrompt("<image>What is in the picture?", []runner.Image{{Name: "mixed.png", Data: img}}, runner.PromptOptions{NoSplit: true})
	}
	var mu sync.Mutex
	var stamps []time.Time
	var streamErr error
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < mixedStreams; i++ {
		wg.Add(1)
		// A stream that ends (a stop token, or its context full) starts over at once, so that it keeps generating.
		go func() {
			defer wg.Done()
			for sctx.Err() == nil {
				if _, err := sched.Generate(sctx, text, runner.GenerateOptions{MaxTokens: ctxSize - len(text.Tokens) - 1,
					OnToken: func(int32) error {
						mu.Lock()
						stamps = append(stamps, time.Now())
						mu.Unlock()
						return nil
					}}); err != nil && sctx.Err() == nil {
					mu.Lock()
					streamErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	count := func(from, to time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, t := range stamps {
			if !t.Before(from) && t.Before(to) {
				n++
			}
		}
		return n
	}
	// Warm up: every stream past its prompt.
	for {
		mu.Lock()
		n, serr := len(stamps), streamErr
		mu.Unlock()
		if serr != nil {
			return r, serr
		}
		if n >= 4*mixedStreams {
			break
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	w0 := time.Now()
	select {
	case <-time.After(mixedWindow):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.StreamTPS = float64(count(w0, time.Now())) / time.Since(w0).Seconds()
	p, err := imgPrompt(1)
	if err != nil {
		return r, err
	}
	e0 := time.Now()
	res, err := sched.Generate(ctx, p, runner.GenerateOptions{MaxTokens: 0})
	if err != nil {
		return r, err
	}
	r.EncodeDuringS = res.Timings.ImageEncodeMS / 1000
	e1 := e0.Add(time.Duration(res.Timings.ImageEncodeMS * float64(time.Millisecond)))
	r.DuringTPS = float64(count(e0, e1)) / e1.Sub(e0).Seconds()
	stop()
	wg.Wait()
	p, err = imgPrompt(2)
	if err != nil {
		return r, err
	}
	res, err = sched.Generate(ctx, p, runner.GenerateOptions{MaxTokens: 0})
	if err != nil {
		return r, err
	}
	r.EncodeS = res.Timings.ImageEncodeMS / 1000
	if r.StreamTPS > 0 {
		r.StreamRatio = r.DuringTPS / r.StreamTPS
	}
	if r.EncodeS > 0 {
		r.EncodeRatio = r.EncodeDuringS / r.EncodeS
	}
	return r, nil
}

// randomPNG encodes a side×side image of random pixels.
func randomPNG(side int, seed uint64) ([]byte, error) {
	rng := rand.New(rand.NewPCG(seed, 9))
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			v := rng.Uint32()
			img.SetRGBA(x, y, color.RGBA{uint8(v), uint8(v >> 8), uint8(v >> 16), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
