package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// KernelSpec describes a compute pipeline.
type KernelSpec struct {
	Name      string   // for errors and the cache key
	SPIRV     []byte   // from shaders.SPIRV(name)
	Buffers   int      // storage buffers at set 0, bindings 0..Buffers-1
	PushBytes int      // push-constant block size, a multiple of 4, at most 128
	Spec      []uint32 // specialization constants, constant_id 0..len-1
	// Texels marks, bit i for binding i, the bindings read as uniform
	// texel buffers of 16-byte R32G32B32A32_UINT texels (a utextureBuffer
	// in GLSL) rather than as storage buffers. CPU devices fetch a texel
	// for every invocation in a few vector instructions, where a storage
	// buffer load is a loop over the invocations.
	Texels uint32
}

// Kernel is a compute pipeline with its layouts. It lives as long as the
// device.
type Kernel struct {
	d    *Device
	c    *C.hi_kernel
	spec KernelSpec
	key  string
}

// Name is the kernel's name with its specialization constants.
func (k *Kernel) Name() string { return k.key }

// Kernel builds the pipeline for spec, or returns the one already built
// for the same Name and Spec.
func (d *Device) Kernel(spec KernelSpec) (*Kernel, error) {
	key := kernelKey(spec)
	d.kmu.Lock()
	defer d.kmu.Unlock()
	if d.kernels == nil {
		return nil, fmt.Errorf("vk: kernel %s: device is closed", key)
	}
	if k, ok := d.kernels[key]; ok {
		if k.spec.Buffers != spec.Buffers || k.spec.PushBytes != spec.PushBytes || k.spec.Texels != spec.Texels {
			return nil, fmt.Errorf("vk: kernel %s requested with %d buffers (texels %#x) and %d push bytes, built with %d (texels %#x) and %d",
				key, spec.Buffers, spec.Texels, spec.PushBytes, k.spec.Buffers, k.spec.Texels, k.spec.PushBytes)
		}
		return k, nil
	}
	if err := d.checkSpec(spec); err != nil {
		return nil, fmt.Errorf("vk: kernel %s: %w", key, err)
	}
	code := make([]uint32, len(spec.SPIRV)/4)
	for i := range code {
		code[i] = binary.LittleEndian.Uint32(spec.SPIRV[4*i:])
	}
	var consts *C.uint32_t
	cs := make([]C.uint32_t, len(spec.Spec))
	for i, v := range spec.Spec {
		cs[i] = C.uint32_t(v)
	}
	if len(cs) > 0 {
		consts = &cs[0]
	}
	var ck *C.hi_kernel
	r := C.hi_kernel_create(d.dev, d.pcache.c, (*C.uint32_t)(&code[0]), C.size_t(4*len(code)),
		C.uint32_t(spec.Buffers), C.uint32_t(spec.Texels), C.uint32_t(spec.PushBytes), consts, C.uint32_t(len(cs)), &ck)
	if err := result(r, "creating kernel "+key); err != nil {
		return nil, err
	}
	spec.SPIRV = nil // not needed after creation; don't pin it
	spec.Spec = append([]uint32(nil), spec.Spec...)
	k := &Kernel{d: d, c: ck, spec: spec, key: key}
	d.kernels[key] = k
	d.pcache.dirty = true
	return k, nil
}

func (d *Device) checkSpec(s KernelSpec) error {
	if len(s.SPIRV) < 20 || len(s.SPIRV)%4 != 0 || binary.LittleEndian.Uint32(s.SPIRV) != 0x07230203 {
		return fmt.Errorf("SPIR-V of %d bytes is not a SPIR-V module", len(s.SPIRV))
	}
	if s.Buffers < 0 || s.Buffers > C.HI_MAX_BINDINGS {
		return fmt.Errorf("%d buffers, at most %d are supported", s.Buffers, C.HI_MAX_BINDINGS)
	}
	if s.Texels>>uint(s.Buffers) != 0 {
		return fmt.Errorf("texel bindings %#x beyond the %d bindings", s.Texels, s.Buffers)
	}
	if s.PushBytes < 0 || s.PushBytes%4 != 0 || s.PushBytes > C.HI_MAX_PUSH || s.PushBytes > int(d.phys.raw.max_push) {
		return fmt.Errorf("push-constant size %d: must be a multiple of 4 and at most %d", s.PushBytes, min(C.HI_MAX_PUSH, int(d.phys.raw.max_push)))
	}
	return nil
}

// kernelKey is Name plus the specialization constants.
func kernelKey(s KernelSpec) string {
	if len(s.Spec) == 0 {
		return s.Name
	}
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteByte('[')
	for i, v := range s.Spec {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(v), 10))
	}
	b.WriteByte(']')
	return b.String()
}
