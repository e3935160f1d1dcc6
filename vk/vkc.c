// Implementation of the thin C layer declared in vkc.h.
#include "vkc.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- loader ---------------------------------------------------------------

static void *loader;
static PFN_vkGetInstanceProcAddr gipa;
static PFN_vkEnumerateInstanceVersion enum_version;
static PFN_vkEnumerateInstanceLayerProperties enum_layers;
static PFN_vkEnumerateInstanceExtensionProperties enum_exts;
static PFN_vkCreateInstance create_instance;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_err[512];

static void load(void) {
	static const char *names[] = {
#if defined(__APPLE__)
		"libvulkan.1.dylib", "libvulkan.dylib", "libMoltenVK.dylib",
#else
		"libvulkan.so.1", "libvulkan.so",
#endif
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0] && !loader; i++)
		loader = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!loader) {
		const char *e = dlerror();
		snprintf(load_err, sizeof load_err, "%s", e ? e : "libvulkan not found");
		return;
	}
	gipa = (PFN_vkGetInstanceProcAddr)dlsym(loader, "vkGetInstanceProcAddr");
	if (!gipa) {
		snprintf(load_err, sizeof load_err, "the Vulkan loader has no vkGetInstanceProcAddr");
		return;
	}
	enum_version = (PFN_vkEnumerateInstanceVersion)gipa(NULL, "vkEnumerateInstanceVersion");
	enum_layers = (PFN_vkEnumerateInstanceLayerProperties)gipa(NULL, "vkEnumerateInstanceLayerProperties");
	enum_exts = (PFN_vkEnumerateInstanceExtensionProperties)gipa(NULL, "vkEnumerateInstanceExtensionProperties");
	create_instance = (PFN_vkCreateInstance)gipa(NULL, "vkCreateInstance");
	if (!enum_layers || !enum_exts || !create_instance)
		snprintf(load_err, sizeof load_err, "the Vulkan loader lacks global entry points");
}

int hi_load(char *err, size_t errlen) {
	pthread_once(&load_once, load);
	if (load_err[0]) {
		snprintf(err, errlen, "%s", load_err);
		return -1;
	}
	return 0;
}

uint32_t hi_instance_version(void) {
	uint32_t v = VK_API_VERSION_1_0; // a 1.0 loader has no vkEnumerateInstanceVersion
	if (enum_version && enum_version(&v) != VK_SUCCESS)
		v = VK_API_VERSION_1_0;
	return v;
}

int hi_layer_present(const char *layer) {
	uint32_t n = 0;
	if (enum_layers(&n, NULL) != VK_SUCCESS || n == 0)
		return 0;
	VkLayerProperties *p = calloc(n, sizeof *p);
	int found = 0;
	if (p && enum_layers(&n, p) >= 0)
		for (uint32_t i = 0; i < n && !found; i++)
			found = strcmp(p[i].layerName, layer) == 0;
	free(p);
	return found;
}

int hi_instance_ext_present(const char *layer, const char *ext) {
	uint32_t n = 0;
	if (enum_exts(layer, &n, NULL) != VK_SUCCESS || n == 0)
		return 0;
	VkExtensionProperties *p = calloc(n, sizeof *p);
	int found = 0;
	if (p && enum_exts(layer, &n, p) >= 0)
		for (uint32_t i = 0; i < n && !found; i++)
			found = strcmp(p[i].extensionName, ext) == 0;
	free(p);
	return found;
}

// ---- validation messages ---------------------------------------------------

// Messages are kept up to this many bytes; beyond it they are counted only,
// so that a runaway loop of errors cannot exhaust memory.
#define HI_MSGS_LIMIT (4u << 20)

static void msgs_append(hi_msgs *m, const char *sev, const char *id, const char *text) {
	pthread_mutex_lock(&m->mu);
	size_t need = strlen(sev) + strlen(id) + strlen(text) + 8;
	if (m->len + need > HI_MSGS_LIMIT) {
		m->dropped++;
		pthread_mutex_unlock(&m->mu);
		return;
	}
	if (m->len + need > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 4096;
		while (cap < m->len + need)
			cap *= 2;
		char *b = realloc(m->buf, cap);
		if (!b) {
			m->dropped++;
			pthread_mutex_unlock(&m->mu);
			return;
		}
		m->buf = b;
		m->cap = cap;
	}
	// Records are separated by the ASCII record separator, since messages
	// themselves may contain newlines.
	m->len += (size_t)sprintf(m->buf + m->len, "%s: %s: %s\x1e", sev, id, text);
	pthread_mutex_unlock(&m->mu);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
						 VkDebugUtilsMessageTypeFlagsEXT types,
						 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
	(void)types;
	hi_msgs *m = user;
	const char *s = (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ? "ERROR" : "WARNING";
	msgs_append(m, s, data->pMessageIdName ? data->pMessageIdName : "-",
		    data->pMessage ? data->pMessage : "");
	return VK_FALSE;
}

char *hi_messages_drain(hi_instance *in) {
	if (!in->msgs)
		return NULL;
	hi_msgs *m = in->msgs;
	pthread_mutex_lock(&m->mu);
	char *out = NULL;
	if (m->len || m->dropped) {
		out = malloc(m->len + 64);
		if (out) {
			memcpy(out, m->buf, m->len);
			size_t n = m->len;
			if (m->dropped)
				n += (size_t)sprintf(out + n, "ERROR: -: %zu more messages dropped\x1e", m->dropped);
			out[n] = 0;
			m->len = 0;
			m->dropped = 0;
		}
	}
	pthread_mutex_unlock(&m->mu);
	return out;
}

void hi_messages_free(char *s) { free(s); }

// ---- instance ---------------------------------------------------------------

VkResult hi_instance_create(uint32_t api, int validation, int sync_validation, int debug_utils, int portability,
			    hi_instance **out) {
	*out = NULL;
	hi_instance *in = calloc(1, sizeof *in);
	if (!in)
		return VK_ERROR_OUT_OF_HOST_MEMORY;
	in->api_version = api;

	VkApplicationInfo app = {
		.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
		.pApplicationName = "headinfer",
		.pEngineName = "headinfer",
		.apiVersion = api,
	};
	const char *layers[1];
	const char *exts[4];
	uint32_t nlayers = 0, nexts = 0;
	VkInstanceCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
		.pApplicationInfo = &app,
	};
	if (portability) {
		exts[nexts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
		ci.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
	}
	VkDebugUtilsMessengerCreateInfoEXT mci = {
		.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
		.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
				   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
		.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
		.pfnUserCallback = on_message,
	};
	VkValidationFeatureEnableEXT enables[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
	VkValidationFeaturesEXT vf = {
		.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
		.enabledValidationFeatureCount = 1,
		.pEnabledValidationFeatures = enables,
	};
	if (validation) {
		layers[nlayers++] = "VK_LAYER_KHRONOS_validation";
		if (debug_utils) {
			in->msgs = calloc(1, sizeof *in->msgs);
			if (!in->msgs) {
				free(in);
				return VK_ERROR_OUT_OF_HOST_MEMORY;
			}
			pthread_mutex_init(&in->msgs->mu, NULL);
			mci.pUserData = in->msgs;
			exts[nexts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
			mci.pNext = ci.pNext;
			ci.pNext = &mci;
		}
		if (sync_validation) {
			exts[nexts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
			vf.pNext = ci.pNext;
			ci.pNext = &vf;
		}
	}
	ci.enabledLayerCount = nlayers;
	ci.ppEnabledLayerNames = layers;
	ci.enabledExtensionCount = nexts;
	ci.ppEnabledExtensionNames = exts;

	VkResult r = create_instance(&ci, NULL, &in->inst);
	if (r != VK_SUCCESS) {
		if (in->msgs) {
			pthread_mutex_destroy(&in->msgs->mu);
			free(in->msgs->buf);
			free(in->msgs);
		}
		free(in);
		return r;
	}
#define HI_LOAD_INSTANCE(name) in->name = (PFN_vk##name)gipa(in->inst, "vk" #name);
	HI_INSTANCE_FUNCS(HI_LOAD_INSTANCE)
#undef HI_LOAD_INSTANCE
	*out = in;
	if (in->msgs) {
		// Without the messenger, validation would run and its messages go
		// nowhere: tests relying on them would pass with nothing collected.
		PFN_vkCreateDebugUtilsMessengerEXT create =
			(PFN_vkCreateDebugUtilsMessengerEXT)gipa(in->inst, "vkCreateDebugUtilsMessengerEXT");
		in->DestroyDebugUtilsMessengerEXT =
			(PFN_vkDestroyDebugUtilsMessengerEXT)gipa(in->inst, "vkDestroyDebugUtilsMessengerEXT");
		mci.pNext = NULL;
		if (!create || !in->DestroyDebugUtilsMessengerEXT)
			return HI_NO_MESSENGER;
		r = create(in->inst, &mci, NULL, &in->messenger);
		if (r != VK_SUCCESS) {
			in->messenger = VK_NULL_HANDLE;
			return r;
		}
	}
	return VK_SUCCESS;
}

void hi_instance_destroy(hi_instance *in) {
	if (!in)
		return;
	if (in->messenger)
		in->DestroyDebugUtilsMessengerEXT(in->inst, in->messenger, NULL);
	in->DestroyInstance(in->inst, NULL);
	if (in->msgs) {
		pthread_mutex_destroy(&in->msgs->mu);
		free(in->msgs->buf);
		free(in->msgs);
	}
	free(in);
}

VkResult hi_physical_devices(hi_instance *in, VkPhysicalDevice *out, uint32_t *count) {
	return in->EnumeratePhysicalDevices(in->inst, count, out);
}

static int device_ext(hi_instance *in, VkPhysicalDevice p, const char *ext) {
	uint32_t n = 0;
	if (in->EnumerateDeviceExtensionProperties(p, NULL, &n, NULL) != VK_SUCCESS || n == 0)
		return 0;
	VkExtensionProperties *e = calloc(n, sizeof *e);
	int found = 0;
	if (e && in->EnumerateDeviceExtensionProperties(p, NULL, &n, e) >= 0)
		for (uint32_t i = 0; i < n && !found; i++)
			found = strcmp(e[i].extensionName, ext) == 0;
	free(e);
	return found;
}

void hi_memory_budget(hi_instance *in, VkPhysicalDevice p, uint64_t *budget, uint64_t *usage, uint32_t n) {
	VkPhysicalDeviceMemoryBudgetPropertiesEXT b = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT,
	};
	VkPhysicalDeviceMemoryProperties2 mp = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
		.pNext = &b,
	};
	in->GetPhysicalDeviceMemoryProperties2(p, &mp);
	for (uint32_t i = 0; i < n && i < mp.memoryProperties.memoryHeapCount && i < HI_MAX_HEAPS; i++) {
		budget[i] = b.heapBudget[i];
		usage[i] = b.heapUsage[i];
	}
}

void hi_physical_info(hi_instance *in, VkPhysicalDevice p, hi_devinfo *o) {
	memset(o, 0, sizeof *o);
	VkPhysicalDeviceProperties props;
	in->GetPhysicalDeviceProperties(p, &props);
	uint32_t api = props.apiVersion;
	int v11 = api >= VK_API_VERSION_1_1, v12 = api >= VK_API_VERSION_1_2;

	VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
	VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
	VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
	if (v11) {
		VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
		sg.pNext = &m3;
		if (v12)
			m3.pNext = &drv;
		p2.pNext = &sg;
		in->GetPhysicalDeviceProperties2(p, &p2);
	}
	snprintf(o->name, sizeof o->name, "%s", props.deviceName);
	snprintf(o->driver_name, sizeof o->driver_name, "%s", drv.driverName);
	snprintf(o->driver_info, sizeof o->driver_info, "%s", drv.driverInfo);
	o->type = props.deviceType;
	o->api_version = api;
	o->driver_version = props.driverVersion;
	o->vendor_id = props.vendorID;
	o->device_id = props.deviceID;
	memcpy(o->cache_uuid, props.pipelineCacheUUID, VK_UUID_SIZE);

	VkPhysicalDeviceLimits *l = &props.limits;
	o->max_storage_range = l->maxStorageBufferRange;
	o->max_alloc = m3.maxMemoryAllocationSize;
	o->min_storage_align = l->minStorageBufferOffsetAlignment;
	o->max_texels = l->maxTexelBufferElements;
	o->min_texel_align = l->minTexelBufferOffsetAlignment;
	o->max_shared = l->maxComputeSharedMemorySize;
	o->max_invocations = l->maxComputeWorkGroupInvocations;
	for (int i = 0; i < 3; i++)
		o->max_groups[i] = l->maxComputeWorkGroupCount[i];
	o->max_push = l->maxPushConstantsSize;
	o->max_bound_sets = l->maxBoundDescriptorSets;
	o->timestamp_period = l->timestampPeriod;
	o->subgroup_size = sg.subgroupSize;
	o->subgroup_arith = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
			    (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);

	if (v12) {
		VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
		VkPhysicalDeviceVulkan11Features f11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
							.pNext = &f12};
		VkPhysicalDeviceFeatures2 f = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f11};
		in->GetPhysicalDeviceFeatures2(p, &f);
		o->storage16 = f11.storageBuffer16BitAccess;
		o->float16 = f12.shaderFloat16;
		o->int8 = f12.shaderInt8;
		o->storage8 = f12.storageBuffer8BitAccess;
		o->timeline = f12.timelineSemaphore;
		o->int16 = f.features.shaderInt16;
		o->host_query_reset = f12.hostQueryReset;
	}
	o->memory_budget = device_ext(in, p, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
	o->portability_subset = device_ext(in, p, "VK_KHR_portability_subset");

	VkPhysicalDeviceMemoryProperties mp;
	in->GetPhysicalDeviceMemoryProperties(p, &mp);
	o->heap_count = mp.memoryHeapCount < HI_MAX_HEAPS ? mp.memoryHeapCount : HI_MAX_HEAPS;
	for (uint32_t i = 0; i < o->heap_count; i++) {
		o->heap_size[i] = mp.memoryHeaps[i].size;
		o->heap_flags[i] = mp.memoryHeaps[i].flags;
	}
	o->type_count = mp.memoryTypeCount < HI_MAX_TYPES ? mp.memoryTypeCount : HI_MAX_TYPES;
	for (uint32_t i = 0; i < o->type_count; i++) {
		o->type_flags[i] = mp.memoryTypes[i].propertyFlags;
		o->type_heap[i] = mp.memoryTypes[i].heapIndex;
	}
	if (o->memory_budget && v11)
		hi_memory_budget(in, p, o->heap_budget, o->heap_usage, o->heap_count);

	uint32_t nf = 0;
	in->GetPhysicalDeviceQueueFamilyProperties(p, &nf, NULL);
	VkQueueFamilyProperties *qf = calloc(nf ? nf : 1, sizeof *qf);
	o->compute_family = -1;
	o->transfer_family = -1;
	if (qf) {
		in->GetPhysicalDeviceQueueFamilyProperties(p, &nf, qf);
		for (uint32_t i = 0; i < nf; i++) {
			VkQueueFlags fl = qf[i].queueFlags;
			if (qf[i].queueCount == 0)
				continue;
			if (o->compute_family < 0 && (fl & VK_QUEUE_COMPUTE_BIT)) {
				o->compute_family = (int32_t)i;
				o->compute_ts_bits = qf[i].timestampValidBits;
			}
			if (o->transfer_family < 0 && (fl & VK_QUEUE_TRANSFER_BIT) &&
			    !(fl & (VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT))) {
				o->transfer_family = (int32_t)i;
				o->transfer_ts_bits = qf[i].timestampValidBits;
			}
		}
		free(qf);
	}
	if (o->compute_ts_bits == 0)
		o->timestamp_period = 0;
}

// ---- device ------------------------------------------------------------------

struct hi_device_ext {
	hi_device d;
	uint32_t families[2];
	uint32_t nfamilies;
};

VkResult hi_device_create(hi_instance *in, VkPhysicalDevice p, const hi_devinfo *info, hi_device **out) {
	*out = NULL;
	struct hi_device_ext *x = calloc(1, sizeof *x);
	if (!x)
		return VK_ERROR_OUT_OF_HOST_MEMORY;
	hi_device *d = &x->d;
	d->phys = p;

	float prio = 1.0f;
	VkDeviceQueueCreateInfo qci[2] = {
		{.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
		 .queueFamilyIndex = (uint32_t)info->compute_family,
		 .queueCount = 1,
		 .pQueuePriorities = &prio},
		{.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
		 .queueFamilyIndex = (uint32_t)info->transfer_family,
		 .queueCount = 1,
		 .pQueuePriorities = &prio},
	};
	uint32_t nq = info->transfer_family >= 0 ? 2 : 1;
	x->families[0] = (uint32_t)info->compute_family;
	x->families[1] = (uint32_t)info->transfer_family;
	x->nfamilies = nq;

	VkPhysicalDeviceVulkan12Features f12 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
		.shaderFloat16 = info->float16,
		.shaderInt8 = info->int8,
		.storageBuffer8BitAccess = info->storage8,
		.timelineSemaphore = VK_TRUE,
		.hostQueryReset = info->host_query_reset,
	};
	VkPhysicalDeviceVulkan11Features f11 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
		.pNext = &f12,
		.storageBuffer16BitAccess = VK_TRUE,
	};
	VkPhysicalDeviceFeatures2 f = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
		.pNext = &f11,
	};
	f.features.shaderInt16 = info->int16;

	const char *exts[2];
	uint32_t nexts = 0;
	if (info->memory_budget)
		exts[nexts++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
	if (info->portability_subset)
		exts[nexts++] = "VK_KHR_portability_subset";

	VkDeviceCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
		.pNext = &f,
		.queueCreateInfoCount = nq,
		.pQueueCreateInfos = qci,
		.enabledExtensionCount = nexts,
		.ppEnabledExtensionNames = exts,
	};
	VkResult r = in->CreateDevice(p, &ci, NULL, &d->dev);
	if (r != VK_SUCCESS) {
		free(x);
		return r;
	}
#define HI_LOAD_DEVICE(name) d->name = (PFN_vk##name)in->GetDeviceProcAddr(d->dev, "vk" #name);
	HI_DEVICE_FUNCS(HI_LOAD_DEVICE)
#undef HI_LOAD_DEVICE
	d->GetDeviceQueue(d->dev, (uint32_t)info->compute_family, 0, &d->compute);
	d->transfer = d->compute;
	if (info->transfer_family >= 0)
		d->GetDeviceQueue(d->dev, (uint32_t)info->transfer_family, 0, &d->transfer);
	*out = d;
	return VK_SUCCESS;
}

void hi_device_destroy(hi_device *d) {
	if (!d)
		return;
	d->DestroyDevice(d->dev, NULL);
	free((struct hi_device_ext *)d);
}

VkResult hi_device_wait_idle(hi_device *d) { return d->DeviceWaitIdle(d->dev); }

static VkResult make_buffer(hi_device *d, uint64_t size, VkBuffer *out) {
	struct hi_device_ext *x = (struct hi_device_ext *)d;
	VkBufferCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
		.size = size,
		.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
			 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
		.sharingMode = VK_SHARING_MODE_EXCLUSIVE,
	};
	// Blocks are used by both queue families; concurrent sharing spares
	// every user an ownership transfer.
	if (x->nfamilies > 1) {
		ci.sharingMode = VK_SHARING_MODE_CONCURRENT;
		ci.queueFamilyIndexCount = x->nfamilies;
		ci.pQueueFamilyIndices = x->families;
	}
	return d->CreateBuffer(d->dev, &ci, NULL, out);
}

VkResult hi_buffer_type_bits(hi_device *d, uint32_t *bits) {
	VkBuffer b;
	VkResult r = make_buffer(d, 1 << 20, &b);
	if (r != VK_SUCCESS)
		return r;
	VkMemoryRequirements req;
	d->GetBufferMemoryRequirements(d->dev, b, &req);
	d->DestroyBuffer(d->dev, b, NULL);
	*bits = req.memoryTypeBits;
	return VK_SUCCESS;
}

VkResult hi_block_create(hi_device *d, uint64_t size, uint32_t type, int map, hi_block *out) {
	memset(out, 0, sizeof *out);
	VkResult r = make_buffer(d, size, &out->buf);
	if (r != VK_SUCCESS)
		return r;
	VkMemoryRequirements req;
	d->GetBufferMemoryRequirements(d->dev, out->buf, &req);
	if (!(req.memoryTypeBits & (1u << type))) {
		d->DestroyBuffer(d->dev, out->buf, NULL);
		out->buf = VK_NULL_HANDLE;
		return VK_ERROR_FEATURE_NOT_PRESENT;
	}
	VkMemoryAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
		.allocationSize = req.size,
		.memoryTypeIndex = type,
	};
	r = d->AllocateMemory(d->dev, &ai, NULL, &out->mem);
	if (r == VK_SUCCESS)
		r = d->BindBufferMemory(d->dev, out->buf, out->mem, 0);
	if (r == VK_SUCCESS && map)
		r = d->MapMemory(d->dev, out->mem, 0, VK_WHOLE_SIZE, 0, &out->mapped);
	if (r != VK_SUCCESS)
		hi_block_destroy(d, out);
	return r;
}

void hi_block_destroy(hi_device *d, hi_block *b) {
	// Freeing memory unmaps it implicitly.
	if (b->buf)
		d->DestroyBuffer(d->dev, b->buf, NULL);
	if (b->mem)
		d->FreeMemory(d->dev, b->mem, NULL);
	memset(b, 0, sizeof *b);
}

// ---- pipeline cache and kernels ------------------------------------------------

VkResult hi_pcache_create(hi_device *d, const void *data, size_t len, VkPipelineCache *out) {
	VkPipelineCacheCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
		.initialDataSize = len,
		.pInitialData = data,
	};
	return d->CreatePipelineCache(d->dev, &ci, NULL, out);
}

void *hi_pcache_data(hi_device *d, VkPipelineCache c, size_t *len) {
	*len = 0;
	size_t n = 0;
	if (d->GetPipelineCacheData(d->dev, c, &n, NULL) != VK_SUCCESS || n == 0)
		return NULL;
	void *p = malloc(n);
	if (!p)
		return NULL;
	if (d->GetPipelineCacheData(d->dev, c, &n, p) != VK_SUCCESS) {
		free(p);
		return NULL;
	}
	*len = n;
	return p;
}

void hi_pcache_destroy(hi_device *d, VkPipelineCache c) { d->DestroyPipelineCache(d->dev, c, NULL); }

VkResult hi_kernel_create(hi_device *d, VkPipelineCache cache, const uint32_t *code, size_t code_bytes,
			  uint32_t nbufs, uint32_t texels, uint32_t push_bytes, const uint32_t *spec, uint32_t nspec,
			  hi_kernel **out) {
	*out = NULL;
	hi_kernel *k = calloc(1, sizeof *k);
	if (!k)
		return VK_ERROR_OUT_OF_HOST_MEMORY;
	k->nbufs = nbufs;
	k->texels = texels;
	k->push_bytes = push_bytes;

	VkShaderModuleCreateInfo mci = {
		.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
		.codeSize = code_bytes,
		.pCode = code,
	};
	VkResult r = d->CreateShaderModule(d->dev, &mci, NULL, &k->module);
	if (r != VK_SUCCESS)
		goto fail;

	VkDescriptorSetLayoutBinding b[HI_MAX_BINDINGS];
	for (uint32_t i = 0; i < nbufs; i++)
		b[i] = (VkDescriptorSetLayoutBinding){
			.binding = i,
			.descriptorType = ((texels >> i) & 1) ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
							      : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
			.descriptorCount = 1,
			.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
		};
	VkDescriptorSetLayoutCreateInfo lci = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
		.bindingCount = nbufs,
		.pBindings = b,
	};
	r = d->CreateDescriptorSetLayout(d->dev, &lci, NULL, &k->set_layout);
	if (r != VK_SUCCESS)
		goto fail;

	VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = push_bytes};
	VkPipelineLayoutCreateInfo plci = {
		.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
		.setLayoutCount = 1,
		.pSetLayouts = &k->set_layout,
		.pushConstantRangeCount = push_bytes ? 1 : 0,
		.pPushConstantRanges = &pr,
	};
	r = d->CreatePipelineLayout(d->dev, &plci, NULL, &k->layout);
	if (r != VK_SUCCESS)
		goto fail;

	VkSpecializationMapEntry *me = calloc(nspec ? nspec : 1, sizeof *me);
	if (!me) {
		r = VK_ERROR_OUT_OF_HOST_MEMORY;
		goto fail;
	}
	for (uint32_t i = 0; i < nspec; i++)
		me[i] = (VkSpecializationMapEntry){.constantID = i, .offset = 4 * i, .size = 4};
	VkSpecializationInfo si = {
		.mapEntryCount = nspec,
		.pMapEntries = me,
		.dataSize = 4 * (size_t)nspec,
		.pData = spec,
	};
	VkComputePipelineCreateInfo pci = {
		.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
		.stage =
			{
				.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
				.stage = VK_SHADER_STAGE_COMPUTE_BIT,
				.module = k->module,
				.pName = "main",
				.pSpecializationInfo = nspec ? &si : NULL,
			},
		.layout = k->layout,
	};
	r = d->CreateComputePipelines(d->dev, cache, 1, &pci, NULL, &k->pipeline);
	free(me);
	if (r != VK_SUCCESS)
		goto fail;
	*out = k;
	return VK_SUCCESS;
fail:
	hi_kernel_destroy(d, k);
	return r;
}

void hi_kernel_destroy(hi_device *d, hi_kernel *k) {
	if (!k)
		return;
	if (k->pipeline)
		d->DestroyPipeline(d->dev, k->pipeline, NULL);
	if (k->layout)
		d->DestroyPipelineLayout(d->dev, k->layout, NULL);
	if (k->set_layout)
		d->DestroyDescriptorSetLayout(d->dev, k->set_layout, NULL);
	if (k->module)
		d->DestroyShaderModule(d->dev, k->module, NULL);
	free(k);
}

// ---- recording -------------------------------------------------------------

VkResult hi_cmds_create(hi_device *d, uint32_t family, hi_cmds **out) {
	*out = NULL;
	hi_cmds *c = calloc(1, sizeof *c);
	if (!c)
		return VK_ERROR_OUT_OF_HOST_MEMORY;
	VkCommandPoolCreateInfo pci = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.queueFamilyIndex = family,
	};
	VkResult r = d->CreateCommandPool(d->dev, &pci, NULL, &c->pool);
	if (r != VK_SUCCESS) {
		free(c);
		return r;
	}
	VkCommandBufferAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
		.commandPool = c->pool,
		.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
		.commandBufferCount = 1,
	};
	r = d->AllocateCommandBuffers(d->dev, &ai, &c->cb);
	if (r != VK_SUCCESS) {
		d->DestroyCommandPool(d->dev, c->pool, NULL);
		free(c);
		return r;
	}
	*out = c;
	return VK_SUCCESS;
}

static void free_views(hi_device *d, hi_cmds *c) {
	for (uint32_t i = 0; i < c->nviews; i++)
		d->DestroyBufferView(d->dev, c->views[i], NULL);
	c->nviews = 0;
}

void hi_cmds_destroy(hi_device *d, hi_cmds *c) {
	if (!c)
		return;
	free_views(d, c);
	free(c->views);
	d->DestroyCommandPool(d->dev, c->pool, NULL); // frees the command buffer too
	free(c);
}

VkResult hi_cmds_begin(hi_device *d, hi_cmds *c) {
	// No ONE_TIME_SUBMIT: recorded work is replayed many times, and may be
	// queued again before the previous replay has finished.
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT,
	};
	return d->BeginCommandBuffer(c->cb, &bi);
}

VkResult hi_cmds_reset(hi_device *d, hi_cmds *c) {
	VkResult r = d->ResetCommandPool(d->dev, c->pool, 0);
	free_views(d, c); // the command buffer that used them is reset
	return r;
}

VkResult hi_cmds_end(hi_device *d, hi_cmds *c) { return d->EndCommandBuffer(c->cb); }

VkResult hi_dpool_create(hi_device *d, uint32_t sets, uint32_t descriptors, VkDescriptorPool *out) {
	VkDescriptorPoolSize sz[2] = {
		{.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = descriptors},
		{.type = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, .descriptorCount = descriptors},
	};
	VkDescriptorPoolCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
		.maxSets = sets,
		.poolSizeCount = 2,
		.pPoolSizes = sz,
	};
	return d->CreateDescriptorPool(d->dev, &ci, NULL, out);
}

void hi_dpool_destroy(hi_device *d, VkDescriptorPool p) { d->DestroyDescriptorPool(d->dev, p, NULL); }

VkResult hi_dpool_reset(hi_device *d, VkDescriptorPool p) { return d->ResetDescriptorPool(d->dev, p, 0); }

VkResult hi_dispatch(hi_device *d, hi_cmds *c, VkDescriptorPool pool, const hi_kernel *k, uint32_t gx, uint32_t gy,
		     uint32_t gz) {
	VkDescriptorSet set = VK_NULL_HANDLE;
	if (k->nbufs) {
		VkDescriptorSetAllocateInfo ai = {
			.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
			.descriptorPool = pool,
			.descriptorSetCount = 1,
			.pSetLayouts = &k->set_layout,
		};
		VkResult r = d->AllocateDescriptorSets(d->dev, &ai, &set);
		if (r != VK_SUCCESS)
			return r;
		VkDescriptorBufferInfo bi[HI_MAX_BINDINGS];
		VkBufferView views[HI_MAX_BINDINGS];
		VkWriteDescriptorSet w[HI_MAX_BINDINGS];
		for (uint32_t i = 0; i < k->nbufs; i++) {
			w[i] = (VkWriteDescriptorSet){
				.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
				.dstSet = set,
				.dstBinding = i,
				.descriptorCount = 1,
			};
			if (!((k->texels >> i) & 1)) {
				bi[i] = (VkDescriptorBufferInfo){.buffer = c->bufs[i], .offset = c->offs[i], .range = c->sizes[i]};
				w[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
				w[i].pBufferInfo = &bi[i];
				continue;
			}
			if (c->nviews == c->capviews) {
				uint32_t cap = c->capviews ? 2 * c->capviews : 64;
				VkBufferView *v = realloc(c->views, cap * sizeof *v);
				if (!v)
					return VK_ERROR_OUT_OF_HOST_MEMORY;
				c->views = v;
				c->capviews = cap;
			}
			VkBufferViewCreateInfo vi = {
				.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
				.buffer = c->bufs[i],
				.format = VK_FORMAT_R32G32B32A32_UINT,
				.offset = c->offs[i],
				.range = c->sizes[i],
			};
			VkResult r = d->CreateBufferView(d->dev, &vi, NULL, &views[i]);
			if (r != VK_SUCCESS)
				return r;
			c->views[c->nviews++] = views[i];
			w[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
			w[i].pTexelBufferView = &views[i];
		}
		d->UpdateDescriptorSets(d->dev, k->nbufs, w, 0, NULL);
	}
	d->CmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, k->pipeline);
	if (set)
		d->CmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, k->layout, 0, 1, &set, 0, NULL);
	if (k->push_bytes)
		d->CmdPushConstants(c->cb, k->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, k->push_bytes, c->push);
	d->CmdDispatch(c->cb, gx, gy, gz);
	return VK_SUCCESS;
}

// Stages and accesses a barrier may name depend on the queue: a
// transfer-only queue knows no shader stage.
static void barrier(hi_device *d, hi_cmds *c, int transfer_only, int to_host) {
	VkPipelineStageFlags src = VK_PIPELINE_STAGE_TRANSFER_BIT;
	VkAccessFlags srca = VK_ACCESS_TRANSFER_WRITE_BIT;
	VkPipelineStageFlags dst = VK_PIPELINE_STAGE_TRANSFER_BIT;
	VkAccessFlags dsta = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
	if (!transfer_only) {
		src |= VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
		srca |= VK_ACCESS_SHADER_WRITE_BIT;
		dst |= VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
		dsta |= VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
	}
	if (to_host) {
		dst = VK_PIPELINE_STAGE_HOST_BIT;
		dsta = VK_ACCESS_HOST_READ_BIT;
	}
	VkMemoryBarrier mb = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = srca,
		.dstAccessMask = dsta,
	};
	d->CmdPipelineBarrier(c->cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

void hi_barrier(hi_device *d, hi_cmds *c) { barrier(d, c, c->transfer_only, 0); }

void hi_host_barrier(hi_device *d, hi_cmds *c) { barrier(d, c, c->transfer_only, 1); }

void hi_copy(hi_device *d, hi_cmds *c, VkBuffer src, uint64_t src_off, VkBuffer dst, uint64_t dst_off, uint64_t size) {
	VkBufferCopy r = {.srcOffset = src_off, .dstOffset = dst_off, .size = size};
	d->CmdCopyBuffer(c->cb, src, dst, 1, &r);
}

void hi_fill(hi_device *d, hi_cmds *c, VkBuffer dst, uint64_t off, uint64_t size, uint32_t v) {
	d->CmdFillBuffer(c->cb, dst, off, size, v);
}

// ---- timestamps ---------------------------------------------------------------

VkResult hi_qpool_create(hi_device *d, uint32_t n, VkQueryPool *out) {
	VkQueryPoolCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
		.queryType = VK_QUERY_TYPE_TIMESTAMP,
		.queryCount = n,
	};
	return d->CreateQueryPool(d->dev, &ci, NULL, out);
}

void hi_qpool_destroy(hi_device *d, VkQueryPool p) { d->DestroyQueryPool(d->dev, p, NULL); }

void hi_timestamp(hi_device *d, hi_cmds *c, VkQueryPool p, uint32_t i) {
	// Each replay must find the query reset; resetting right before the
	// write keeps a recorded buffer replayable without host work. Transfer
	// queues cannot reset queries: the host does it before each submit.
	if (!c->transfer_only)
		d->CmdResetQueryPool(c->cb, p, i, 1);
	d->CmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p, i);
}

void hi_qpool_host_reset(hi_device *d, VkQueryPool p, uint32_t n) { d->ResetQueryPool(d->dev, p, 0, n); }

VkResult hi_qpool_results(hi_device *d, VkQueryPool p, uint32_t n, uint64_t *out) {
	return d->GetQueryPoolResults(d->dev, p, 0, n, (size_t)n * 8, out, 8,
				      VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
}

// ---- submission and timelines ----------------------------------------------------

hi_queue *hi_queue_new(VkQueue q) {
	hi_queue *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->q = q;
	for (int i = 0; i < HI_MAX_SUBMIT; i++)
		x->stages[i] = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
	return x;
}

void hi_queue_free(hi_queue *q) { free(q); }

VkResult hi_submit(hi_device *d, hi_queue *q, uint32_t ncb, uint32_t nwait, uint32_t nsig) {
	VkTimelineSemaphoreSubmitInfo ts = {
		.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
		.waitSemaphoreValueCount = nwait,
		.pWaitSemaphoreValues = q->wait_val,
		.signalSemaphoreValueCount = nsig,
		.pSignalSemaphoreValues = q->sig_val,
	};
	VkSubmitInfo si = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.pNext = &ts,
		.waitSemaphoreCount = nwait,
		.pWaitSemaphores = q->wait_sem,
		.pWaitDstStageMask = q->stages,
		.commandBufferCount = ncb,
		.pCommandBuffers = q->cbs,
		.signalSemaphoreCount = nsig,
		.pSignalSemaphores = q->sig_sem,
	};
	return d->QueueSubmit(q->q, 1, &si, VK_NULL_HANDLE);
}

VkResult hi_submit_batch(hi_device *d, VkQueue q, uint32_t n, const uint32_t *ncb, const VkCommandBuffer *cbs,
	const uint32_t *nwait, const VkSemaphore *wsem, const uint64_t *wval,
	const uint32_t *nsig, const VkSemaphore *ssem, const uint64_t *sval) {
	uint32_t waits = 0;
	for (uint32_t i = 0; i < n; i++)
		waits += nwait[i];
	VkSubmitInfo *si = calloc(n ? n : 1, sizeof *si);
	VkTimelineSemaphoreSubmitInfo *ts = calloc(n ? n : 1, sizeof *ts);
	VkPipelineStageFlags *stages = calloc(waits ? waits : 1, sizeof *stages);
	if (!si || !ts || !stages) {
		free(si);
		free(ts);
		free(stages);
		return VK_ERROR_OUT_OF_HOST_MEMORY;
	}
	for (uint32_t i = 0; i < waits; i++)
		stages[i] = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
	uint32_t c = 0, w = 0, s = 0;
	for (uint32_t i = 0; i < n; i++) {
		ts[i] = (VkTimelineSemaphoreSubmitInfo){
			.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
			.waitSemaphoreValueCount = nwait[i],
			.pWaitSemaphoreValues = wval + w,
			.signalSemaphoreValueCount = nsig[i],
			.pSignalSemaphoreValues = sval + s,
		};
		si[i] = (VkSubmitInfo){
			.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
			.pNext = &ts[i],
			.waitSemaphoreCount = nwait[i],
			.pWaitSemaphores = wsem + w,
			.pWaitDstStageMask = stages + w,
			.commandBufferCount = ncb[i],
			.pCommandBuffers = cbs + c,
			.signalSemaphoreCount = nsig[i],
			.pSignalSemaphores = ssem + s,
		};
		c += ncb[i];
		w += nwait[i];
		s += nsig[i];
	}
	VkResult r = d->QueueSubmit(q, n, si, VK_NULL_HANDLE);
	free(si);
	free(ts);
	free(stages);
	return r;
}

VkResult hi_timeline_create(hi_device *d, uint64_t initial, VkSemaphore *out) {
	VkSemaphoreTypeCreateInfo tci = {
		.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
		.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
		.initialValue = initial,
	};
	VkSemaphoreCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &tci};
	return d->CreateSemaphore(d->dev, &ci, NULL, out);
}

void hi_timeline_destroy(hi_device *d, VkSemaphore s) { d->DestroySemaphore(d->dev, s, NULL); }

VkResult hi_timeline_value(hi_device *d, VkSemaphore s, uint64_t *v) {
	return d->GetSemaphoreCounterValue(d->dev, s, v);
}

VkResult hi_timeline_wait(hi_device *d, VkSemaphore s, uint64_t v, uint64_t timeout_ns) {
	VkSemaphoreWaitInfo wi = {
		.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
		.semaphoreCount = 1,
		.pSemaphores = &s,
		.pValues = &v,
	};
	return d->WaitSemaphores(d->dev, &wi, timeout_ns);
}

VkResult hi_timeline_signal(hi_device *d, VkSemaphore s, uint64_t v) {
	VkSemaphoreSignalInfo si = {
		.sType = VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO,
		.semaphore = s,
		.value = v,
	};
	return d->SignalSemaphore(d->dev, &si);
}
