// Package vk is the engine's only contact with Vulkan: it picks a device,
// allocates and accounts memory, builds compute kernels from SPIR-V, records
// command buffers for replay and submits them with timeline semaphores.
//
// The Vulkan calls go through a small C layer (vkc.h, vkc.c) that takes
// plain C structs and scalars and loads libvulkan at run time, so that a
// machine without Vulkan gets an error that says what to install.
package vk

/*
#cgo CFLAGS: -O2 -Wall -Wno-unused-function
#cgo LDFLAGS: -ldl -lpthread
#include <stdlib.h>
#include "vkc.h"
*/
import "C"

import "fmt"

// result turns a VkResult into an error naming the operation, or nil on
// success.
func result(r C.VkResult, op string) error {
	if r == C.VK_SUCCESS {
		return nil
	}
	return &Error{Op: op, Code: int(r)}
}

// Error is a failed Vulkan call.
type Error struct {
	Op   string // what package vk was doing
	Code int    // the VkResult
}

// Error names the operation and the result.
func (e *Error) Error() string {
	return fmt.Sprintf("vk: %s: %s", e.Op, resultName(e.Code))
}

// resultName gives the VkResult enumerant for the codes a compute program
// can meet.
func resultName(r int) string {
	switch C.VkResult(r) {
	case C.VK_SUCCESS:
		return "VK_SUCCESS"
	case C.VK_NOT_READY:
		return "VK_NOT_READY"
	case C.VK_TIMEOUT:
		return "VK_TIMEOUT"
	case C.VK_INCOMPLETE:
		return "VK_INCOMPLETE"
	case C.VK_ERROR_OUT_OF_HOST_MEMORY:
		return "VK_ERROR_OUT_OF_HOST_MEMORY (host memory exhausted)"
	case C.VK_ERROR_OUT_OF_DEVICE_MEMORY:
		return "VK_ERROR_OUT_OF_DEVICE_MEMORY (device memory exhausted)"
	case C.VK_ERROR_INITIALIZATION_FAILED:
		return "VK_ERROR_INITIALIZATION_FAILED"
	case C.VK_ERROR_DEVICE_LOST:
		return "VK_ERROR_DEVICE_LOST (the driver reset the device; a kernel may have run too long or faulted)"
	case C.VK_ERROR_MEMORY_MAP_FAILED:
		return "VK_ERROR_MEMORY_MAP_FAILED"
	case C.VK_ERROR_LAYER_NOT_PRESENT:
		return "VK_ERROR_LAYER_NOT_PRESENT"
	case C.VK_ERROR_EXTENSION_NOT_PRESENT:
		return "VK_ERROR_EXTENSION_NOT_PRESENT"
	case C.VK_ERROR_FEATURE_NOT_PRESENT:
		return "VK_ERROR_FEATURE_NOT_PRESENT"
	case C.VK_ERROR_INCOMPATIBLE_DRIVER:
		return "VK_ERROR_INCOMPATIBLE_DRIVER"
	case C.VK_ERROR_TOO_MANY_OBJECTS:
		return "VK_ERROR_TOO_MANY_OBJECTS"
	case C.VK_ERROR_FRAGMENTED_POOL:
		return "VK_ERROR_FRAGMENTED_POOL"
	case C.VK_ERROR_OUT_OF_POOL_MEMORY:
		return "VK_ERROR_OUT_OF_POOL_MEMORY"
	case C.VK_ERROR_INVALID_SHADER_NV:
		return "VK_ERROR_INVALID_SHADER_NV (the driver rejected the SPIR-V)"
	}
	return fmt.Sprintf("VkResult %d", r)
}

// isOutOfMemory reports whether err is a Vulkan out-of-memory result.
func isOutOfMemory(err error) bool {
	e, ok := err.(*Error)
	return ok && (C.VkResult(e.Code) == C.VK_ERROR_OUT_OF_DEVICE_MEMORY || C.VkResult(e.Code) == C.VK_ERROR_OUT_OF_HOST_MEMORY)
}
