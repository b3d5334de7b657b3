//go:build integration

package synth

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWrite8B writes the idefics2-8b preset (16.8 GB of BF16 weights) into a new folder under
// $SYNTH_DIR (default: the system temporary folder), logs the write throughput, checks the
// folder holds every tensor, and removes it. Run it by hand to measure the writer; see
// BENCHMARKS.md "synthetic checkpoints".
func TestWrite8B(t *testing.T) {
	cfg, err := Preset("idefics2-8b")
	if err != nil {
		t.Fatal(err)
	}
	root := os.Getenv("SYNTH_DIR")
	if root == "" {
		root = os.TempDir()
	}
	dir := filepath.Join(root, "synth-idefics2-8b-test")
	defer os.RemoveAll(dir)
	start := time.Now()
	var written int64
	if err := WriteCheckpoint(context.Background(), dir, cfg, 1, func(n int64) { written += n }); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("wrote %d bytes of tensor data in %.1fs: %.1f MB/s", written, el.Seconds(), float64(written)/el.Seconds()/1e6)
	var onDisk int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		onDisk += info.Size()
	}
	if onDisk < cfg.DataBytes() {
		t.Errorf("%d bytes on disk, less than the %d bytes of tensor data", onDisk, cfg.DataBytes())
	}
}
