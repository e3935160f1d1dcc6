// Thin C layer between package vk and the Vulkan loader.
//
// The loader is opened with dlopen so that a machine without Vulkan gets a
// clear error from Go instead of a dynamic-link failure at start-up. Every
// function takes plain C structs and scalars; nothing here keeps a pointer
// to Go memory after it returns.
#ifndef HEADINFER_VKC_H
#define HEADINFER_VKC_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#define HI_MAX_HEAPS 16
#define HI_MAX_TYPES 32
#define HI_MAX_BINDINGS 32
#define HI_MAX_PUSH 128
#define HI_MAX_SUBMIT 256

// Instance-level entry points, loaded per instance.
#define HI_INSTANCE_FUNCS(X)                     \
	X(DestroyInstance)                           \
	X(EnumeratePhysicalDevices)                  \
	X(GetPhysicalDeviceProperties)               \
	X(GetPhysicalDeviceProperties2)              \
	X(GetPhysicalDeviceFeatures2)                \
	X(GetPhysicalDeviceMemoryProperties)         \
	X(GetPhysicalDeviceMemoryProperties2)        \
	X(GetPhysicalDeviceQueueFamilyProperties)    \
	X(EnumerateDeviceExtensionProperties)        \
	X(CreateDevice)                              \
	X(GetDeviceProcAddr)

// Device-level entry points, loaded through vkGetDeviceProcAddr so that the
// hot path skips the loader's dispatch trampoline.
#define HI_DEVICE_FUNCS(X)              \
	X(DestroyDevice)                    \
	X(GetDeviceQueue)                   \
	X(DeviceWaitIdle)                   \
	X(CreateBuffer)                     \
	X(CreateBufferView)                 \
	X(DestroyBufferView)                \
	X(DestroyBuffer)                    \
	X(GetBufferMemoryRequirements)      \
	X(AllocateMemory)                   \
	X(FreeMemory)                       \
	X(BindBufferMemory)                 \
	X(MapMemory)                        \
	X(CreateShaderModule)               \
	X(DestroyShaderModule)              \
	X(CreateDescriptorSetLayout)        \
	X(DestroyDescriptorSetLayout)       \
	X(CreatePipelineLayout)             \
	X(DestroyPipelineLayout)            \
	X(CreateComputePipelines)           \
	X(DestroyPipeline)                  \
	X(CreatePipelineCache)              \
	X(DestroyPipelineCache)             \
	X(GetPipelineCacheData)             \
	X(CreateDescriptorPool)             \
	X(DestroyDescriptorPool)            \
	X(ResetDescriptorPool)              \
	X(AllocateDescriptorSets)           \
	X(UpdateDescriptorSets)             \
	X(CreateCommandPool)                \
	X(DestroyCommandPool)               \
	X(AllocateCommandBuffers)           \
	X(ResetCommandPool)                 \
	X(BeginCommandBuffer)               \
	X(EndCommandBuffer)                 \
	X(CmdBindPipeline)                  \
	X(CmdBindDescriptorSets)            \
	X(CmdPushConstants)                 \
	X(CmdDispatch)                      \
	X(CmdPipelineBarrier)               \
	X(CmdCopyBuffer)                    \
	X(CmdFillBuffer)                    \
	X(CmdResetQueryPool)                \
	X(CmdWriteTimestamp)                \
	X(CreateQueryPool)                  \
	X(DestroyQueryPool)                 \
	X(GetQueryPoolResults)              \
	X(ResetQueryPool)                   \
	X(QueueSubmit)                      \
	X(CreateSemaphore)                  \
	X(DestroySemaphore)                 \
	X(GetSemaphoreCounterValue)         \
	X(WaitSemaphores)                   \
	X(SignalSemaphore)

#define HI_MEMBER(name) PFN_vk##name name;

// A validation message buffer: the debug messenger callback appends to it
// from any driver thread; Go drains it.
typedef struct {
	pthread_mutex_t mu;
	char *buf;
	size_t len, cap;
	size_t dropped;
} hi_msgs;

typedef struct {
	VkInstance inst;
	uint32_t api_version;
	VkDebugUtilsMessengerEXT messenger;
	PFN_vkDestroyDebugUtilsMessengerEXT DestroyDebugUtilsMessengerEXT;
	hi_msgs *msgs;
	HI_INSTANCE_FUNCS(HI_MEMBER)
} hi_instance;

// What package vk needs to know about one physical device.
typedef struct {
	char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
	char driver_name[VK_MAX_DRIVER_NAME_SIZE];
	char driver_info[VK_MAX_DRIVER_INFO_SIZE];
	uint32_t type; // VkPhysicalDeviceType
	uint32_t api_version, driver_version, vendor_id, device_id;
	uint8_t cache_uuid[VK_UUID_SIZE];

	uint32_t heap_count;
	uint64_t heap_size[HI_MAX_HEAPS];
	uint32_t heap_flags[HI_MAX_HEAPS];
	uint64_t heap_budget[HI_MAX_HEAPS];
	uint64_t heap_usage[HI_MAX_HEAPS];
	uint32_t type_count;
	uint32_t type_flags[HI_MAX_TYPES];
	uint32_t type_heap[HI_MAX_TYPES];

	uint64_t max_storage_range, max_alloc, min_storage_align;
	uint64_t max_texels, min_texel_align;
	uint32_t max_shared, max_invocations, max_groups[3];
	uint32_t max_push, max_bound_sets;
	float timestamp_period;
	uint32_t subgroup_size, subgroup_arith;

	uint32_t storage16, float16, int8, storage8, timeline, int16;
	uint32_t host_query_reset;
	uint32_t memory_budget, portability_subset;

	int32_t compute_family, transfer_family; // transfer_family -1: none
	uint32_t compute_ts_bits, transfer_ts_bits;
} hi_devinfo;

typedef struct {
	VkPhysicalDevice phys;
	VkDevice dev;
	VkQueue compute, transfer;
	HI_DEVICE_FUNCS(HI_MEMBER)
} hi_device;

// One memory block: a VkBuffer bound to its own allocation.
typedef struct {
	VkBuffer buf;
	VkDeviceMemory mem;
	void *mapped;
} hi_block;

// A compiled kernel.
typedef struct {
	VkShaderModule module;
	VkDescriptorSetLayout set_layout;
	VkPipelineLayout layout;
	VkPipeline pipeline;
	uint32_t nbufs, push_bytes;
	uint32_t texels; // bitmask: bindings that are uniform texel buffers (RGBA32UI)
} hi_kernel;

// A command buffer with its own pool and the scratch space one Dispatch
// fills before calling hi_dispatch, so recording needs no Go allocation.
typedef struct {
	VkCommandPool pool;
	VkCommandBuffer cb;
	VkBuffer bufs[HI_MAX_BINDINGS];
	uint64_t offs[HI_MAX_BINDINGS];
	uint64_t sizes[HI_MAX_BINDINGS];
	uint8_t push[HI_MAX_PUSH];
	int transfer_only; // recorded for a transfer-only queue family
	// Buffer views of texel bindings, alive until the next reset.
	VkBufferView *views;
	uint32_t nviews, capviews;
} hi_cmds;

// A queue with the scratch space of one submission; callers hold the
// queue's mutex while they fill it and call hi_submit.
typedef struct {
	VkQueue q;
	VkPipelineStageFlags stages[HI_MAX_SUBMIT];
	VkCommandBuffer cbs[HI_MAX_SUBMIT];
	VkSemaphore wait_sem[HI_MAX_SUBMIT];
	uint64_t wait_val[HI_MAX_SUBMIT];
	VkSemaphore sig_sem[HI_MAX_SUBMIT];
	uint64_t sig_val[HI_MAX_SUBMIT];
} hi_queue;

int hi_load(char *err, size_t errlen);
uint32_t hi_instance_version(void);
int hi_layer_present(const char *layer);
int hi_instance_ext_present(const char *layer, const char *ext);
// hi_instance_create returns HI_NO_MESSENGER, or the error of
// vkCreateDebugUtilsMessengerEXT, when validation with debug utils was
// asked for and the messenger could not be made; *out is then set and must
// be destroyed.
#define HI_NO_MESSENGER ((VkResult)-1000999000)
VkResult hi_instance_create(uint32_t api, int validation, int sync_validation, int debug_utils, int portability, hi_instance **out);
void hi_instance_destroy(hi_instance *in);
char *hi_messages_drain(hi_instance *in);
void hi_messages_free(char *s);
VkResult hi_physical_devices(hi_instance *in, VkPhysicalDevice *out, uint32_t *count);
void hi_physical_info(hi_instance *in, VkPhysicalDevice p, hi_devinfo *o);
void hi_memory_budget(hi_instance *in, VkPhysicalDevice p, uint64_t *budget, uint64_t *usage, uint32_t n);

VkResult hi_device_create(hi_instance *in, VkPhysicalDevice p, const hi_devinfo *info, hi_device **out);
void hi_device_destroy(hi_device *d);
VkResult hi_device_wait_idle(hi_device *d);
VkResult hi_buffer_type_bits(hi_device *d, uint32_t *bits);

VkResult hi_block_create(hi_device *d, uint64_t size, uint32_t type, int map, hi_block *out);
void hi_block_destroy(hi_device *d, hi_block *b);

VkResult hi_pcache_create(hi_device *d, const void *data, size_t len, VkPipelineCache *out);
void *hi_pcache_data(hi_device *d, VkPipelineCache c, size_t *len);
void hi_pcache_destroy(hi_device *d, VkPipelineCache c);

VkResult hi_kernel_create(hi_device *d, VkPipelineCache cache, const uint32_t *code, size_t code_bytes,
			  uint32_t nbufs, uint32_t texels, uint32_t push_bytes, const uint32_t *spec, uint32_t nspec,
			  hi_kernel **out);
void hi_kernel_destroy(hi_device *d, hi_kernel *k);

VkResult hi_cmds_create(hi_device *d, uint32_t family, hi_cmds **out);
void hi_cmds_destroy(hi_device *d, hi_cmds *c);
VkResult hi_cmds_begin(hi_device *d, hi_cmds *c);
VkResult hi_cmds_reset(hi_device *d, hi_cmds *c);
VkResult hi_cmds_end(hi_device *d, hi_cmds *c);

VkResult hi_dpool_create(hi_device *d, uint32_t sets, uint32_t descriptors, VkDescriptorPool *out);
void hi_dpool_destroy(hi_device *d, VkDescriptorPool p);
VkResult hi_dpool_reset(hi_device *d, VkDescriptorPool p);
VkResult hi_dispatch(hi_device *d, hi_cmds *c, VkDescriptorPool pool, const hi_kernel *k, uint32_t gx, uint32_t gy, uint32_t gz);
void hi_barrier(hi_device *d, hi_cmds *c);
void hi_host_barrier(hi_device *d, hi_cmds *c);
void hi_copy(hi_device *d, hi_cmds *c, VkBuffer src, uint64_t src_off, VkBuffer dst, uint64_t dst_off, uint64_t size);
void hi_fill(hi_device *d, hi_cmds *c, VkBuffer dst, uint64_t off, uint64_t size, uint32_t v);

VkResult hi_qpool_create(hi_device *d, uint32_t n, VkQueryPool *out);
void hi_qpool_destroy(hi_device *d, VkQueryPool p);
void hi_timestamp(hi_device *d, hi_cmds *c, VkQueryPool p, uint32_t i);
void hi_qpool_host_reset(hi_device *d, VkQueryPool p, uint32_t n);
VkResult hi_qpool_results(hi_device *d, VkQueryPool p, uint32_t n, uint64_t *out);

hi_queue *hi_queue_new(VkQueue q);
void hi_queue_free(hi_queue *q);
VkResult hi_submit(hi_device *d, hi_queue *q, uint32_t ncb, uint32_t nwait, uint32_t nsig);
// hi_submit_batch submits n submit infos in one vkQueueSubmit. Info i
// takes ncb[i] command buffers, nwait[i] waits and nsig[i] signals, read in
// order from the flat arrays (waits at stage ALL_COMMANDS).
VkResult hi_submit_batch(hi_device *d, VkQueue q, uint32_t n, const uint32_t *ncb, const VkCommandBuffer *cbs,
	const uint32_t *nwait, const VkSemaphore *wsem, const uint64_t *wval,
	const uint32_t *nsig, const VkSemaphore *ssem, const uint64_t *sval);

VkResult hi_timeline_create(hi_device *d, uint64_t initial, VkSemaphore *out);
void hi_timeline_destroy(hi_device *d, VkSemaphore s);
VkResult hi_timeline_value(hi_device *d, VkSemaphore s, uint64_t *v);
VkResult hi_timeline_wait(hi_device *d, VkSemaphore s, uint64_t v, uint64_t timeout_ns);
VkResult hi_timeline_signal(hi_device *d, VkSemaphore s, uint64_t v);

#endif
