package runner

import (
	"strings"
	"testing"
)

func TestCheckDevice(t *testing.T) {
	tests := []struct {
		choice string
		want   string // substring of the error; "" for none
	}{
		{"", ""},
		{"auto", ""},
		{"CPU", ""},
		{" cuda ", ""}, // a kind: whether one is present is checked at load
		{"vulkan", ""},
		{"vulkan:1", ""},
		{"CUDA:0", ""},
		{"metal:0", ""},
		{"tpu", `runner: --device "tpu": want auto, cpu, cuda, metal, vulkan, a GPU kind with an index (vulkan:0) or a device name (CPU`},
		{"gpu7", `--device "gpu7"`},
		{"vulkan:-1", `device "vulkan:-1": want BACKEND:N`},
		{"vulkan:x", `device "vulkan:x": want BACKEND:N`},
		{"vulkan:", `device "vulkan:": want BACKEND:N`},
		{"cpu:0", `--device "cpu:0"`},
		{"auto:0", `--device "auto:0"`},
		{"tpu:0", `--device "tpu:0"`},
	}
	for _, tc := range tests {
		t.Run(tc.choice, func(t *testing.T) {
			err := CheckDevice(tc.choice)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckDevice(%q): %v", tc.choice, err)
				}
				return
			}
			if !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckDevice(%q) = %v, want an input error naming %q", tc.choice, err, tc.want)
			}
		})
	}
}

func TestHostSystem(t *testing.T) {
	s := HostSystem()
	if s.DefaultThreads < 1 || s.DefaultThreads != DefaultThreads() {
		t.Errorf("default threads %d, DefaultThreads() %d", s.DefaultThreads, DefaultThreads())
	}
	if s.CPUVariant == "" || s.CPU.Arch == "" || s.CPU.LogicalCores < 1 {
		t.Errorf("CPU %+v, variant %q", s.CPU, s.CPUVariant)
	}
	var cpu bool
	for _, d := range s.Devices {
		cpu = cpu || d.Kind == "cpu"
	}
	if !cpu {
		t.Fatalf("no CPU device among %+v", s.Devices)
	}
	d, err := SelectDevice("cpu")
	if err != nil || d.Kind != "cpu" {
		t.Errorf("SelectDevice(cpu) = %+v, %v", d, err)
	}
	if _, err := SelectDevice("tpu"); !IsInputError(err) || !strings.Contains(err.Error(), `"tpu"`) {
		t.Errorf("SelectDevice(tpu): %v, want an input error naming it", err)
	}
}
