package vk_test

import (
	"strings"
	"testing"

	"headinfer/shaders"
	"headinfer/vk"
)

// TestDispatch runs the axpy kernel with spec and push constants over a
// size that is not a multiple of the workgroup size.
func TestDispatch(t *testing.T) {
	d := testDevice(t)
	r := vkNewRand(t)
	const n = 1000
	for _, tc := range []struct{ local, mul uint32 }{{64, 3}, {32, 1}, {128, 7}} {
		k := axpyKernel(t, d, tc.local, tc.mul)
		x := vkRandFloats(r, n)
		add := r.Float32()
		xb := vkAlloc(t, d, vk.DeviceLocal, 4*n)
		yb := vkAlloc(t, d, vk.DeviceLocal, 4*n+4)
		vkWrite(t, d, xb.All(), vkF32Bytes(x))
		vkPoison(t, d, yb.All())
		c := vkCommands(t, d)
		c.Dispatch(k, [3]uint32{(n + tc.local - 1) / tc.local, 1, 1}, vkPush(uint32(n), add), xb.All(), yb.All())
		if err := c.End(); err != nil {
			t.Fatal(err)
		}
		if err := d.Run(c); err != nil {
			t.Fatal(err)
		}
		got := vkBytesF32(vkRead(t, d, yb.All()))
		want, scale := axpyRef(x, float32(tc.mul), add)
		vkCloseF32(t, got[:n], want, scale)
		if g := got[n]; g == g {
			t.Fatalf("element past n was written: %v", g)
		}
	}
}

// TestKernelCache checks that the same name and spec give the same kernel
// and different spec constants a different one.
func TestKernelCache(t *testing.T) {
	d := testDevice(t)
	a, b, c := axpyKernel(t, d, 64, 2), axpyKernel(t, d, 64, 2), axpyKernel(t, d, 64, 5)
	if a != b {
		t.Error("same name and spec built twice")
	}
	if a == c {
		t.Error("different spec constants share a kernel")
	}
	if _, err := d.Kernel(vk.KernelSpec{Name: "bad", SPIRV: []byte("not spir-v at all...."), Buffers: 1}); err == nil {
		t.Error("garbage SPIR-V accepted")
	}
	if _, err := d.Kernel(vk.KernelSpec{Name: "bad push", SPIRV: shaders.MustSPIRV("vk_test_axpy"), Buffers: 2, PushBytes: 6}); err == nil {
		t.Error("push size 6 accepted")
	}
}

// TestDispatchErrors checks that bad dispatches are reported by End and
// that such commands cannot run.
func TestDispatchErrors(t *testing.T) {
	d := testDevice(t)
	k := axpyKernel(t, d, 64, 1)
	info := d.Info()
	small := vkAlloc(t, d, vk.DeviceLocal, 1024)
	big := vkAlloc(t, d, vk.DeviceLocal, info.MaxStorageBufferRange+1024)
	cases := []struct {
		name, want string
		rec        func(c *vk.Commands)
	}{
		{"range over maxStorageBufferRange", "maxStorageBufferRange", func(c *vk.Commands) {
			c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(1), float32(0)), big.Range(0, info.MaxStorageBufferRange+4), small.All())
		}},
		{"range outside buffer", "outside buffer", func(c *vk.Commands) {
			c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(1), float32(0)), small.Range(512, 1024), small.All())
		}},
		{"too many groups", "workgroups", func(c *vk.Commands) {
			c.Dispatch(k, [3]uint32{info.MaxWorkgroupCount[0] + 1, 1, 1}, vkPush(uint32(1), float32(0)), small.All(), small.All())
		}},
		{"wrong push size", "push-constant", func(c *vk.Commands) {
			c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(1)), small.All(), small.All())
		}},
		{"wrong buffer count", "buffers given", func(c *vk.Commands) {
			c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(1), float32(0)), small.All())
		}},
		{"copy size mismatch", "sizes differ", func(c *vk.Commands) {
			c.Copy(small.Range(0, 8), small.Range(512, 16))
		}},
		{"fill unaligned", "multiples of 4", func(c *vk.Commands) {
			c.Fill(small.Range(2, 8), 0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := vkCommands(t, d)
			tc.rec(c)
			c.Barrier() // later commands are skipped, not recorded
			err := c.End()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("End: %v, want an error mentioning %q", err, tc.want)
			}
			if err := d.Run(c); err == nil {
				t.Fatal("Run of failed commands succeeded")
			}
		})
	}
}

// TestTexelBinding reads a sub-range of a buffer as a uniform texel buffer:
// texels inside the view come back as stored, those past it as zero, and a
// range that is not whole texels is refused.
func TestTexelBinding(t *testing.T) {
	d := testDevice(t)
	k, err := d.Kernel(vk.KernelSpec{Name: "vk_test_texel", SPIRV: shaders.MustSPIRV("vk_test_texel"), Buffers: 2, PushBytes: 4, Texels: 1})
	if err != nil {
		t.Fatal(err)
	}
	const texels, off, n = 5, 2, 8 // view texels off..off+texels-1 of the buffer, read n
	src := make([]byte, 16*(texels+off+2))
	for i := range src {
		src[i] = byte(7*i + 1)
	}
	sb := vkAlloc(t, d, vk.DeviceLocal, uint64(len(src)))
	yb := vkAlloc(t, d, vk.DeviceLocal, 16*n)
	vkWrite(t, d, sb.All(), src)
	vkPoison(t, d, yb.All())
	c := vkCommands(t, d)
	c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(n)), sb.Range(16*off, 16*texels), yb.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	got := vkRead(t, d, yb.All())
	for i := range 16 * n {
		want := byte(0)
		if i < 16*texels {
			want = src[16*off+i]
		}
		if got[i] != want {
			t.Fatalf("byte %d (texel %d): got %#x, want %#x", i, i/16, got[i], want)
		}
	}

	bad := vkCommands(t, d)
	bad.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(n)), sb.Range(16, 40), yb.All())
	if err := bad.End(); err == nil || !strings.Contains(err.Error(), "multiple of 16") {
		t.Fatalf("a 40-byte texel range: got %v, want an error about whole texels", err)
	}
}
