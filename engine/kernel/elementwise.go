package kernel

import (
	"fmt"
	"math"

	"headinfer/shaders"
	"headinfer/vk"
)

// skWG is the workgroup size of the small kernels (norms, RoPE, element-wise
// ops, embedding, softmax, argmax, KV store): large enough to hide latency
// on a GPU, and a multiple of every subgroup size in use (8, 32, 64).
const skWG = 256

// SwiGLU computes out[i] = silu(gate[i]) · up[i], the gated activation of
// the Llama MLP, over n f32 values.
type SwiGLU struct {
	d         *vk.Device
	k         *vk.Kernel
	maxGroups uint32 // the device limit, lowered by tests to exercise the grid loop
}

// NewSwiGLU prepares the SwiGLU kernel.
func NewSwiGLU(d *vk.Device) (*SwiGLU, error) {
	k, err := skKernel(d, "swiglu", 3, 4)
	if err != nil {
		return nil, err
	}
	return &SwiGLU{d: d, k: k, maxGroups: d.Info().MaxWorkgroupCount[0]}, nil
}

// Record records out = silu(gate) · up over n values. out may be the same
// range as gate or up.
func (s *SwiGLU) Record(c *vk.Commands, gate, up, out vk.Range, n int) error {
	return skElementwise(s.d, c, s.k, s.maxGroups, "swiglu", n, [3]string{"gate", "up", "output"}, [3]vk.Range{gate, up, out})
}

// GEGLU computes out[i] = gelu(gate[i]) · up[i], GELU in its tanh form:
// the gated activation of the Gemma MLP, over n f32 values.
type GEGLU struct {
	d         *vk.Device
	k         *vk.Kernel
	maxGroups uint32
}

// NewGEGLU prepares the GEGLU kernel.
func NewGEGLU(d *vk.Device) (*GEGLU, error) {
	k, err := skKernel(d, "geglu", 3, 4)
	if err != nil {
		return nil, err
	}
	return &GEGLU{d: d, k: k, maxGroups: d.Info().MaxWorkgroupCount[0]}, nil
}

// Record records out = gelu(gate) · up over n values. out may be the same
// range as gate or up.
func (s *GEGLU) Record(c *vk.Commands, gate, up, out vk.Range, n int) error {
	return skElementwise(s.d, c, s.k, s.maxGroups, "geglu", n, [3]string{"gate", "up", "output"}, [3]vk.Range{gate, up, out})
}

// Scale computes y[i] = s·x[i], or with a cap c > 0 the soft-capped
// c·tanh(s·x[i]/c), over n f32 values: Gemma's embedding scale and its
// final logits' cap.
type Scale struct {
	d         *vk.Device
	k         *vk.Kernel
	maxGroups uint32
}

// NewScale prepares the scale kernel.
func NewScale(d *vk.Device) (*Scale, error) {
	k, err := skKernel(d, "scale", 2, 12)
	if err != nil {
		return nil, err
	}
	return &Scale{d: d, k: k, maxGroups: d.Info().MaxWorkgroupCount[0]}, nil
}

// Record records y = s·x, capped at ±cap when cap > 0, over n values. y
// may be the same range as x.
func (k *Scale) Record(c *vk.Commands, x, y vk.Range, n int, s, cap float32) error {
	if n <= 0 || n > math.MaxInt32 {
		return fmt.Errorf("scale: %d elements: want 1 to 2³¹−1", n)
	}
	if cap < 0 || math.IsNaN(float64(cap)) || math.IsInf(float64(s), 0) || math.IsNaN(float64(s)) {
		return fmt.Errorf("scale: factor %v, cap %v: want a finite factor and a cap ≥ 0", s, cap)
	}
	info := k.d.Info()
	bx, err := skBind(info, "scale", "input", x, 4*uint64(n))
	if err != nil {
		return err
	}
	by, err := skBind(info, "scale", "output", y, 4*uint64(n))
	if err != nil {
		return err
	}
	g := max(min(groups(n, skWG), k.maxGroups), 1)
	c.Dispatch(k.k, [3]uint32{g, 1, 1}, push(uint32(n), s, cap), bx, by)
	return nil
}

// Add computes y[i] = a[i] + b[i] over n f32 values: the residual connection.
type Add struct {
	d         *vk.Device
	k         *vk.Kernel
	maxGroups uint32 // the device limit, lowered by tests to exercise the grid loop
}

// NewAdd prepares the addition kernel.
func NewAdd(d *vk.Device) (*Add, error) {
	k, err := skKernel(d, "add", 3, 4)
	if err != nil {
		return nil, err
	}
	return &Add{d: d, k: k, maxGroups: d.Info().MaxWorkgroupCount[0]}, nil
}

// Record records y = a + b over n values. y may be the same range as a or b.
func (k *Add) Record(c *vk.Commands, a, b, y vk.Range, n int) error {
	return skElementwise(k.d, c, k.k, k.maxGroups, "add", n, [3]string{"a", "b", "output"}, [3]vk.Range{a, b, y})
}

// skElementwise records a kernel with two f32 inputs and one f32 output of
// n values each. The shaders loop over the grid, so the group count is
// capped at maxGroups and any n fits.
func skElementwise(d *vk.Device, c *vk.Commands, k *vk.Kernel, maxGroups uint32, name string, n int, what [3]string, rs [3]vk.Range) error {
	if n <= 0 || n > math.MaxInt32 {
		return fmt.Errorf("%s: %d elements: want 1 to 2³¹−1", name, n)
	}
	info := d.Info()
	var bound [3]vk.Range
	for i, r := range rs {
		b, err := skBind(info, name, what[i], r, 4*uint64(n))
		if err != nil {
			return err
		}
		bound[i] = b
	}
	g := max(min(groups(n, skWG), maxGroups), 1)
	c.Dispatch(k, [3]uint32{g, 1, 1}, push(uint32(n)), bound[0], bound[1], bound[2])
	return nil
}

// skKernel creates the pipeline of the shader name with skWG invocations
// per workgroup (specialization constant 0).
func skKernel(d *vk.Device, name string, buffers, pushBytes int) (*vk.Kernel, error) {
	return skKernelWG(d, name, buffers, pushBytes, skWG)
}

// skKernelWG is skKernel with wg invocations per workgroup.
func skKernelWG(d *vk.Device, name string, buffers, pushBytes, wg int) (*vk.Kernel, error) {
	code, err := shaders.SPIRV(name)
	if err != nil {
		return nil, err
	}
	k, err := d.Kernel(vk.KernelSpec{Name: name, SPIRV: code, Buffers: buffers, PushBytes: pushBytes, Spec: []uint32{uint32(wg)}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return k, nil
}

// skNeed reports device features that the kernel name cannot do without.
func skNeed(d *vk.Device, name string, subgroups, storage16 bool) error {
	info := d.Info()
	if subgroups && !info.SubgroupArithmetic {
		return fmt.Errorf("%s: device %s lacks subgroup arithmetic in compute shaders", name, info.Name)
	}
	if storage16 && !info.Storage16 {
		return fmt.Errorf("%s: device %s lacks 16-bit storage buffer access", name, info.Name)
	}
	return nil
}

// skBind checks that r holds at least need bytes and can be bound as a
// storage buffer, and returns it trimmed to need bytes, so that callers may
// pass a range larger than one binding allows as long as the part used fits.
func skBind(info vk.DeviceInfo, name, what string, r vk.Range, need uint64) (vk.Range, error) {
	if r.Buf == nil {
		return vk.Range{}, fmt.Errorf("%s: %s range has no buffer", name, what)
	}
	if r.Size < need {
		return vk.Range{}, fmt.Errorf("%s: %s range holds %d bytes, need %d", name, what, r.Size, need)
	}
	if a := info.MinStorageBufferOffsetAlignment; a > 1 && r.Off%a != 0 {
		return vk.Range{}, fmt.Errorf("%s: %s range starts at offset %d, not a multiple of the device's storage-buffer alignment %d",
			name, what, r.Off, a)
	}
	if need > info.MaxStorageBufferRange {
		return vk.Range{}, fmt.Errorf("%s: %s needs %d bytes in one binding, more than the %d that device %s allows",
			name, what, need, info.MaxStorageBufferRange, info.Name)
	}
	return vk.Range{Buf: r.Buf, Off: r.Off, Size: need}, nil
}

// skGrid checks a dispatch of gx × gy workgroups against the device limits.
func skGrid(info vk.DeviceInfo, name string, gx, gy int) ([3]uint32, error) {
	m := info.MaxWorkgroupCount
	if gx <= 0 || gy <= 0 || uint64(gx) > uint64(m[0]) || uint64(gy) > uint64(m[1]) {
		return [3]uint32{}, fmt.Errorf("%s: %d×%d workgroups exceed the device's limit %d×%d", name, gx, gy, m[0], m[1])
	}
	return [3]uint32{uint32(gx), uint32(gy), 1}, nil
}

// Bias adds a bias vector to every row of a product's output, and
// optionally applies GELU (tanh form) after it: y[i] = act(x[i] + b[i mod
// cols]), the biased projections and the feed-forward activation of BERT.
type Bias struct {
	d         *vk.Device
	k         *vk.Kernel
	maxGroups uint32 // the device limit, lowered by tests to exercise the grid loop
}

// NewBias prepares the bias kernel.
func NewBias(d *vk.Device) (*Bias, error) {
	k, err := skKernel(d, "bias", 3, 12)
	if err != nil {
		return nil, err
	}
	return &Bias{d: d, k: k, maxGroups: d.Info().MaxWorkgroupCount[0]}, nil
}

// Record records y = x + b over rows rows of cols values (b: cols f32),
// with gelu then y = gelu(y). y may be the same range as x.
func (k *Bias) Record(c *vk.Commands, x, b, y vk.Range, rows, cols int, gelu bool) error {
	if rows <= 0 || cols <= 0 || rows > math.MaxInt32/cols {
		return fmt.Errorf("bias: %d rows of %d: want 1 to 2³¹−1 values", rows, cols)
	}
	n := rows * cols
	info := k.d.Info()
	bx, err := skBind(info, "bias", "input", x, 4*uint64(n))
	if err != nil {
		return err
	}
	bb, err := skBind(info, "bias", "bias", b, 4*uint64(cols))
	if err != nil {
		return err
	}
	by, err := skBind(info, "bias", "output", y, 4*uint64(n))
	if err != nil {
		return err
	}
	act := uint32(0)
	if gelu {
		act = 1
	}
	g := max(min(groups(n, skWG), k.maxGroups), 1)
	c.Dispatch(k.k, [3]uint32{g, 1, 1}, push(uint32(n), uint32(cols), act), bx, bb, by)
	return nil
}
