//go:build window

package window

/*
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <vulkan/vulkan.h>

// Validation messages of the window's instance, collected as the engine's
// vk package collects its own: records separated by the ASCII record
// separator, bounded so that a runaway loop cannot exhaust memory.
#define WIN_MSGS_LIMIT (1u << 20)

static pthread_mutex_t win_mu = PTHREAD_MUTEX_INITIALIZER;
static char *win_buf;
static size_t win_len, win_cap;
static unsigned long win_dropped;
static VkDebugUtilsMessengerEXT win_messenger;
static PFN_vkDestroyDebugUtilsMessengerEXT win_destroy;

static void win_append(const char *sev, const char *id, const char *text) {
	pthread_mutex_lock(&win_mu);
	size_t need = strlen(sev) + strlen(id) + strlen(text) + 8;
	if (win_len + need > WIN_MSGS_LIMIT) {
		win_dropped++;
		pthread_mutex_unlock(&win_mu);
		return;
	}
	if (win_len + need > win_cap) {
		size_t cap = win_cap ? win_cap * 2 : 4096;
		while (cap < win_len + need)
			cap *= 2;
		char *b = realloc(win_buf, cap);
		if (!b) {
			win_dropped++;
			pthread_mutex_unlock(&win_mu);
			return;
		}
		win_buf = b;
		win_cap = cap;
	}
	win_len += (size_t)snprintf(win_buf + win_len, win_cap - win_len, "%s: %s: %s\x1e", sev, id, text);
	pthread_mutex_unlock(&win_mu);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL win_on_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
						     VkDebugUtilsMessageTypeFlagsEXT types,
						     const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
	(void)types;
	(void)user;
	const char *s = (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ? "ERROR" : "WARNING";
	win_append(s, data->pMessageIdName ? data->pMessageIdName : "-", data->pMessage ? data->pMessage : "");
	return VK_FALSE;
}

static VkResult win_messages_start(void *gipa, VkInstance inst) {
	PFN_vkGetInstanceProcAddr get = (PFN_vkGetInstanceProcAddr)gipa;
	PFN_vkCreateDebugUtilsMessengerEXT create =
		(PFN_vkCreateDebugUtilsMessengerEXT)get(inst, "vkCreateDebugUtilsMessengerEXT");
	win_destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)get(inst, "vkDestroyDebugUtilsMessengerEXT");
	if (!create || !win_destroy)
		return VK_ERROR_EXTENSION_NOT_PRESENT;
	VkDebugUtilsMessengerCreateInfoEXT ci = {
		.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
		.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
				   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
		.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
		.pfnUserCallback = win_on_message,
	};
	return create(inst, &ci, NULL, &win_messenger);
}

static void win_messages_stop(VkInstance inst) {
	if (win_messenger && win_destroy)
		win_destroy(inst, win_messenger, NULL);
	win_messenger = VK_NULL_HANDLE;
}

// glfw's, linked from the glfw package: called here rather than through
// its Go wrapper, which hands the surface back as the address of a
// variable that is gone when it returns.
typedef struct GLFWwindow GLFWwindow;
VkResult glfwCreateWindowSurface(VkInstance instance, GLFWwindow *window, const VkAllocationCallbacks *allocator, VkSurfaceKHR *surface);

static VkResult win_create_surface(VkInstance inst, void *window, uint64_t *surface) {
	VkSurfaceKHR s = VK_NULL_HANDLE;
	VkResult r = glfwCreateWindowSurface(inst, (GLFWwindow *)window, NULL, &s);
	*surface = (uint64_t)s;
	return r;
}

// win_messages_drain returns the collected records (to be freed by the
// caller) and how many were dropped, and empties the store.
static char *win_messages_drain(unsigned long *dropped) {
	pthread_mutex_lock(&win_mu);
	char *out = NULL;
	if (win_len > 0) {
		out = malloc(win_len + 1);
		if (out) {
			memcpy(out, win_buf, win_len);
			out[win_len] = 0;
		}
	}
	*dropped = win_dropped;
	win_len = 0;
	win_dropped = 0;
	pthread_mutex_unlock(&win_mu);
	return out;
}
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"
	vk "github.com/vulkan-go/vulkan"
)

// startMessages collects the validation layer's warnings and errors on
// the window's instance.
func startMessages(inst vk.Instance) error {
	r := C.win_messages_start(glfw.GetVulkanGetInstanceProcAddress(), C.VkInstance(unsafe.Pointer(inst)))
	if r != C.VK_SUCCESS {
		return fmt.Errorf("window: validation requested but its messages cannot be collected (VkResult %d)", int(r))
	}
	return nil
}

func stopMessages(inst vk.Instance) { C.win_messages_stop(C.VkInstance(unsafe.Pointer(inst))) }

// createSurface creates the Vulkan surface of w on inst.
func createSurface(inst vk.Instance, w *glfw.Window) (vk.Surface, error) {
	var s C.uint64_t
	if r := C.win_create_surface(C.VkInstance(unsafe.Pointer(inst)), w.Handle(), &s); r != C.VK_SUCCESS {
		return vk.NullSurface, fmt.Errorf("window: no Vulkan surface for the window (VkResult %d)", int(r))
	}
	// A non-dispatchable handle is 64 bits, whatever type wraps it.
	u := uint64(s)
	return *(*vk.Surface)(unsafe.Pointer(&u)), nil
}

// validationMessages returns the messages collected so far and forgets
// them.
func validationMessages() []string {
	var dropped C.ulong
	p := C.win_messages_drain(&dropped)
	var out []string
	if p != nil {
		s := C.GoString(p)
		C.free(unsafe.Pointer(p))
		for _, m := range strings.Split(s, "\x1e") {
			if m != "" {
				out = append(out, m)
			}
		}
	}
	if dropped > 0 {
		out = append(out, fmt.Sprintf("(%d more messages dropped)", uint64(dropped)))
	}
	return out
}
