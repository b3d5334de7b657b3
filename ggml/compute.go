package ggml

import (
	"errors"
	"fmt"
)

// Runner bundles a backend (plus the CPU as fallback when the main backend is a GPU) and a scheduler: the simple
// way to compute one graph at a time.
type Runner struct {
	Main     *Backend
	CPU      *Backend // == Main when Main is a CPU backend
	Sched    *Scheduler
	owned    []*Backend
	nThreads int
}

// NewRunner opens a backend on dev (and a CPU backend beside it when dev is not a CPU) with threads CPU threads,
// and a scheduler for graphs of up to graphSize nodes.
func NewRunner(dev Device, threads, graphSize int) (*Runner, error) {
	main, err := NewBackend(dev)
	if err != nil {
		return nil, err
	}
	r := &Runner{Main: main, owned: []*Backend{main}, nThreads: threads}
	main.SetThreads(threads)
	backends := []*Backend{main}
	if dev.Kind == DeviceCPU {
		r.CPU = main
	} else {
		cpuDev, err := SelectDevice("cpu")
		if err != nil {
			r.Close()
			return nil, err
		}
		cpu, err := NewBackend(cpuDev)
		if err != nil {
			r.Close()
			return nil, err
		}
		cpu.SetThreads(threads)
		r.CPU = cpu
		r.owned = append(r.owned, cpu)
		backends = append(backends, cpu)
	}
	r.Sched, err = NewScheduler(backends, graphSize)
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// SetThreads changes the CPU thread count.
func (r *Runner) SetThreads(n int) {
	r.nThreads = n
	for _, b := range r.owned {
		b.SetThreads(n)
	}
}

// Close frees the scheduler and backends. Idempotent.
func (r *Runner) Close() {
	if r == nil {
		return
	}
	r.Sched.Close()
	for _, b := range r.owned {
		b.Close()
	}
	r.owned = nil
}

// Run allocates g, calls setInputs (to copy input data into the graph's input tensors), computes g, and calls
// readOutputs; the allocation is released afterwards.
func (r *Runner) Run(g *Graph, setInputs func() error, readOutputs func() error) error {
	if r == nil || r.Sched == nil || r.Sched.ptr == nil {
		return errors.New("ggml: runner is closed")
	}
	r.Sched.Reset()
	if err := r.Sched.Alloc(g); err != nil {
		return err
	}
	defer r.Sched.Reset()
	if setInputs != nil {
		if err := setInputs(); err != nil {
			return fmt.Errorf("ggml: setting inputs: %w", err)
		}
	}
	if err := r.Sched.Compute(g); err != nil {
		return err
	}
	if readOutputs != nil {
		return readOutputs()
	}
	return nil
}

// Threads is the CPU thread count.
func (r *Runner) Threads() int { return r.nThreads }
