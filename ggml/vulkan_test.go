package ggml

import (
	"strconv"
	"strings"
	"testing"
)

func TestPlanVulkan(t *testing.T) {
	lavapipe := vkPhysical{Type: vkTypeCPU, Name: "llvmpipe (LLVM 15.0.6, 256 bits)"}
	igpu := vkPhysical{Type: 1, Name: "Intel(R) Graphics"}
	dgpu := vkPhysical{Type: 2, Name: "AMD Radeon RX 7600"}
	tests := []struct {
		name     string
		physical []vkPhysical
		env      string
		envSet   bool
		visible  []int  // nil: ggml-vulkan chooses
		cpuType  []bool // per ggml Vulkan device index
		llvmpipe bool   // a llvmpipe device is offered (LLVMpipeThreadsEnv is set to 1)
		wantErr  string
	}{
		{name: "no devices", physical: nil},
		{name: "software only", physical: []vkPhysical{lavapipe}, visible: []int{0}, cpuType: []bool{true}, llvmpipe: true},
		{name: "two software", physical: []vkPhysical{lavapipe, lavapipe}, visible: []int{0, 1}, cpuType: []bool{true, true}, llvmpipe: true},
		{name: "other software", physical: []vkPhysical{{Type: vkTypeCPU, Name: "SwiftShader Device (LLVM 10.0.0)"}}, visible: []int{0}, cpuType: []bool{true}},
		{name: "gpu and software: ggml chooses", physical: []vkPhysical{lavapipe, dgpu}, cpuType: []bool{false}},
		{name: "igpu: ggml chooses", physical: []vkPhysical{igpu}, cpuType: []bool{false}},
		{name: "user list kept", physical: []vkPhysical{dgpu, lavapipe}, env: "1,0", envSet: true, visible: []int{1, 0}, cpuType: []bool{true, false}, llvmpipe: true},
		{name: "user list with spaces", physical: []vkPhysical{dgpu, lavapipe}, env: "0 1", envSet: true, visible: []int{0, 1}, cpuType: []bool{false, true}, llvmpipe: true},
		{name: "user list without software", physical: []vkPhysical{dgpu, lavapipe}, env: "0", envSet: true, visible: []int{0}, cpuType: []bool{false}},
		{name: "user list out of range", physical: []vkPhysical{lavapipe}, env: "0,3", envSet: true, wantErr: `GGML_VK_VISIBLE_DEVICES="0,3": "3" is not the index of one of the 1 Vulkan devices`},
		{name: "user list not a number", physical: []vkPhysical{lavapipe}, env: "gpu", envSet: true, wantErr: `"gpu" is not the index`},
		{name: "user list negative", physical: []vkPhysical{lavapipe}, env: "-1", envSet: true, wantErr: `"-1" is not the index`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planVulkan(tc.physical, tc.env, tc.envSet)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.visible) != len(tc.visible) || (p.visible == nil) != (tc.visible == nil) {
				t.Fatalf("visible %v, want %v", p.visible, tc.visible)
			}
			for i := range tc.visible {
				if p.visible[i] != tc.visible[i] {
					t.Fatalf("visible %v, want %v", p.visible, tc.visible)
				}
			}
			for i, want := range tc.cpuType {
				if got := p.cpuType(i); got != want {
					t.Errorf("device %d: cpuType %v, want %v", i, got, want)
				}
			}
			if got := p.offersLLVMpipe(); got != tc.llvmpipe {
				t.Errorf("offersLLVMpipe %v, want %v", got, tc.llvmpipe)
			}
			if p.cpuType(len(tc.physical) + 5) {
				t.Error("an index past the devices is CPU-type")
			}
			if !tc.envSet && p.visible != nil && p.envValue() == "" {
				t.Error("a plan with visible devices sets no GGML_VK_VISIBLE_DEVICES")
			}
		})
	}
}

func TestDeviceRank(t *testing.T) {
	// Best first: GPU, integrated GPU, CPU variant, portable CPU, other kinds, CPU-type.
	order := []Device{
		{Name: "CUDA0", Kind: DeviceGPU},
		{Name: "Vulkan1", Kind: DeviceIGPU},
		{Name: "CPU", Kind: DeviceCPU, Variant: "haswell"},
		{Name: "CPU", Kind: DeviceCPU, Variant: "portable"},
		{Name: "NPU", Kind: DeviceAccel},
		{Name: "Vulkan0", Kind: DeviceCPUType},
	}
	for i := 1; i < len(order); i++ {
		if deviceRank(order[i-1]) >= deviceRank(order[i]) {
			t.Errorf("%s (%s) does not rank before %s (%s)", order[i-1].Name, order[i-1].Kind, order[i].Name, order[i].Kind)
		}
	}
}

func TestParseDeviceChoice(t *testing.T) {
	tests := []struct {
		in      string
		backend string
		index   int
		indexed bool
		err     bool
	}{
		{"vulkan", "vulkan", 0, false, false},
		{"vulkan:2", "vulkan", 2, true, false},
		{"cuda:0", "cuda", 0, true, false},
		{"Vulkan0", "Vulkan0", 0, false, false},
		{"vulkan:", "", 0, false, true},
		{":1", "", 0, false, true},
		{"vulkan:-1", "", 0, false, true},
		{"vulkan:1x", "", 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			b, i, ok, err := ParseDeviceChoice(tc.in)
			if (err != nil) != tc.err || b != tc.backend || i != tc.index || ok != tc.indexed {
				t.Errorf("ParseDeviceChoice(%q) = %q, %d, %v, %v; want %q, %d, %v, error %v", tc.in, b, i, ok, err, tc.backend, tc.index, tc.indexed, tc.err)
			}
		})
	}
}

func TestBackendFamily(t *testing.T) {
	tests := []struct {
		name   string
		family string
		ok     bool
	}{
		{"libggml-cpu-haswell.so", "cpu-haswell", true},
		{"libggml-vulkan.so", "vulkan", true},
		{"libggml-cuda.so", "cuda", true},
		{"libggml-base.so", "", false},
		{"libggml-base.so.0", "", false},
		{"libggml-.so", "", false},
		{"libvulkan.so.1", "", false},
		{"libggml-vulkan.so.txt", "", false},
	}
	if isDarwin {
		tests = append(tests, struct {
			name   string
			family string
			ok     bool
		}{"libggml-metal.dylib", "metal", true})
	}
	for _, tc := range tests {
		f, ok := backendFamily(tc.name)
		if f != tc.family || ok != tc.ok {
			t.Errorf("backendFamily(%q) = %q, %v; want %q, %v", tc.name, f, ok, tc.family, tc.ok)
		}
	}
}

// TestSelectDeviceRules checks the choices every host has: auto never takes a CPU-type device, cpu takes the
// best CPU backend, a backend with an index takes that device, and an absent choice lists what there is.
func TestSelectDeviceRules(t *testing.T) {
	devs := Devices()
	auto, err := SelectDevice("auto")
	if err != nil {
		t.Fatal(err)
	}
	if auto.Kind == DeviceCPUType {
		t.Errorf("auto chose the CPU-type device %s", auto.Name)
	}
	if auto.Name != devs[0].Name || auto.Index != devs[0].Index {
		t.Errorf("auto chose %s, the best device is %s", auto.Name, devs[0].Name)
	}
	cpu, err := SelectDevice("cpu")
	if err != nil || cpu.Kind != DeviceCPU {
		t.Fatalf("cpu: %+v, %v", cpu, err)
	}
	for _, d := range devs {
		if d.Kind == DeviceCPU {
			continue
		}
		got, err := SelectDevice(strings.ToLower(d.Backend) + ":" + strconv.Itoa(d.Index))
		if err != nil || got.Name != d.Name {
			t.Errorf("%s:%d chose %+v, %v; want %s", d.Backend, d.Index, got.Name, err, d.Name)
		}
	}
	for _, bad := range []string{"tpu", "vulkan:99", "cuda:x"} {
		if _, err := SelectDevice(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("SelectDevice(%q) = %v, want an error naming it", bad, err)
		}
	}
}

func TestMesaVersion(t *testing.T) {
	for _, c := range []struct {
		info      string
		major     int
		version   string
		supported bool
	}{
		{"Mesa 22.3.6", 22, "22.3.6", false},
		{"Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)", 25, "25.0.7", true},
		{"Mesa 24.2", 24, "24.2", false},
		{"Mesa 26.1.0-devel (git-1234)", 26, "26.1.0", true},
		{"535.54.03", 0, "", false},
		{"", 0, "", false},
	} {
		major, v := mesaVersion(c.info)
		if major != c.major || v != c.version || (major >= minLLVMpipeMesa) != c.supported {
			t.Errorf("mesaVersion(%q) = %d, %q; want %d, %q (supported %v)", c.info, major, v, c.major, c.version, c.supported)
		}
	}
}
