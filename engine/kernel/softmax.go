package kernel

import (
	"fmt"
	"math"

	"headinfer/vk"
)

// Softmax turns each row of f32 values into probabilities:
// y[r][i] = exp(x[r][i] − max x[r]) / Σ_j exp(x[r][j] − max x[r]).
// A row whose values are all −inf has no defined softmax and gives NaN.
type Softmax struct {
	d *vk.Device
	k *vk.Kernel
}

// NewSoftmax prepares the row softmax kernel.
func NewSoftmax(d *vk.Device) (*Softmax, error) {
	if err := skNeed(d, "softmax", true, false); err != nil {
		return nil, err
	}
	k, err := skKernel(d, "softmax", 2, 4)
	if err != nil {
		return nil, err
	}
	return &Softmax{d: d, k: k}, nil
}

// Record records the softmax of rows rows of cols values from x into y.
// y may be the same range as x.
func (s *Softmax) Record(c *vk.Commands, x, y vk.Range, rows, cols int) error {
	info := s.d.Info()
	if rows <= 0 || cols <= 0 || rows > math.MaxInt32/cols {
		return fmt.Errorf("softmax: shape %d×%d out of range", rows, cols)
	}
	grid, err := skGrid(info, "softmax", rows, 1)
	if err != nil {
		return err
	}
	size := 4 * uint64(rows) * uint64(cols)
	xb, err := skBind(info, "softmax", "input", x, size)
	if err != nil {
		return err
	}
	yb, err := skBind(info, "softmax", "output", y, size)
	if err != nil {
		return err
	}
	c.Dispatch(s.k, grid, push(uint32(cols)), xb, yb)
	return nil
}
