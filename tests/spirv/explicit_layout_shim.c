/*
 * A Vulkan driver (ICD) that forwards to Mesa's lavapipe and adds one thing to it: the
 * extension VK_KHR_workgroup_memory_explicit_layout, so that the GPU tests can run through
 * cubecl's SPIR-V compiler (ditail's `vulkan` feature) on a machine without a GPU.
 *
 * Why: cubecl-spirv 0.11.3 writes shared memory two ways. With the extension (NVIDIA's
 * driver and Mesa's RADV and ANV list it) it lays each shared array out explicitly, and its
 * shaders validate. Without it (lavapipe) it declares each shared array as a pointer to one,
 * which `spirv-val` rejects and lavapipe's compiler crashes on, so the SPIR-V build could not
 * run at all here. Mesa's SPIR-V front end reads the explicit layout whether or not the
 * driver advertises it, and lavapipe's shared memory is plain memory, so lavapipe runs the
 * kernels a GPU with the extension would get. ditail itself refuses such an adapter in a
 * SPIR-V build (`Adapter::takes_spirv` in crates/ditail-models/src/device.rs).
 *
 * What it changes, nothing else:
 * - vkEnumerateDeviceExtensionProperties lists the extension;
 * - vkGetPhysicalDeviceFeatures2 reports its four features as supported;
 * - vkCreateDevice takes the extension and its feature struct out of the request before
 *   lavapipe sees them (lavapipe refuses what it does not list);
 * - vkCreateShaderModule first writes each SPIR-V module to $DITAIL_SHIM_SPIRV_DIR (when
 *   set), for `spirv-val`.
 *
 * $DITAIL_SHIM_ICD names lavapipe's library. Built and used by scripts/test_spirv.sh.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vulkan/vk_icd.h>
#include <vulkan/vulkan.h>

#define EXTENSION VK_KHR_WORKGROUP_MEMORY_EXPLICIT_LAYOUT_EXTENSION_NAME
#define FEATURES_STYPE VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_WORKGROUP_MEMORY_EXPLICIT_LAYOUT_FEATURES_KHR

static void *driver;
static PFN_vkGetInstanceProcAddr driver_instance_proc;
static PFN_vk_icdGetPhysicalDeviceProcAddr driver_physical_proc;
static PFN_vkEnumerateDeviceExtensionProperties driver_extensions;
static PFN_vkGetPhysicalDeviceFeatures2 driver_features2;
static PFN_vkCreateDevice driver_create_device;
static PFN_vkGetDeviceProcAddr driver_device_proc;
static PFN_vkCreateShaderModule driver_create_module;

static int load_driver(void) {
    if (driver) return 1;
    const char *path = getenv("DITAIL_SHIM_ICD");
    if (!path || !(driver = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        fprintf(stderr, "explicit_layout_shim: cannot load DITAIL_SHIM_ICD=%s: %s\n",
                path ? path : "(unset)", dlerror());
        return 0;
    }
    driver_instance_proc = (PFN_vkGetInstanceProcAddr)dlsym(driver, "vk_icdGetInstanceProcAddr");
    driver_physical_proc =
        (PFN_vk_icdGetPhysicalDeviceProcAddr)dlsym(driver, "vk_icdGetPhysicalDeviceProcAddr");
    return driver_instance_proc != NULL;
}

static VkResult VKAPI_CALL extensions(VkPhysicalDevice gpu, const char *layer, uint32_t *count,
                                      VkExtensionProperties *out) {
    if (layer) return driver_extensions(gpu, layer, count, out);
    uint32_t n = 0;
    VkResult r = driver_extensions(gpu, NULL, &n, NULL);
    if (r != VK_SUCCESS) return r;
    VkExtensionProperties *all = calloc(n + 1, sizeof *all);
    if (!all) return VK_ERROR_OUT_OF_HOST_MEMORY;
    r = driver_extensions(gpu, NULL, &n, all);
    int listed = 0;
    for (uint32_t i = 0; i < n; i++) listed |= !strcmp(all[i].extensionName, EXTENSION);
    if (r == VK_SUCCESS && !listed) {
        snprintf(all[n].extensionName, sizeof all[n].extensionName, "%s", EXTENSION);
        all[n++].specVersion = 1;
    }
    if (r == VK_SUCCESS && out) {
        uint32_t written = n < *count ? n : *count;
        memcpy(out, all, written * sizeof *all);
        r = written < n ? VK_INCOMPLETE : VK_SUCCESS;
        n = written;
    }
    *count = n;
    free(all);
    return r;
}

static void VKAPI_CALL features2(VkPhysicalDevice gpu, VkPhysicalDeviceFeatures2 *features) {
    driver_features2(gpu, features);
    for (VkBaseOutStructure *s = (VkBaseOutStructure *)features; s; s = s->pNext) {
        if (s->sType != FEATURES_STYPE) continue;
        VkPhysicalDeviceWorkgroupMemoryExplicitLayoutFeaturesKHR *f = (void *)s;
        f->workgroupMemoryExplicitLayout = VK_TRUE;
        f->workgroupMemoryExplicitLayoutScalarBlockLayout = VK_TRUE;
        f->workgroupMemoryExplicitLayout8BitAccess = VK_TRUE;
        f->workgroupMemoryExplicitLayout16BitAccess = VK_TRUE;
    }
}

static VkResult VKAPI_CALL create_device(VkPhysicalDevice gpu, const VkDeviceCreateInfo *info,
                                         const VkAllocationCallbacks *alloc, VkDevice *device) {
    VkDeviceCreateInfo copy = *info;
    const char **names = calloc(info->enabledExtensionCount + 1, sizeof *names);
    if (!names) return VK_ERROR_OUT_OF_HOST_MEMORY;
    copy.enabledExtensionCount = 0;
    for (uint32_t i = 0; i < info->enabledExtensionCount; i++)
        if (strcmp(info->ppEnabledExtensionNames[i], EXTENSION))
            names[copy.enabledExtensionCount++] = info->ppEnabledExtensionNames[i];
    copy.ppEnabledExtensionNames = names;
    /* Unlink the feature struct for the call, then put it back: the chain is the caller's. */
    VkBaseOutStructure *before = (VkBaseOutStructure *)&copy, *cut = NULL;
    for (VkBaseOutStructure *s = before->pNext; s; before = s, s = s->pNext)
        if (s->sType == FEATURES_STYPE) {
            cut = s;
            before->pNext = s->pNext;
            break;
        }
    VkResult r = driver_create_device(gpu, &copy, alloc, device);
    if (cut && before != (VkBaseOutStructure *)&copy) before->pNext = cut;
    free(names);
    return r;
}

static VkResult VKAPI_CALL create_module(VkDevice device, const VkShaderModuleCreateInfo *info,
                                         const VkAllocationCallbacks *alloc,
                                         VkShaderModule *module) {
    const char *dir = getenv("DITAIL_SHIM_SPIRV_DIR");
    if (dir && *dir) {
        static unsigned next;
        char path[4096];
        snprintf(path, sizeof path, "%s/%u-%05u.spv", dir, (unsigned)getpid(), next++);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(info->pCode, 1, info->codeSize, f);
            fclose(f);
        }
    }
    return driver_create_module(device, info, alloc, module);
}

static PFN_vkVoidFunction VKAPI_CALL device_proc(VkDevice device, const char *name) {
    PFN_vkVoidFunction f = driver_device_proc(device, name);
    if (f && !strcmp(name, "vkCreateShaderModule")) {
        driver_create_module = (PFN_vkCreateShaderModule)f;
        return (PFN_vkVoidFunction)create_module;
    }
    return f;
}

/* The driver's function for `name`, or this shim's in its place. */
static PFN_vkVoidFunction wrap(const char *name, PFN_vkVoidFunction f) {
    if (!f) return f;
#define SWAP(vk_name, saved, type, ours) \
    if (!strcmp(name, vk_name)) {        \
        saved = (type)f;                 \
        return (PFN_vkVoidFunction)ours; \
    }
    SWAP("vkEnumerateDeviceExtensionProperties", driver_extensions,
         PFN_vkEnumerateDeviceExtensionProperties, extensions)
    SWAP("vkGetPhysicalDeviceFeatures2", driver_features2, PFN_vkGetPhysicalDeviceFeatures2,
         features2)
    SWAP("vkGetPhysicalDeviceFeatures2KHR", driver_features2, PFN_vkGetPhysicalDeviceFeatures2,
         features2)
    SWAP("vkCreateDevice", driver_create_device, PFN_vkCreateDevice, create_device)
    SWAP("vkGetDeviceProcAddr", driver_device_proc, PFN_vkGetDeviceProcAddr, device_proc)
    SWAP("vkCreateShaderModule", driver_create_module, PFN_vkCreateShaderModule, create_module)
#undef SWAP
    return f;
}

VKAPI_ATTR VkResult VKAPI_CALL vk_icdNegotiateLoaderICDInterfaceVersion(uint32_t *version) {
    if (!load_driver()) return VK_ERROR_INCOMPATIBLE_DRIVER;
    PFN_vk_icdNegotiateLoaderICDInterfaceVersion negotiate =
        (PFN_vk_icdNegotiateLoaderICDInterfaceVersion)dlsym(
            driver, "vk_icdNegotiateLoaderICDInterfaceVersion");
    return negotiate ? negotiate(version) : VK_SUCCESS;
}

VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vk_icdGetInstanceProcAddr(VkInstance instance,
                                                                   const char *name) {
    if (!load_driver()) return NULL;
    return wrap(name, driver_instance_proc(instance, name));
}

VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vk_icdGetPhysicalDeviceProcAddr(VkInstance instance,
                                                                         const char *name) {
    if (!load_driver() || !driver_physical_proc) return NULL;
    return wrap(name, driver_physical_proc(instance, name));
}
