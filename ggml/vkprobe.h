// Lists the Vulkan physical devices through the system's Vulkan loader (opened with dlopen, so that the binary
// neither links it nor needs its headers): type and name per device, in the loader's enumeration order, which is
// the order ggml-vulkan's GGML_VK_VISIBLE_DEVICES indexes.
#ifndef IDEFICS2_VKPROBE_H
#define IDEFICS2_VKPROBE_H

#define IDEFICS2_VK_NAME_MAX 256

typedef struct {
    int type;        // VkPhysicalDeviceType: 0 other, 1 integrated GPU, 2 discrete GPU, 3 virtual GPU, 4 CPU
    unsigned api;    // VkPhysicalDeviceProperties.apiVersion
    unsigned driver; // VkPhysicalDeviceProperties.driverVersion (each vendor encodes it its own way)
    char name[IDEFICS2_VK_NAME_MAX];
    char driver_info[IDEFICS2_VK_NAME_MAX]; // VkPhysicalDeviceDriverProperties.driverInfo ("" below Vulkan 1.2)
} idefics2_vk_device;

// idefics2_vk_probe fills up to max devices and returns how many there are (which may exceed max), or -1 when
// no Vulkan loader could be opened, -2 when it offers no instance, -3 when enumeration failed.
int idefics2_vk_probe(idefics2_vk_device *out, int max);

#endif
