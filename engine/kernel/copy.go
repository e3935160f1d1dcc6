package kernel

import (
	"fmt"

	"headinfer/shaders"
	"headinfer/vk"
)

// Copy is a plain 16-bytes-per-load buffer copy. The engine moves data with
// Commands.Copy; this kernel exists to measure the bandwidth a compute
// shader reaches on the device, the yardstick for the matrix kernels.
type Copy struct {
	d     *vk.Device
	kern  *vk.Kernel
	wg    int    // threads per workgroup
	per   int    // uvec4 per thread
	limit uint64 // when nonzero, a binding size below the device's, so tests can force splitting
	align uint64 // when above the device's, the binding offset alignment used, so tests see nonzero offsets
}

// NewCopy prepares the copy kernel.
func NewCopy(d *vk.Device) (*Copy, error) {
	code, err := shaders.SPIRV("copy")
	if err != nil {
		return nil, err
	}
	k := &Copy{d: d, wg: 256, per: 4}
	k.kern, err = d.Kernel(vk.KernelSpec{
		Name: "copy", SPIRV: code, Buffers: 2, PushBytes: 12,
		Spec: []uint32{uint32(k.wg), uint32(k.per)},
	})
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	return k, nil
}

// Record records dst = src. Both ranges must have the same size, a
// multiple of 16 bytes, and offsets that are multiples of 16. Ranges bigger
// than the largest storage-buffer binding are copied in several dispatches.
func (k *Copy) Record(c *vk.Commands, dst, src vk.Range) error {
	if dst.Buf == nil || src.Buf == nil {
		return fmt.Errorf("copy: range has no buffer")
	}
	if dst.Size != src.Size {
		return fmt.Errorf("copy: destination holds %d bytes, source %d", dst.Size, src.Size)
	}
	if dst.Size == 0 || dst.Size%16 != 0 || dst.Off%16 != 0 || src.Off%16 != 0 {
		return fmt.Errorf("copy: size %d and offsets %d, %d must be nonzero multiples of 16 bytes",
			dst.Size, dst.Off, src.Off)
	}
	info := k.d.Info()
	info.MinStorageBufferOffsetAlignment = max(info.MinStorageBufferOffsetAlignment, k.align)
	lim, err := mvLimits(info, k.limit, "copy")
	if err != nil {
		return err
	}
	chunk := lim.span - lim.span%16
	if byGroups := uint64(info.MaxWorkgroupCount[0]) * uint64(16*k.wg*k.per); byGroups < chunk {
		chunk = byGroups
	}
	for off := uint64(0); off < dst.Size; off += chunk {
		n := min(chunk, dst.Size-off)
		sr, soff := mvBind(info, src, off, n)
		dr, doff := mvBind(info, dst, off, n)
		c.Dispatch(k.kern, [3]uint32{groups(int(n/16), k.wg*k.per), 1, 1},
			push(uint32(n/16), uint32(soff/16), uint32(doff/16)), sr, dr)
	}
	return nil
}
