package kernel

import (
	"fmt"
	"math"

	"headinfer/vk"
)

// RMSNorm normalises rows of dim f32 values by their root mean square and
// scales them by a weight vector: y = x / sqrt(mean(x²) + eps) · w.
type RMSNorm struct {
	d   *vk.Device
	k   *vk.Kernel
	dim int
	eps float32
}

// NewRMSNorm prepares RMS normalisation of rows of dim values with the
// model's epsilon.
func NewRMSNorm(d *vk.Device, dim int, eps float32) (*RMSNorm, error) {
	if dim <= 0 || dim > math.MaxInt32/4 {
		return nil, fmt.Errorf("rmsnorm: dimension %d out of range", dim)
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return nil, fmt.Errorf("rmsnorm: epsilon %v must be finite and not negative", eps)
	}
	if err := skNeed(d, "rmsnorm", true, false); err != nil {
		return nil, err
	}
	// A workgroup per row. On a CPU device one subgroup: there a
	// workgroup barrier switches between its subgroups in software.
	wg := skWG
	if d.Info().Type == vk.CPU {
		wg = max(int(d.Info().SubgroupSize), 8)
	}
	return newRMSNorm(d, dim, eps, wg)
}

func newRMSNorm(d *vk.Device, dim int, eps float32, wg int) (*RMSNorm, error) {
	k, err := skKernelWG(d, "rmsnorm", 3, 8, wg)
	if err != nil {
		return nil, err
	}
	return &RMSNorm{d: d, k: k, dim: dim, eps: eps}, nil
}

// Record records the normalisation of rows rows of x into y with weights w
// (dim f32). y may be the same range as x.
func (r *RMSNorm) Record(c *vk.Commands, x, w, y vk.Range, rows int) error {
	info := r.d.Info()
	if rows <= 0 || rows > math.MaxInt32/r.dim {
		return fmt.Errorf("rmsnorm: %d rows of %d out of range", rows, r.dim)
	}
	grid, err := skGrid(info, "rmsnorm", rows, 1)
	if err != nil {
		return err
	}
	size := 4 * uint64(rows) * uint64(r.dim)
	xb, err := skBind(info, "rmsnorm", "input", x, size)
	if err != nil {
		return err
	}
	wb, err := skBind(info, "rmsnorm", "weight", w, 4*uint64(r.dim))
	if err != nil {
		return err
	}
	yb, err := skBind(info, "rmsnorm", "output", y, size)
	if err != nil {
		return err
	}
	c.Dispatch(r.k, grid, push(uint32(r.dim), r.eps), xb, wb, yb)
	return nil
}

// LayerNorm normalises rows of dim f32 values by their mean and variance
// and applies a weight and a bias: y = (x − mean) / sqrt(var + eps) · w + b,
// the norm of BERT-family models.
type LayerNorm struct {
	d   *vk.Device
	k   *vk.Kernel
	dim int
	eps float32
}

// NewLayerNorm prepares layer normalisation of rows of dim values with the
// model's epsilon.
func NewLayerNorm(d *vk.Device, dim int, eps float32) (*LayerNorm, error) {
	if dim <= 0 || dim > math.MaxInt32/4 {
		return nil, fmt.Errorf("layernorm: dimension %d out of range", dim)
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return nil, fmt.Errorf("layernorm: epsilon %v must be finite and not negative", eps)
	}
	if err := skNeed(d, "layernorm", true, false); err != nil {
		return nil, err
	}
	// As RMSNorm: one subgroup per row on a CPU device.
	wg := skWG
	if d.Info().Type == vk.CPU {
		wg = max(int(d.Info().SubgroupSize), 8)
	}
	return newLayerNorm(d, dim, eps, wg)
}

func newLayerNorm(d *vk.Device, dim int, eps float32, wg int) (*LayerNorm, error) {
	k, err := skKernelWG(d, "layernorm", 4, 8, wg)
	if err != nil {
		return nil, err
	}
	return &LayerNorm{d: d, k: k, dim: dim, eps: eps}, nil
}

// Record records the normalisation of rows rows of x into y with weights
// w and bias b (dim f32 each). y may be the same range as x.
func (r *LayerNorm) Record(c *vk.Commands, x, w, b, y vk.Range, rows int) error {
	info := r.d.Info()
	if rows <= 0 || rows > math.MaxInt32/r.dim {
		return fmt.Errorf("layernorm: %d rows of %d out of range", rows, r.dim)
	}
	grid, err := skGrid(info, "layernorm", rows, 1)
	if err != nil {
		return err
	}
	size := 4 * uint64(rows) * uint64(r.dim)
	xb, err := skBind(info, "layernorm", "input", x, size)
	if err != nil {
		return err
	}
	wb, err := skBind(info, "layernorm", "weight", w, 4*uint64(r.dim))
	if err != nil {
		return err
	}
	bb, err := skBind(info, "layernorm", "bias", b, 4*uint64(r.dim))
	if err != nil {
		return err
	}
	yb, err := skBind(info, "layernorm", "output", y, size)
	if err != nil {
		return err
	}
	c.Dispatch(r.k, grid, push(uint32(r.dim), r.eps), xb, wb, bb, yb)
	return nil
}
