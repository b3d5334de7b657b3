package ggml

// #include <stdlib.h>
// #include <dlfcn.h>
// #include <string.h>
// #include "ggml.h"
// #include "ggml-backend.h"
//
// typedef int (*idefics2_score_fn)(void);
// static int idefics2_lib_score(const char *path, char *err, size_t errlen) {
//     void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
//     if (!h) { const char *e = dlerror(); if (e) { strncpy(err, e, errlen - 1); err[errlen-1] = 0; } return -1; }
//     idefics2_score_fn f = (idefics2_score_fn) dlsym(h, "ggml_backend_score");
//     int s = f ? f() : 0;
//     dlclose(h);
//     return s;
// }
// extern void idefics2GGMLLog(int level, char *text, void *user);
// typedef void (*idefics2_log_set_fn)(ggml_log_callback, void *);
// // Route the log of the ggml-base copy that backend libraries link (libggml-base.so beside them) through ours.
// // The library is loaded here, before any backend library, and stays loaded (the handle is kept for the life
// // of the process): a backend library loaded later binds to this copy by its soname, so even the messages it
// // prints while it initializes (CUDA's device list) come through our callback.
// static int idefics2_route_lib_log(const char *path) {
//     void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
//     if (!h) return 0;
//     idefics2_log_set_fn f = (idefics2_log_set_fn) dlsym(h, "ggml_log_set");
//     if (f) f((ggml_log_callback) idefics2GGMLLog, NULL);
//     return f != NULL;
// }
// typedef struct ggml_backend_feature * (*idefics2_features_fn)(ggml_backend_reg_t);
// static struct ggml_backend_feature * idefics2_features(ggml_backend_reg_t reg) {
//     idefics2_features_fn f = (idefics2_features_fn) ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
//     return f ? f(reg) : NULL;
// }
// static struct ggml_backend_feature * idefics2_feature_at(struct ggml_backend_feature *f, int i) { return &f[i]; }
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// DeviceKind is ggml's device type.
type DeviceKind int

// Device kinds (enum ggml_backend_dev_type).
const (
	DeviceCPU   DeviceKind = C.GGML_BACKEND_DEVICE_TYPE_CPU
	DeviceGPU   DeviceKind = C.GGML_BACKEND_DEVICE_TYPE_GPU
	DeviceIGPU  DeviceKind = C.GGML_BACKEND_DEVICE_TYPE_IGPU
	DeviceAccel DeviceKind = C.GGML_BACKEND_DEVICE_TYPE_ACCEL
	// DeviceCPUType is a GPU API's device that computes on the host CPU (Vulkan's VK_PHYSICAL_DEVICE_TYPE_CPU:
	// Mesa's lavapipe, SwiftShader). ggml types it as a GPU; it is slower than the CPU backend, so "auto" never
	// chooses it, but it runs the GPU backend's kernels and serves to test them without a GPU.
	DeviceCPUType DeviceKind = 1000
)

func (k DeviceKind) String() string {
	switch k {
	case DeviceCPU:
		return "cpu"
	case DeviceGPU:
		return "gpu"
	case DeviceIGPU:
		return "igpu"
	case DeviceAccel:
		return "accel"
	case DeviceCPUType:
		return "cpu-type"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Device is one ggml compute device (a CPU backend variant, a CUDA GPU, a Metal device, ...).
type Device struct {
	ptr         C.ggml_backend_dev_t
	Name        string // ggml device name ("CPU", "CUDA0", "Metal", ...)
	Description string
	Backend     string // registry name ("CPU", "CUDA", "Metal", "Vulkan")
	// Index is the device's place among its backend's devices (the N of "Vulkan1", of --device vulkan:N).
	Index       int
	Kind        DeviceKind
	FreeMemory  uint64 // bytes
	TotalMemory uint64 // bytes
	// Variant names the CPU backend library in use ("icelake", "haswell", ... or "portable" for the CPU backend
	// compiled into the binary); empty for other devices.
	Variant string
	// Features are the backend's reported build features (e.g. AVX512=1), for CPU backends.
	Features map[string]string
}

// LoadReport says what LoadBackends found and chose.
type LoadReport struct {
	Dir        string
	CPUVariant string         // chosen CPU library variant ("" if none loaded)
	CPUScores  map[string]int // score of every CPU library found (0: this CPU cannot run it)
	Loaded     []string       // library files registered with ggml
	Problems   []string       // libraries that could not be scored or loaded
	Notes      []string       // decisions worth showing (a backend's devices offered or left out, and why)
	Capped     []string       // CPU variants left out because they are above IDEFICS2_MAX_ISA
}

var (
	loadOnce   sync.Once
	loadReport LoadReport
	dynamicCPU C.ggml_backend_reg_t
	// vulkanReg is the Vulkan backend's registry once loaded, and vulkan how its devices map to the Vulkan
	// loader's physical devices (which of them are CPU-type).
	vulkanReg C.ggml_backend_reg_t
	vulkan    vulkanPlan
)

// LibDirEnv is the environment variable naming the folder of ggml backend libraries (libggml-cpu-*.so, CUDA,
// Vulkan); by default the folder lib/ beside the executable is searched.
const LibDirEnv = "IDEFICS2_LIB_DIR"

// DefaultLibDir is $IDEFICS2_LIB_DIR, else <dir of the executable>/lib.
func DefaultLibDir() string {
	if d := os.Getenv(LibDirEnv); d != "" {
		return d
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Join(filepath.Dir(exe), "lib")
}

// backendFamily returns the part of a backend library's file name between "libggml-" and the extension ("cpu-haswell",
// "cuda", "vulkan", "metal"), and false for other files and for libggml-base. ggml's CMake names loadable backends
// .so on Linux and macOS alike (CMake MODULE libraries); .dylib is accepted on macOS too, .dll on Windows.
func backendFamily(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "libggml-")
	if !ok || strings.HasPrefix(rest, "base") {
		return "", false
	}
	exts := []string{".so"}
	switch {
	case isDarwin:
		exts = append(exts, ".dylib")
	case isWindows:
		exts = []string{".dll"}
	}
	for _, e := range exts {
		if f, ok := strings.CutSuffix(rest, e); ok && f != "" {
			return f, true
		}
	}
	return "", false
}

// LoadBackends registers the best CPU variant library and every GPU backend library found in DefaultLibDir().
// It runs once per process; later calls return the first report. CPU variants are scored by ggml's own
// ggml_backend_score (which checks this CPU's features), so a variant using instructions this CPU lacks is never
// loaded; without any library the CPU backend compiled into the binary (portable, no AVX) is used.
func LoadBackends() LoadReport {
	loadOnce.Do(func() { loadReport = loadFrom(DefaultLibDir()) })
	return loadReport
}

func loadFrom(dir string) LoadReport {
	rep := LoadReport{Dir: dir, CPUScores: map[string]int{}}
	if dir == "" {
		return rep
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			rep.Problems = append(rep.Problems, err.Error())
		}
		return rep
	}
	bestScore, best := 0, ""
	var others []string
	errbuf := (*C.char)(C.calloc(512, 1))
	defer C.free(unsafe.Pointer(errbuf))
	for _, e := range entries {
		name := e.Name()
		family, ok := backendFamily(name)
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if strings.HasPrefix(family, "cpu") {
			cp := C.CString(path)
			s := int(C.idefics2_lib_score(cp, errbuf, 512))
			C.free(unsafe.Pointer(cp))
			variant := strings.TrimPrefix(strings.TrimPrefix(family, "cpu"), "-")
			if variant == "" {
				variant = "default"
			}
			if !variantAllowed(variant) {
				rep.Capped = append(rep.Capped, variant)
				continue
			}
			if s < 0 {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s", name, C.GoString(errbuf)))
				continue
			}
			rep.CPUScores[variant] = s
			if s > bestScore {
				bestScore, best = s, path
			}
			continue
		}
		others = append(others, path)
	}
	sort.Strings(others)
	if best != "" || len(others) > 0 {
		routeLibLog(dir)
	}
	if best != "" {
		cp := C.CString(best)
		reg := C.ggml_backend_load(cp)
		C.free(unsafe.Pointer(cp))
		if reg == nil {
			rep.Problems = append(rep.Problems, "ggml could not load "+best)
		} else {
			dynamicCPU = reg
			rep.Loaded = append(rep.Loaded, best)
			family, _ := backendFamily(filepath.Base(best))
			rep.CPUVariant = strings.TrimPrefix(strings.TrimPrefix(family, "cpu"), "-")
		}
	}
	for _, p := range others {
		family, _ := backendFamily(filepath.Base(p))
		isVulkan := family == "vulkan"
		if isVulkan && !prepareVulkan(&rep) {
			continue
		}
		cp := C.CString(p)
		reg := C.ggml_backend_load(cp)
		C.free(unsafe.Pointer(cp))
		if reg == nil {
			rep.Problems = append(rep.Problems, "ggml could not load "+p)
			continue
		}
		if isVulkan {
			vulkanReg = reg
		}
		rep.Loaded = append(rep.Loaded, p)
	}
	return rep
}

// routeLibLog loads the backend libraries' own ggml-base from dir and sends its log to slog like ours. Only the
// first file found is loaded (libggml-base.so and its versioned names are one library).
func routeLibLog(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "libggml-base") {
			cp := C.CString(filepath.Join(dir, e.Name()))
			ok := C.idefics2_route_lib_log(cp) != 0
			C.free(unsafe.Pointer(cp))
			if ok {
				return
			}
		}
	}
}

func regFeatures(reg C.ggml_backend_reg_t) map[string]string {
	f := C.idefics2_features(reg)
	if f == nil {
		return nil
	}
	m := map[string]string{}
	for i := 0; i < 256; i++ {
		e := C.idefics2_feature_at(f, C.int(i))
		if e.name == nil {
			break
		}
		m[C.GoString(e.name)] = C.GoString(e.value)
	}
	return m
}

// Devices lists every registered device (after LoadBackends). When a CPU variant library is loaded, the portable
// CPU device compiled into the binary is listed after it.
func Devices() []Device {
	LoadBackends()
	n := int(C.ggml_backend_dev_count())
	var out []Device
	perReg := map[C.ggml_backend_reg_t]int{}
	for i := 0; i < n; i++ {
		d := C.ggml_backend_dev_get(C.size_t(i))
		reg := C.ggml_backend_dev_backend_reg(d)
		var free, total C.size_t
		C.ggml_backend_dev_memory(d, &free, &total)
		dev := Device{
			ptr:         d,
			Name:        C.GoString(C.ggml_backend_dev_name(d)),
			Description: C.GoString(C.ggml_backend_dev_description(d)),
			Backend:     C.GoString(C.ggml_backend_reg_name(reg)),
			Kind:        DeviceKind(C.ggml_backend_dev_type(d)),
			FreeMemory:  uint64(free),
			TotalMemory: uint64(total),
			Index:       perReg[reg],
		}
		perReg[reg]++
		if reg == vulkanReg && vulkan.cpuType(dev.Index) {
			dev.Kind = DeviceCPUType
		}
		if dev.Kind == DeviceCPU {
			dev.Features = regFeatures(reg)
			if reg == dynamicCPU {
				dev.Variant = loadReport.CPUVariant
			} else {
				dev.Variant = "portable"
			}
		}
		out = append(out, dev)
	}
	sort.SliceStable(out, func(i, j int) bool { return deviceRank(out[i]) < deviceRank(out[j]) })
	return out
}

// deviceRank orders devices best first: GPUs, integrated GPUs, the loaded CPU variant, the portable CPU backend,
// other kinds, and last CPU-type devices of GPU APIs (software implementations, slower than the CPU backend).
func deviceRank(d Device) int {
	switch {
	case d.Kind == DeviceGPU:
		return 0
	case d.Kind == DeviceIGPU:
		return 1
	case d.Kind == DeviceCPU && d.Variant != "portable":
		return 2
	case d.Kind == DeviceCPU:
		return 3
	case d.Kind == DeviceCPUType:
		return 5
	}
	return 4
}

// SelectDevice picks a device by the user's choice:
//   - "auto" or "": the best device (deviceRank): a GPU, then an integrated GPU, else the best CPU variant; never a
//     CPU-type device of a GPU API;
//   - "cpu": the best CPU backend;
//   - a backend name ("cuda", "metal", "vulkan", any registered backend): its best device;
//   - a backend name and an index ("vulkan:1", "cuda:0"): that device of the backend, in the backend's order;
//   - an exact device name ("CUDA1", "Vulkan0").
//
// An unavailable choice is an error listing what is available.
func SelectDevice(choice string) (Device, error) {
	if _, _, err := MaxISA(); err != nil {
		return Device{}, err
	}
	devs := Devices()
	if len(devs) == 0 {
		return Device{}, fmt.Errorf("ggml: no compute device is registered")
	}
	want := strings.ToLower(strings.TrimSpace(choice))
	backend, index, indexed, err := ParseDeviceChoice(want)
	if err != nil {
		return Device{}, err
	}
	for _, d := range devs {
		switch {
		case want == "" || want == "auto":
			if d.Kind != DeviceCPUType {
				return d, nil
			}
		case want == "cpu" && d.Kind == DeviceCPU,
			want == strings.ToLower(d.Name),
			backend == strings.ToLower(d.Backend) && d.Kind != DeviceCPU && (!indexed || d.Index == index):
			return d, nil
		}
	}
	var names []string
	for _, d := range devs {
		if d.Kind == DeviceCPU {
			names = append(names, fmt.Sprintf("cpu (%s %s)", d.Name, d.Variant))
			continue
		}
		names = append(names, fmt.Sprintf("%s:%d (%s, %s)", strings.ToLower(d.Backend), d.Index, d.Name, d.Kind))
	}
	return Device{}, fmt.Errorf("ggml: device %q is not available; available: %s", choice, strings.Join(names, ", "))
}

// ParseDeviceChoice splits a --device value of the form "backend:N" into the backend and N. Other values come back
// whole as the backend, with indexed false. An index that is not a non-negative integer is an error.
func ParseDeviceChoice(choice string) (backend string, index int, indexed bool, err error) {
	b, n, ok := strings.Cut(choice, ":")
	if !ok {
		return choice, 0, false, nil
	}
	i, perr := strconv.Atoi(n)
	if b == "" || perr != nil || i < 0 {
		return "", 0, false, fmt.Errorf("ggml: device %q: want BACKEND:N with N a device index (0, 1, …)", choice)
	}
	return b, i, true, nil
}

// Memory re-queries the device's free and total memory in bytes.
func (d Device) Memory() (free, total uint64) {
	if d.ptr == nil {
		return 0, 0
	}
	var f, t C.size_t
	C.ggml_backend_dev_memory(d.ptr, &f, &t)
	return uint64(f), uint64(t)
}
