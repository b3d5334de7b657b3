#include "vkprobe.h"

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

// The few Vulkan 1.0 declarations the probe needs, written from the Vulkan specification (the binary must build
// without the Vulkan headers). Dispatchable handles are pointers; VkResult 0 is VK_SUCCESS.
typedef void *vk_handle;
typedef int32_t vk_result;
typedef void (*vk_void_fn)(void);
typedef vk_void_fn (*vk_get_instance_proc_addr_fn)(vk_handle instance, const char *name);

typedef struct {
    int32_t s_type;  // VK_STRUCTURE_TYPE_APPLICATION_INFO = 0
    const void *next;
    const char *app_name;
    uint32_t app_version;
    const char *engine_name;
    uint32_t engine_version;
    uint32_t api_version;
} vk_application_info;

typedef struct {
    int32_t s_type;  // VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1
    const void *next;
    uint32_t flags;
    const vk_application_info *app;
    uint32_t layer_count;
    const char *const *layers;
    uint32_t extension_count;
    const char *const *extensions;
} vk_instance_create_info;

typedef vk_result (*vk_create_instance_fn)(const vk_instance_create_info *, const void *, vk_handle *);
typedef void (*vk_destroy_instance_fn)(vk_handle, const void *);
typedef vk_result (*vk_enumerate_physical_devices_fn)(vk_handle, uint32_t *, vk_handle *);
typedef void (*vk_get_physical_device_properties_fn)(vk_handle, void *);

// VkPhysicalDeviceProperties begins with apiVersion, driverVersion, vendorID, deviceID (uint32 each), deviceType
// (an enum, 32 bits) and deviceName[256]; the rest (UUID, limits, sparse properties) is under 1 KiB in every
// version of the specification. The probe reads only the leading fields from an over-sized, aligned buffer.
#define VK_PROPS_BUFFER 4096
#define VK_PROPS_TYPE_OFFSET 16
#define VK_PROPS_NAME_OFFSET 20
#define VK_MAX_DEVICES 64

// VkPhysicalDeviceProperties2 (sType VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2) chaining
// VkPhysicalDeviceDriverProperties (sType VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, Vulkan 1.2): sType,
// pNext, driverID (uint32), driverName[256], driverInfo[256], conformanceVersion (4 bytes).
#define VK_STYPE_PROPERTIES_2 1000059001
#define VK_STYPE_DRIVER_PROPERTIES 1000196000
typedef struct {
    int32_t s_type;
    void *next;
    uint32_t driver_id;
    char driver_name[256];
    char driver_info[256];
    uint8_t conformance[4];
} vk_driver_properties;
typedef struct {
    int32_t s_type;
    void *next;
    uint64_t properties[VK_PROPS_BUFFER / 8];
} vk_properties2;

static void *open_loader(void) {
    static const char *names[] = {"libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
    }
    return NULL;
}

int idefics2_vk_probe(idefics2_vk_device *out, int max) {
    void *lib = open_loader();
    if (!lib) return -1;
    int ret = -2;
    vk_get_instance_proc_addr_fn gipa = (vk_get_instance_proc_addr_fn) dlsym(lib, "vkGetInstanceProcAddr");
    vk_create_instance_fn create = gipa ? (vk_create_instance_fn) gipa(NULL, "vkCreateInstance") : NULL;
    if (!create) goto done;
    vk_application_info app = {0, NULL, "idefics2-probe", 1, NULL, 0, (1u << 22) | (1u << 12)};  // Vulkan 1.1
    vk_instance_create_info ci = {1, NULL, 0, &app, 0, NULL, 0, NULL};
    vk_handle inst = NULL;
    if (create(&ci, NULL, &inst) != 0 || !inst) goto done;
    ret = -3;
    vk_destroy_instance_fn destroy = (vk_destroy_instance_fn) gipa(inst, "vkDestroyInstance");
    vk_enumerate_physical_devices_fn enumerate = (vk_enumerate_physical_devices_fn) gipa(inst, "vkEnumeratePhysicalDevices");
    vk_get_physical_device_properties_fn props = (vk_get_physical_device_properties_fn) gipa(inst, "vkGetPhysicalDeviceProperties");
    vk_get_physical_device_properties_fn props2 = (vk_get_physical_device_properties_fn) gipa(inst, "vkGetPhysicalDeviceProperties2");
    if (enumerate && props) {
        vk_handle devs[VK_MAX_DEVICES];
        uint32_t n = VK_MAX_DEVICES;
        vk_result r = enumerate(inst, &n, devs);
        if (r >= 0) {  // VK_SUCCESS or VK_INCOMPLETE (more than VK_MAX_DEVICES)
            uint64_t buf[VK_PROPS_BUFFER / 8];
            for (uint32_t i = 0; i < n && (int) i < max; i++) {
                memset(buf, 0, sizeof buf);
                props(devs[i], buf);
                const unsigned char *p = (const unsigned char *) buf;
                int32_t type;
                memcpy(&type, p + VK_PROPS_TYPE_OFFSET, sizeof type);
                out[i].type = type;
                memcpy(&out[i].api, p, sizeof out[i].api);
                memcpy(&out[i].driver, p + 4, sizeof out[i].driver);
                memcpy(out[i].name, p + VK_PROPS_NAME_OFFSET, IDEFICS2_VK_NAME_MAX);
                out[i].name[IDEFICS2_VK_NAME_MAX - 1] = 0;
                out[i].driver_info[0] = 0;
                if (props2 && out[i].api >= ((1u << 22) | (2u << 12))) {  // driver properties are core in 1.2
                    vk_properties2 p2;
                    vk_driver_properties dp;
                    memset(&p2, 0, sizeof p2);
                    memset(&dp, 0, sizeof dp);
                    dp.s_type = VK_STYPE_DRIVER_PROPERTIES;
                    p2.s_type = VK_STYPE_PROPERTIES_2;
                    p2.next = &dp;
                    props2(devs[i], &p2);
                    memcpy(out[i].driver_info, dp.driver_info, IDEFICS2_VK_NAME_MAX);
                    out[i].driver_info[IDEFICS2_VK_NAME_MAX - 1] = 0;
                }
            }
            ret = (int) n;
        }
    }
    if (destroy) destroy(inst, NULL);
done:
    // The loader stays open: ggml-vulkan opens it next, and some drivers (LLVM-based ones such as lavapipe) do
    // not survive being unloaded and loaded again in one process.
    (void) lib;
    return ret;
}
