package vk

/*
#include <stdlib.h>
#include "vkc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"
)

// DeviceType is the kind of a physical device, in the order Choose prefers.
type DeviceType int

// Device types, from most to least preferred.
const (
	Discrete DeviceType = iota
	Integrated
	Virtual
	CPU
	Other
)

// String gives "discrete", "integrated", "virtual", "cpu" or "other".
func (t DeviceType) String() string {
	switch t {
	case Discrete:
		return "discrete"
	case Integrated:
		return "integrated"
	case Virtual:
		return "virtual"
	case CPU:
		return "cpu"
	}
	return "other"
}

// Heap is one Vulkan memory heap.
type Heap struct {
	Size        uint64
	DeviceLocal bool
	// Budget and Usage come from VK_EXT_memory_budget at the time of the
	// query; both are 0 when the extension is absent.
	Budget, Usage uint64
}

// DeviceInfo describes a physical device: what Choose ranks and what
// kernels need to know to pick workgroup sizes and code paths.
type DeviceInfo struct {
	Index                           int // Vulkan enumeration index
	Name, Driver, DriverInfo        string
	Type                            DeviceType
	APIVersion                      string // like "1.3.230"
	VendorID, DeviceID              uint32
	Heaps                           []Heap
	MaxStorageBufferRange           uint64
	MaxAllocationSize               uint64
	MinStorageBufferOffsetAlignment uint64
	MaxTexelBufferElements          uint64 // texels a texel-buffer binding may cover
	MinTexelBufferOffsetAlignment   uint64
	MaxSharedMemory                 uint32 // maxComputeSharedMemorySize
	MaxWorkgroupInvocations         uint32
	MaxWorkgroupCount               [3]uint32
	SubgroupSize                    uint32
	SubgroupArithmetic              bool // subgroupAdd/Max usable in compute shaders
	Storage16, Float16, Int8        bool
	Storage8, Timeline              bool
	MemoryBudget                    bool    // VK_EXT_memory_budget
	TransferQueue                   bool    // a transfer-only queue family exists
	TimestampPeriod                 float64 // ns per tick; 0 when compute timestamps are unsupported
}

// physical is a physical device with what Open needs beyond DeviceInfo.
type physical struct {
	info DeviceInfo
	raw  C.hi_devinfo
	phys C.VkPhysicalDevice
}

// installHint is the advice given when there is no usable Vulkan.
const installHint = "install the GPU vendor's Vulkan driver, or `apt-get install mesa-vulkan-drivers libvulkan1` for a CPU fallback"

// load opens the Vulkan loader.
func load() error {
	var buf [512]C.char
	if C.hi_load(&buf[0], C.size_t(len(buf))) != 0 {
		return fmt.Errorf("vk: cannot load the Vulkan loader (%s): %s", C.GoString(&buf[0]), installHint)
	}
	return nil
}

// instanceOptions selects what newInstance enables.
type instanceOptions struct {
	validation bool
}

// newInstance creates a Vulkan 1.2+ instance.
func newInstance(opt instanceOptions) (*C.hi_instance, error) {
	if err := load(); err != nil {
		return nil, err
	}
	ver := C.hi_instance_version()
	if ver < C.VK_API_VERSION_1_2 {
		return nil, fmt.Errorf("vk: the Vulkan loader supports version %s, 1.2 or newer is needed: update libvulkan1 and the driver", versionString(uint32(ver)))
	}
	api := ver
	if api > C.VK_API_VERSION_1_3 {
		api = C.VK_API_VERSION_1_3
	}
	var validation, syncVal, debugUtils C.int
	if opt.validation {
		layer := C.CString("VK_LAYER_KHRONOS_validation")
		defer C.free(unsafe.Pointer(layer))
		if C.hi_layer_present(layer) == 0 {
			return nil, errors.New("vk: validation requested but VK_LAYER_KHRONOS_validation is not installed: `apt-get install vulkan-validationlayers` (or set HEADINFER_VALIDATION=0 for tests)")
		}
		validation = 1
		du := C.CString("VK_EXT_debug_utils")
		defer C.free(unsafe.Pointer(du))
		if C.hi_instance_ext_present(nil, du) == 0 && C.hi_instance_ext_present(layer, du) == 0 {
			return nil, errors.New("vk: validation requested but VK_EXT_debug_utils is missing, so messages cannot be collected")
		}
		debugUtils = 1
		vf := C.CString("VK_EXT_validation_features")
		defer C.free(unsafe.Pointer(vf))
		if C.hi_instance_ext_present(layer, vf) != 0 || C.hi_instance_ext_present(nil, vf) != 0 {
			syncVal = 1
		}
	}
	pe := C.CString("VK_KHR_portability_enumeration")
	defer C.free(unsafe.Pointer(pe))
	portability := C.hi_instance_ext_present(nil, pe)

	var in *C.hi_instance
	r := C.hi_instance_create(C.uint32_t(api), validation, syncVal, debugUtils, portability, &in)
	if r == C.VK_ERROR_INCOMPATIBLE_DRIVER {
		return nil, fmt.Errorf("vk: no Vulkan driver found: %s", installHint)
	}
	if in != nil && r != C.VK_SUCCESS {
		// The instance exists but the debug messenger does not.
		C.hi_instance_destroy(in)
		why := "vkCreateDebugUtilsMessengerEXT is missing"
		if r != C.HI_NO_MESSENGER {
			why = result(r, "vkCreateDebugUtilsMessengerEXT").Error()
		}
		return nil, fmt.Errorf("vk: validation requested but its messages cannot be collected (%s): fix the Vulkan setup or set HEADINFER_VALIDATION=0", why)
	}
	if err := result(r, "vkCreateInstance"); err != nil {
		return nil, err
	}
	return in, nil
}

// physicals lists the instance's physical devices.
func physicals(in *C.hi_instance) ([]physical, error) {
	var n C.uint32_t
	if err := result(C.hi_physical_devices(in, nil, &n), "vkEnumeratePhysicalDevices"); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("vk: no Vulkan device found: %s", installHint)
	}
	handles := make([]C.VkPhysicalDevice, n)
	r := C.hi_physical_devices(in, &handles[0], &n)
	if r != C.VK_SUCCESS && r != C.VK_INCOMPLETE {
		return nil, result(r, "vkEnumeratePhysicalDevices")
	}
	out := make([]physical, n)
	for i := range out {
		p := &out[i]
		p.phys = handles[i]
		C.hi_physical_info(in, p.phys, &p.raw)
		p.info = convertInfo(i, &p.raw)
	}
	return out, nil
}

// convertInfo builds the Go view of a C device description.
func convertInfo(index int, r *C.hi_devinfo) DeviceInfo {
	types := map[C.uint32_t]DeviceType{
		C.VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:   Discrete,
		C.VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: Integrated,
		C.VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:    Virtual,
		C.VK_PHYSICAL_DEVICE_TYPE_CPU:            CPU,
	}
	t, ok := types[r._type]
	if !ok {
		t = Other
	}
	info := DeviceInfo{
		Index:                           index,
		Name:                            C.GoString(&r.name[0]),
		Driver:                          C.GoString(&r.driver_name[0]),
		DriverInfo:                      C.GoString(&r.driver_info[0]),
		Type:                            t,
		APIVersion:                      versionString(uint32(r.api_version)),
		VendorID:                        uint32(r.vendor_id),
		DeviceID:                        uint32(r.device_id),
		MaxStorageBufferRange:           uint64(r.max_storage_range),
		MaxAllocationSize:               uint64(r.max_alloc),
		MinStorageBufferOffsetAlignment: uint64(r.min_storage_align),
		MaxTexelBufferElements:          uint64(r.max_texels),
		MinTexelBufferOffsetAlignment:   uint64(r.min_texel_align),
		MaxSharedMemory:                 uint32(r.max_shared),
		MaxWorkgroupInvocations:         uint32(r.max_invocations),
		MaxWorkgroupCount:               [3]uint32{uint32(r.max_groups[0]), uint32(r.max_groups[1]), uint32(r.max_groups[2])},
		SubgroupSize:                    uint32(r.subgroup_size),
		SubgroupArithmetic:              r.subgroup_arith != 0,
		Storage16:                       r.storage16 != 0,
		Float16:                         r.float16 != 0,
		Int8:                            r.int8 != 0,
		Storage8:                        r.storage8 != 0,
		Timeline:                        r.timeline != 0,
		MemoryBudget:                    r.memory_budget != 0,
		TransferQueue:                   r.transfer_family >= 0,
		TimestampPeriod:                 float64(r.timestamp_period),
	}
	for h := 0; h < int(r.heap_count); h++ {
		info.Heaps = append(info.Heaps, Heap{
			Size:        uint64(r.heap_size[h]),
			DeviceLocal: r.heap_flags[h]&C.VK_MEMORY_HEAP_DEVICE_LOCAL_BIT != 0,
			Budget:      uint64(r.heap_budget[h]),
			Usage:       uint64(r.heap_usage[h]),
		})
	}
	return info
}

// Features names the optional capabilities headinfer uses, those the
// device has and those it lacks.
func (d DeviceInfo) Features() (have, lack []string) {
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"16-bit storage", d.Storage16}, {"8-bit storage", d.Storage8}, {"float16", d.Float16}, {"int8", d.Int8},
		{"subgroup arithmetic", d.SubgroupArithmetic}, {"timeline semaphores", d.Timeline},
		{"memory budget", d.MemoryBudget}, {"transfer queue", d.TransferQueue}, {"timestamps", d.TimestampPeriod > 0},
	} {
		if f.ok {
			have = append(have, f.name)
		} else {
			lack = append(lack, f.name)
		}
	}
	return have, lack
}

func versionString(v uint32) string {
	return fmt.Sprintf("%d.%d.%d", v>>22&0x7f, v>>12&0x3ff, v&0xfff)
}

// Devices lists every physical device without creating a logical device.
func Devices() ([]DeviceInfo, error) {
	in, err := newInstance(instanceOptions{})
	if err != nil {
		return nil, err
	}
	defer C.hi_instance_destroy(in)
	ps, err := physicals(in)
	if err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, len(ps))
	for i := range ps {
		out[i] = ps[i].info
	}
	return out, nil
}

// Choose returns the index into devs of the device sel names: "" picks by
// type (discrete > integrated > virtual > CPU, usable devices first,
// then lowest index); a decimal number is a Vulkan index; anything else,
// or a number that is no index, is a case-insensitive substring of the
// device name (the best-ranked match wins).
func Choose(devs []DeviceInfo, sel string) (int, error) {
	if len(devs) == 0 {
		return -1, fmt.Errorf("vk: no Vulkan device found: %s", installHint)
	}
	sel = strings.TrimSpace(sel)
	best := func(ok func(*DeviceInfo) bool) int {
		b := -1
		for i := range devs {
			if !ok(&devs[i]) {
				continue
			}
			if b < 0 || rank(&devs[i]) < rank(&devs[b]) {
				b = i
			}
		}
		return b
	}
	if sel == "" {
		return best(func(*DeviceInfo) bool { return true }), nil
	}
	n, numErr := strconv.Atoi(sel)
	if numErr == nil {
		for i := range devs {
			if devs[i].Index == n {
				return i, nil
			}
		}
	}
	// A number that is no index may still be part of a name ("3060").
	low := strings.ToLower(sel)
	b := best(func(d *DeviceInfo) bool { return strings.Contains(strings.ToLower(d.Name), low) })
	if b < 0 {
		if numErr == nil {
			return -1, fmt.Errorf("vk: no device with index %d; devices: %s", n, listDevices(devs))
		}
		return -1, fmt.Errorf("vk: no device name contains %q; devices: %s", sel, listDevices(devs))
	}
	return b, nil
}

// rank orders devices for the default choice: usable before unusable,
// then by type.
func rank(d *DeviceInfo) int {
	r := int(d.Type)
	if !d.Storage16 || !d.Timeline {
		r += 100
	}
	return r
}

func listDevices(devs []DeviceInfo) string {
	var s []string
	for _, d := range devs {
		s = append(s, fmt.Sprintf("%d: %s (%s)", d.Index, d.Name, d.Type))
	}
	return strings.Join(s, "; ")
}
