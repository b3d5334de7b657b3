package ggml

// #include <stdlib.h>
// #include "vkprobe.h"
import "C"

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unsafe"
)

// VulkanDevicesEnv is ggml-vulkan's list of the Vulkan physical devices it offers (indices in the Vulkan loader's
// order, comma-separated). Unset, ggml-vulkan offers the discrete and integrated GPUs only.
const VulkanDevicesEnv = "GGML_VK_VISIBLE_DEVICES"

// LLVMpipeThreadsEnv is the number of worker threads Mesa's llvmpipe (the rasterizer under lavapipe, Mesa's software
// Vulkan) runs a compute dispatch's workgroups on (0: none, the dispatching thread runs them); llvmpipe reads it when
// a Vulkan instance lists its devices.
const LLVMpipeThreadsEnv = "LP_NUM_THREADS"

// vkTypeCPU is VK_PHYSICAL_DEVICE_TYPE_CPU (VkPhysicalDeviceType: 0 other, 1 integrated GPU, 2 discrete GPU,
// 3 virtual GPU, 4 CPU).
const vkTypeCPU = 4

// vkPhysical is one Vulkan physical device as the loader lists it.
type vkPhysical struct {
	Type int
	Name string
	// DriverInfo is VkPhysicalDeviceDriverProperties.driverInfo ("Mesa 25.0.7-2~bpo12+1" for Mesa's drivers; ""
	// below Vulkan 1.2).
	DriverInfo string
}

var mesaRelease = regexp.MustCompile(`\bMesa (\d+)\.(\d+)(?:\.(\d+))?`)

// mesaVersion reads the Mesa release from a driver's driverInfo; major is 0 when it names none.
func mesaVersion(info string) (major int, version string) {
	m := mesaRelease.FindStringSubmatch(info)
	if m == nil {
		return 0, ""
	}
	major, _ = strconv.Atoi(m[1])
	version = m[1] + "." + m[2]
	if m[3] != "" {
		version += "." + m[3]
	}
	return major, version
}

// minLLVMpipeMesa is the oldest Mesa release whose lavapipe runs ggml-vulkan's graphs without corrupting the heap:
// Mesa 22.3.6's frees a block twice on its queue thread after the vision graphs and a prompt with image rows (glibc
// aborts the process in about two of three runs of the parity tests; ggml-vulkan's large buffers, each placed
// against a guard page, were never written out of bounds); Mesa 25.0.7's ran them clean.
const minLLVMpipeMesa = 25

// vulkanPlan is how the Vulkan backend's devices map to the loader's physical devices.
type vulkanPlan struct {
	physical []vkPhysical
	// visible are the physical indices ggml-vulkan offers, in its device order (Vulkan0, Vulkan1, …); nil when
	// ggml-vulkan chooses (VulkanDevicesEnv unset and set by nobody), which never includes a CPU-type device.
	visible []int
	// note says what was decided, for the load report ("" when nothing needed saying).
	note string
}

// probeVulkan lists the physical devices through the system's Vulkan loader.
func probeVulkan() ([]vkPhysical, error) {
	const max = 64
	buf := (*C.idefics2_vk_device)(C.calloc(max, C.size_t(unsafe.Sizeof(C.idefics2_vk_device{}))))
	defer C.free(unsafe.Pointer(buf))
	n := int(C.idefics2_vk_probe(buf, max))
	switch n {
	case -1:
		return nil, fmt.Errorf("ggml: vulkan: no Vulkan loader (libvulkan.so.1) could be opened")
	case -2:
		return nil, fmt.Errorf("ggml: vulkan: the Vulkan loader could not create an instance")
	case -3:
		return nil, fmt.Errorf("ggml: vulkan: the Vulkan loader could not list its devices")
	}
	devs := unsafe.Slice(buf, max)
	out := make([]vkPhysical, 0, min(n, max))
	for i := 0; i < n && i < max; i++ {
		out = append(out, vkPhysical{Type: int(devs[i]._type), Name: C.GoString(&devs[i].name[0]), DriverInfo: C.GoString(&devs[i].driver_info[0])})
	}
	return out, nil
}

// planVulkan decides which Vulkan devices ggml-vulkan offers before its library is loaded (it reads
// VulkanDevicesEnv once, when it registers). A list the user set is kept. Otherwise, where the loader offers no
// GPU at all but CPU-type devices (a software implementation such as Mesa's lavapipe), those are made visible so
// that they can be listed and chosen explicitly (they are typed DeviceCPUType and never chosen by "auto"); where
// there are GPUs, ggml-vulkan's own choice stands (GPUs only, each once even when two drivers expose it).
func planVulkan(physical []vkPhysical, env string, envSet bool) (vulkanPlan, error) {
	p := vulkanPlan{physical: physical}
	if envSet {
		for _, f := range strings.FieldsFunc(env, func(r rune) bool { return r == ',' || r == ' ' }) {
			i, err := strconv.Atoi(f)
			if err != nil || i < 0 || i >= len(physical) {
				return p, fmt.Errorf("ggml: %s=%q: %q is not the index of one of the %d Vulkan devices", VulkanDevicesEnv, env, f, len(physical))
			}
			p.visible = append(p.visible, i)
		}
		return p, nil
	}
	var cpuType []int
	for i, d := range physical {
		if d.Type != vkTypeCPU {
			return p, nil
		}
		cpuType = append(cpuType, i)
	}
	if len(cpuType) == 0 {
		return p, nil
	}
	p.visible = cpuType
	p.note = fmt.Sprintf("vulkan: only CPU-type devices (%s): offered as CPU-type, never chosen by auto", physical[cpuType[0]].Name)
	return p, nil
}

// offersLLVMpipe reports whether ggml-vulkan will offer a llvmpipe device (Mesa's lavapipe, named "llvmpipe (LLVM
// …)"). With llvmpipe's worker threads, ggml-vulkan's tiled matrix products there (Mesa 22.3.6 and 25.0.7) returned
// whole 32-column tiles wrong in some graphs (TestMulMatVulkanColumnTiles); without them (LLVMpipeThreadsEnv=0) they
// were right every time.
func (p vulkanPlan) offersLLVMpipe() bool {
	_, ok := p.llvmpipe()
	return ok
}

// llvmpipe returns the first llvmpipe device ggml-vulkan will offer.
func (p vulkanPlan) llvmpipe() (vkPhysical, bool) {
	for _, i := range p.visible {
		if p.physical[i].Type == vkTypeCPU && strings.HasPrefix(p.physical[i].Name, "llvmpipe") {
			return p.physical[i], true
		}
	}
	return vkPhysical{}, false
}

// LLVMpipeMesa returns the Mesa release of the llvmpipe device (Mesa's lavapipe) the Vulkan backend offers, and
// whether that release is known to corrupt the heap under ggml-vulkan (older than Mesa 25); version is "" when
// no llvmpipe device is offered (or the Vulkan backend is not loaded) or its driver does not name its release.
func LLVMpipeMesa() (version string, tooOld bool) {
	d, ok := vulkan.llvmpipe()
	if !ok {
		return "", false
	}
	major, v := mesaVersion(d.DriverInfo)
	return v, major > 0 && major < minLLVMpipeMesa
}

// envValue is the VulkanDevicesEnv value that makes ggml-vulkan offer p.visible ("" when ggml chooses).
func (p vulkanPlan) envValue() string {
	var s []string
	for _, i := range p.visible {
		s = append(s, strconv.Itoa(i))
	}
	return strings.Join(s, ",")
}

// cpuType reports whether ggml-vulkan's device index i (the N of "VulkanN") is a CPU-type physical device.
func (p vulkanPlan) cpuType(i int) bool {
	if p.visible == nil || i < 0 || i >= len(p.visible) {
		return false
	}
	return p.physical[p.visible[i]].Type == vkTypeCPU
}

// prepareVulkan runs before the Vulkan backend library is loaded: it probes the loader and, where planVulkan
// says so, sets VulkanDevicesEnv for ggml-vulkan to read. It reports false when the library must not be loaded:
// ggml-vulkan aborts the process on an index in VulkanDevicesEnv that names no device, so a bad list is refused
// here, as a problem of the load report.
func prepareVulkan(rep *LoadReport) bool {
	env, envSet := os.LookupEnv(VulkanDevicesEnv)
	physical, err := probeVulkan()
	if err != nil {
		// Without a loader the library cannot load either; ggml says so in its own words.
		rep.Problems = append(rep.Problems, err.Error())
		return true
	}
	p, err := planVulkan(physical, env, envSet)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return false
	}
	if !envSet && p.visible != nil {
		if err := os.Setenv(VulkanDevicesEnv, p.envValue()); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("ggml: vulkan: setting %s: %v", VulkanDevicesEnv, err))
			return true
		}
	}
	if p.note != "" {
		rep.Notes = append(rep.Notes, p.note)
	}
	if p.offersLLVMpipe() {
		if v, set := os.LookupEnv(LLVMpipeThreadsEnv); set {
			rep.Notes = append(rep.Notes, fmt.Sprintf("vulkan: llvmpipe with %s=%s as set (ggml-vulkan is right there only with 0)", LLVMpipeThreadsEnv, v))
		} else if err := os.Setenv(LLVMpipeThreadsEnv, "0"); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("ggml: vulkan: setting %s: %v", LLVMpipeThreadsEnv, err))
		} else {
			rep.Notes = append(rep.Notes, "vulkan: llvmpipe without worker threads ("+LLVMpipeThreadsEnv+"=0): with them ggml-vulkan's results go wrong")
		}
		d, _ := p.llvmpipe()
		if major, v := mesaVersion(d.DriverInfo); major > 0 && major < minLLVMpipeMesa {
			rep.Notes = append(rep.Notes, fmt.Sprintf("vulkan: llvmpipe of Mesa %s: lavapipe before Mesa %d corrupts the heap under ggml-vulkan (a double free on its queue thread that aborts the process); install Mesa %d or later", v, minLLVMpipeMesa, minLLVMpipeMesa))
		}
	}
	vulkan = p
	return true
}
