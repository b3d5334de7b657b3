package graph

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/ggml"
)

// availableMemory is what a new allocation on dev may use: on the CPU the kernel's MemAvailable (free memory plus
// reclaimable caches), elsewhere the device's own free-memory figure.
func availableMemory(dev ggml.Device) uint64 {
	if dev.Kind == ggml.DeviceCPU {
		if v, ok := memAvailable(); ok {
			return v
		}
	}
	free, _ := dev.Memory()
	return free
}

// memAvailable reads MemAvailable from /proc/meminfo (Linux).
func memAvailable() (uint64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "MemAvailable:") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return 0, false
		}
		kb, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return 0, false
		}
		return kb * 1024, true
	}
	return 0, false
}

// checkMemory refuses, with the numbers, an allocation of need bytes (what) that would not fit the device.
func checkMemory(dev ggml.Device, what string, need uint64) error {
	avail := availableMemory(dev)
	if avail == 0 || need <= avail {
		return nil
	}
	return fmt.Errorf("graph: %s needs %d MiB but only %d MiB of memory are available on %s; use a smaller context or image",
		what, need>>20, avail>>20, dev.Name)
}

// decodeScratchBytes estimates the compute buffer of a decoder graph over batch tokens with nKV cached positions:
// the logits, the MLP activations, the attention scores and a few hidden-size temporaries, in F32.
func decodeScratchBytes(t TextOptions, batch, nKV int) uint64 {
	perToken := uint64(t.VocabSize) + 3*uint64(t.FFN) + 8*uint64(t.Hidden) + uint64(t.Heads)*uint64(nKV)
	return 4 * perToken * uint64(batch)
}

// imageScratchBytes estimates the compute buffer of encoding one image of n patches: the MLP activations of the
// vision tower and connector, hidden-size temporaries and two attention score chunks.
func imageScratchBytes(v VisionOptions, c ConnectorOptions, n int) uint64 {
	perPatch := 3*uint64(c.FFN) + 3*uint64(v.FFN) + 8*uint64(v.Hidden) + 4*uint64(c.TextHidden)
	return 4*perPatch*uint64(n) + 2*uint64(defaultScoreBytes)
}
