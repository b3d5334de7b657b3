package graph

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// TestPositionBucketsMatchHF pins the bucket rule to the table recorded from transformers' own module for
// S = 70 (n = 1..70) and for the tiny fixture configurations.
func TestPositionBucketsMatchHF(t *testing.T) {
	raw, err := os.ReadFile("../testdata/hf/position_ids.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Side    int              `json:"num_patches_per_side"`
		Buckets map[string][]int `json:"buckets"`
		Tiny    map[string]struct {
			Side    int              `json:"num_patches_per_side"`
			Buckets map[string][]int `json:"buckets"`
		} `json:"tiny_configs"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	tables := map[string]struct {
		side    int
		buckets map[string][]int
	}{"idefics2-8b": {doc.Side, doc.Buckets}}
	for name, c := range doc.Tiny {
		tables[name] = struct {
			side    int
			buckets map[string][]int
		}{c.Side, c.Buckets}
	}
	for name, tab := range tables {
		t.Run(name, func(t *testing.T) {
			if len(tab.buckets) == 0 {
				t.Fatal("empty table")
			}
			for ns, want := range tab.buckets {
				n, _ := strconv.Atoi(ns)
				got := PositionBuckets(n, tab.side)
				if len(got) != len(want) {
					t.Fatalf("n=%d: %d buckets, want %d", n, len(got), len(want))
				}
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("S=%d n=%d row %d: got %d want %d", tab.side, n, i, got[i], want[i])
					}
				}
			}
		})
	}
}
