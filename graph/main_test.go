package graph

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/idefics2-go/idefics2/ggml"
)

var tempRoot string

// mustTempDir is a folder shared by the whole test binary (t.TempDir would be removed after the first test).
func mustTempDir(t *testing.T) string {
	if tempRoot == "" {
		d, err := os.MkdirTemp("", "graph-test-")
		if err != nil {
			t.Fatal(err)
		}
		tempRoot = d
	}
	return tempRoot
}

func TestMain(m *testing.M) {
	if err := checkTestDevice(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if tempRoot != "" {
		os.RemoveAll(tempRoot)
	}
	os.Exit(code)
}

// checkTestDevice refuses a Vulkan test device on a lavapipe older than Mesa 25, which frees a block twice on its
// queue thread under ggml-vulkan and aborts the whole test binary in some runs (ggml.LLVMpipeMesa).
func checkTestDevice() error {
	if !strings.HasPrefix(testDevice(), "vulkan") {
		return nil
	}
	ggml.LoadBackends()
	if v, old := ggml.LLVMpipeMesa(); old {
		return fmt.Errorf("graph tests on %s: lavapipe of Mesa %s corrupts the heap under ggml-vulkan; install Mesa 25 or later (scripts/lavapipe.sh)", testDevice(), v)
	}
	return nil
}

// onLLVMpipe reports whether the parity tests run on a llvmpipe device (Mesa's lavapipe).
func onLLVMpipe(t *testing.T) bool {
	t.Helper()
	if testDevice() == "cpu" {
		return false
	}
	d, err := ggml.SelectDevice(testDevice())
	if err != nil {
		t.Fatal(err)
	}
	return strings.HasPrefix(d.Description, "llvmpipe")
}

// testBackend opens a backend on the tests' device, closed when t ends.
func testBackend(t *testing.T) *ggml.Backend {
	t.Helper()
	dev, err := SelectDeviceForTest()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ggml.NewBackend(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// SelectDeviceForTest is the CPU device the tests run on.
func SelectDeviceForTest() (ggml.Device, error) { return ggml.SelectDevice("cpu") }

// testDeviceEnv names the device the parity tests run on (as --device takes it); default cpu. On a machine with
// a GPU, IDEFICS2_TEST_DEVICE=cuda runs the HF parity cases on the CUDA backend; vulkan (vulkan:N) on Vulkan, also
// on a CPU-type device such as Mesa's lavapipe (make test-vulkan).
const testDeviceEnv = "IDEFICS2_TEST_DEVICE"

func testDevice() string {
	if d := os.Getenv(testDeviceEnv); d != "" {
		return d
	}
	return "cpu"
}

// tolExact is the F32 parity tolerance on the test device: tolF32Exact on the CPU. On CUDA, ggml runs F32
// matrix products through cuBLAS with TF32 tensor-core math (10-bit mantissa, like F16) and its own TF32/F16
// kernels; measured on an H200 that gives 1.1e-3 to 2.6e-3 on these cases, so the bound is tolFlash's 5e-3.
// ggml-vulkan's matrix-product shaders also round operands to F16 where the device has 16-bit arithmetic;
// measured on lavapipe (Mesa 22.3.6 and 25.0.7 alike): 3.8e-4 to 1.05e-3 on the four cases, inside the same bound.
func tolExact() float64 {
	if testDevice() == "cpu" {
		return tolF32Exact
	}
	return tolFlash
}
