package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/idefics2-go/idefics2/graph"
)

// BatchedResult is one level of the batched test, with llama-batched-bench's field names: pl sequences each get a
// prompt of pp tokens (t_pp), then generate tg tokens together (t_tg); n_kv = pl·(pp+tg) positions in the end.
type BatchedResult struct {
	PP       int     `json:"pp"`
	TG       int     `json:"tg"`
	PL       int     `json:"pl"`
	NKV      int     `json:"n_kv"`
	TPP      float64 `json:"t_pp"`     // seconds
	SpeedPP  float64 `json:"speed_pp"` // pl·pp / t_pp
	TTG      float64 `json:"t_tg"`     // seconds
	SpeedTG  float64 `json:"speed_tg"` // pl·tg / t_tg: aggregate generation rate
	T        float64 `json:"t"`
	Speed    float64 `json:"speed"` // n_kv / t
	NThreads int     `json:"n_threads"`
	NBatch   int     `json:"n_batch"`
}

// BatchedConfig selects the batched test: for every PL, PL sequences with PP-token prompts and TG generated
// tokens each.
type BatchedConfig struct {
	PP, TG  int
	PL      []int
	Threads int // as the model was loaded with (reported)
}

// RunBatched runs the batched test on m through graph.Batch, the engine of the scheduler. As llama-batched-bench
// does (prompts not shared), the prompt phase packs the sequences' prompts into steps of at most the batch size
// tokens (a prompt longer than that takes several), and the generation phase runs TG steps of one token per
// sequence; the tokens are random ids and nothing is sampled. It calls emit after each level.
func RunBatched(ctx context.Context, m *graph.Model, cfg BatchedConfig, emit func(BatchedResult)) error {
	if cfg.PP <= 0 || cfg.TG <= 0 || len(cfg.PL) == 0 {
		return errors.New("bench: the batched test needs a prompt size, a generation length and parallel levels")
	}
	rng := rand.New(rand.NewPCG(7, 3))
	token := func() int32 { return int32(rng.IntN(m.Text.VocabSize-3) + 3) }
	chunk := m.Options().BatchSize
	for _, pl := range cfg.PL {
		if err := ctx.Err(); err != nil {
			return err
		}
		if pl > m.MaxStepParts() {
			return fmt.Errorf("bench: %d parallel sequences: at most %d per step for this model", pl, m.MaxStepParts())
		}
		ctxSize := cfg.PP + cfg.TG
		if err := m.CheckBatchMemory(pl, ctxSize); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		seqs := make([]*graph.Sequence, 0, pl)
		closeAll := func() {
			for _, s := range seqs {
				s.Close()
			}
		}
		for i := 0; i < pl; i++ {
			s, err := m.NewSequence(ctxSize)
			if err != nil {
				closeAll()
				return fmt.Errorf("bench: %w", err)
			}
			seqs = append(seqs, s)
		}
		b := m.NewBatch()
		r, err := runLevel(ctx, b, seqs, cfg, chunk, token)
		b.Close()
		closeAll()
		if err != nil {
			return err
		}
		r.NThreads, r.NBatch = cfg.Threads, chunk
		emit(r)
	}
	return nil
}

// runLevel times one level's prompt and generation phases.
func runLevel(ctx context.Context, b *graph.Batch, seqs []*graph.Sequence, cfg BatchedConfig, chunk int, token func() int32) (BatchedResult, error) {
	pl := len(seqs)
	prompts := make([][]int32, pl)
	for i := range prompts {
		prompts[i] = make([]int32, cfg.PP)
		for j := range prompts[i] {
			prompts[i][j] = token()
		}
	}
	t0 := time.Now()
	// Pack (sequence, range) pieces into steps of at most chunk tokens, one piece per sequence per step.
	done := make([]int, pl)
	for {
		var parts []graph.StepPart
		room := chunk
		for i, s := range seqs {
			if done[i] == cfg.PP || room == 0 {
				continue
			}
			n := min(cfg.PP-done[i], room)
			parts = append(parts, graph.StepPart{Seq: s, Tokens: prompts[i][done[i] : done[i]+n], Logits: done[i]+n == cfg.PP})
			room -= n
		}
		if len(parts) == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return BatchedResult{}, err
		}
		if _, err := b.Step(parts); err != nil {
			return BatchedResult{}, fmt.Errorf("bench: prompt step: %w", err)
		}
		for i, s := range seqs {
			done[i] = s.Pos()
		}
	}
	tPP := time.Since(t0).Seconds()
	t1 := time.Now()
	parts := make([]graph.StepPart, pl)
	next := make([][]int32, pl)
	for i := range next {
		next[i] = []int32{token()}
	}
	for step := 0; step < cfg.TG; step++ {
		if err := ctx.Err(); err != nil {
			return BatchedResult{}, err
		}
		for i, s := range seqs {
			next[i][0] = token()
			parts[i] = graph.StepPart{Seq: s, Tokens: next[i], Logits: true}
		}
		if _, err := b.Step(parts); err != nil {
			return BatchedResult{}, fmt.Errorf("bench: generation step: %w", err)
		}
	}
	tTG := time.Since(t1).Seconds()
	r := BatchedResult{PP: cfg.PP, TG: cfg.TG, PL: pl, NKV: pl * (cfg.PP + cfg.TG), TPP: tPP, TTG: tTG, T: tPP + tTG}
	r.SpeedPP = float64(pl*cfg.PP) / tPP
	r.SpeedTG = float64(pl*cfg.TG) / tTG
	r.Speed = float64(r.NKV) / r.T
	return r, nil
}

// WriteBatchedHeader prints the table header of WriteBatchedRow (llama-batched-bench's columns).
func WriteBatchedHeader(w io.Writer) {
	fmt.Fprintln(w, "|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |")
	fmt.Fprintln(w, "|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|")
}

// WriteBatchedRow prints one level as a llama-batched-bench row.
func WriteBatchedRow(w io.Writer, r BatchedResult) {
	fmt.Fprintf(w, "| %5d | %6d | %4d | %6d | %8.3f | %8.2f | %8.3f | %8.2f | %8.3f | %8.2f |\n",
		r.PP, r.TG, r.PL, r.NKV, r.TPP, r.SpeedPP, r.TTG, r.SpeedTG, r.T, r.Speed)
}
