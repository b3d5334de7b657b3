package ggml

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// vulkanMulMatRepeats is how many times TestMulMatVulkanColumnTiles computes each case, each time as a new graph on
// the same backend. With llvmpipe's worker threads (LLVMpipeThreadsEnv unset), Mesa 22.3.6's lavapipe got at least one 32-column tile wrong in about
// half of the graphs of the 64-column case, so 8 graphs miss the fault with a probability of about 0.4%.
const vulkanMulMatRepeats = 8

// TestMulMatVulkanColumnTiles checks ggml-vulkan's tiled F32 matrix product (mul_mm) where the product spans more than
// one 32-column tile: a chain of layers h = W·h + h with W [16, 16] in the device's memory and h [16, n]. The weights
// live in a device buffer so that the scheduler runs the products on the device (with every operand a graph input it
// keeps small products on the CPU). On Mesa's lavapipe with llvmpipe running workgroups on several threads, a whole
// tile of 32 columns (columns 32–63 of n = 64, column 32 of n = 33) came back wrong in some graphs and the process
// heap was sometimes corrupted; with one tile (n = 32), or without worker threads, the results were right every time.
// The library runs llvmpipe without worker threads (offersLLVMpipe); this test fails, intermittently, when
// LLVMpipeThreadsEnv is set to more than 0 before the library loads. Skipped where no Vulkan device is registered.
func TestMulMatVulkanColumnTiles(t *testing.T) {
	var devs []Device
	for _, d := range testDevices(t) {
		if d.Backend == "Vulkan" {
			devs = append(devs, d)
		}
	}
	if len(devs) == 0 {
		t.Skip("no Vulkan device registered (make vulkan, and IDEFICS2_LIB_DIR=bin/lib)")
	}
	const k, layers = 16, 4
	tests := []struct {
		name string
		n    int
	}{
		{"one tile", 32},
		{"one column past a tile", 33},
		{"two tiles", 64},
	}
	for _, dev := range devs {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/%s", testName(dev), tc.name), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(tc.n), 11))
				ws := make([][]float32, layers)
				for i := range ws {
					// Small weights keep the chain's values of order one.
					ws[i] = randF32(r, k*k)
					for j := range ws[i] {
						ws[i][j] *= 0.1
					}
				}
				x := randF32(r, k*tc.n)
				want := refLayerChain(ws, x, k, tc.n)
				runner, err := NewRunner(dev, 2, 256)
				if err != nil {
					t.Fatal(err)
				}
				defer runner.Close()
				wctx := NewContext(layers, 0)
				defer wctx.Close()
				var w []Tensor
				for i := 0; i < layers; i++ {
					w = append(w, wctx.NewTensor(TypeF32, k, k).SetName(fmt.Sprintf("w%d", i)))
				}
				buf, err := AllocTensors(wctx, runner.Main.DefaultBufferType())
				if err != nil {
					t.Fatal(err)
				}
				defer buf.Close()
				buf.SetWeightsUsage()
				for i := range w {
					if err := w[i].SetFloat32(ws[i]); err != nil {
						t.Fatal(err)
					}
				}
				for rep := 0; rep < vulkanMulMatRepeats; rep++ {
					got := runLayerChain(t, runner, w, x, k, tc.n)
					compare(t, fmt.Sprintf("graph %d", rep), got, want, tolF16)
				}
			})
		}
	}
}

// runLayerChain builds and computes h = W_i·h + h over the weights w, from h = x [k, n], as one new graph on runner.
func runLayerChain(t *testing.T, runner *Runner, w []Tensor, x []float32, k, n int) []float32 {
	t.Helper()
	ctx := NewContext(4*len(w)+4, 256)
	defer ctx.Close()
	var in, h Tensor
	if err := Catch(func() {
		in = ctx.NewTensor(TypeF32, k, n).SetName("x").SetInput()
		h = in
		for i := range w {
			h = w[i].MulMat(ctx, h).Add(ctx, h)
		}
		h.SetOutput()
	}); err != nil {
		t.Fatal(err)
	}
	g := ctx.NewGraph(256)
	g.Build(h)
	var out []float32
	err := runner.Run(g, func() error { return in.SetFloat32(x) }, func() error {
		var err error
		out, err = h.Float32s()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// refLayerChain is runLayerChain in float64: ggml's mul_mat(W [k, k], h [k, n]) is out[c][r] = Σ_j W[r][j]·h[c][j].
func refLayerChain(ws [][]float32, x []float32, k, n int) []float64 {
	h := make([]float64, len(x))
	for i, v := range x {
		h[i] = float64(v)
	}
	next := make([]float64, len(h))
	for _, w := range ws {
		for c := 0; c < n; c++ {
			for r := 0; r < k; r++ {
				s := 0.0
				for j := 0; j < k; j++ {
					s += float64(w[r*k+j]) * h[c*k+j]
				}
				next[c*k+r] = s + h[c*k+r]
			}
		}
		h, next = next, h
	}
	return h
}
