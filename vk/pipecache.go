package vk

/*
#include <stdlib.h>
#include "vkc.h"
*/
import "C"

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"
)

// pipelineCache keeps compiled pipelines on disk between runs, in a file
// keyed by the device and driver so that a driver update starts afresh.
type pipelineCache struct {
	d      *Device
	c      C.VkPipelineCache
	path   string
	loaded int  // bytes of cache data accepted at open
	dirty  bool // kernels were built since open
}

func (p *pipelineCache) open(d *Device, dir string) error {
	p.d = d
	if dir == "" {
		if base, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(base, "headinfer")
		}
	}
	r := &d.phys.raw
	if dir != "" {
		uuid := C.GoBytes(unsafe.Pointer(&r.cache_uuid[0]), C.VK_UUID_SIZE)
		p.path = filepath.Join(dir, fmt.Sprintf("pipelines-%04x-%04x-%08x-%x.bin",
			uint32(r.vendor_id), uint32(r.device_id), uint32(r.driver_version), uuid))
	}
	data := p.read()
	if len(data) > 0 {
		ptr := C.CBytes(data)
		defer C.free(ptr)
		if C.hi_pcache_create(d.dev, ptr, C.size_t(len(data)), &p.c) == C.VK_SUCCESS {
			p.loaded = len(data)
			return nil
		}
	}
	return result(C.hi_pcache_create(d.dev, nil, 0, &p.c), "vkCreatePipelineCache")
}

// read returns the cache file's contents if its header matches this device,
// else nil: a stale or corrupt file is ignored, since some drivers do not
// check the data they are given.
func (p *pipelineCache) read() []byte {
	if p.path == "" {
		return nil
	}
	data, err := os.ReadFile(p.path)
	if err != nil || len(data) < 32 {
		return nil
	}
	r := &p.d.phys.raw
	le := binary.LittleEndian
	uuid := C.GoBytes(unsafe.Pointer(&r.cache_uuid[0]), C.VK_UUID_SIZE)
	hlen := le.Uint32(data[0:])
	if hlen < 32 || int(hlen) > len(data) || le.Uint32(data[4:]) != 1 /* VK_PIPELINE_CACHE_HEADER_VERSION_ONE */ ||
		le.Uint32(data[8:]) != uint32(r.vendor_id) || le.Uint32(data[12:]) != uint32(r.device_id) ||
		!bytes.Equal(data[16:32], uuid) {
		return nil
	}
	return data
}

// save writes the cache atomically (temporary file, then rename) when
// kernels were built since open.
func (p *pipelineCache) save() error {
	if p.c == nil || p.path == "" || !p.dirty {
		return nil
	}
	var n C.size_t
	ptr := C.hi_pcache_data(p.d.dev, p.c, &n)
	if ptr == nil {
		return nil
	}
	data := C.GoBytes(ptr, C.int(n))
	C.free(ptr)
	if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
		return fmt.Errorf("vk: saving pipeline cache: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p.path), ".pipelines-*.tmp")
	if err != nil {
		return fmt.Errorf("vk: saving pipeline cache: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p.path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vk: saving pipeline cache: %w", err)
	}
	p.dirty = false
	return nil
}

func (p *pipelineCache) close() {
	if p.c != nil {
		C.hi_pcache_destroy(p.d.dev, p.c)
		p.c = nil
	}
}
