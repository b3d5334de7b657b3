package bench

import (
	"reflect"
	"testing"

	"github.com/idefics2-go/idefics2/graph"
)

// TestGraphOptions checks that every load option of a benchmark reaches the graph's options.
func TestGraphOptions(t *testing.T) {
	cases := []struct {
		name string
		in   LoadOptions
		want graph.Options
	}{
		{"defaults", LoadOptions{}, graph.Options{}},
		{"device and threads", LoadOptions{Device: "cpu", Threads: 3}, graph.Options{Device: "cpu", Threads: 3}},
		{"no repack", LoadOptions{NoRepack: true, GGMLRepack: true}, graph.Options{Layouts: graph.LayoutsFile}},
		{"ggml repack", LoadOptions{GGMLRepack: true}, graph.Options{Layouts: graph.LayoutsGGML}},
		{"unfused", LoadOptions{UnfusedAttn: true}, graph.Options{TextAttn: graph.AttnGGML, VisionAttn: graph.AttnGGML}},
		{"flash", LoadOptions{FlashAttn: true}, graph.Options{TextAttn: graph.AttnFlash}},
		{"flash and unfused", LoadOptions{FlashAttn: true, UnfusedAttn: true}, graph.Options{TextAttn: graph.AttnFlash, VisionAttn: graph.AttnGGML}},
		{"adapters", LoadOptions{Adapters: []graph.Adapter{{Path: "a.gguf", MMProjPath: "mmproj-a.gguf", Scale: 0.5}}},
			graph.Options{Adapters: []graph.Adapter{{Path: "a.gguf", MMProjPath: "mmproj-a.gguf", Scale: 0.5}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.in.graphOptions(); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
