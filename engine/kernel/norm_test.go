package kernel

import (
	"math"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// TestRMSNorm runs the workgroup size of GPUs (several subgroups) and of
// CPU devices (one).
func TestRMSNorm(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for i, sh := range []struct{ rows, dim int }{{5, 1000}, {3, 7}, {1, 4099}, {5, 1000}, {3, 7}, {1, 4099}} {
		const eps = 1e-5
		wg := []int{skWG, int(max(d.Info().SubgroupSize, 8))}[i/3]
		k, err := newRMSNorm(d, sh.dim, eps, wg)
		if err != nil {
			t.Fatal(err)
		}
		x := randFloats(r, sh.rows*sh.dim, 3)
		x[0] = 0 // a zero does not upset the sum
		if sh.rows > 2 {
			// Row 1 so small that eps dominates the mean square, row 2 all
			// zero (0 without eps would be 0·inf = NaN): both need eps.
			for i := range sh.dim {
				x[sh.dim+i] *= 1e-4
				x[2*sh.dim+i] = 0
			}
		}
		w := randFloats(r, sh.dim, 2)
		want := skRMSNormRef(x, w, sh.dim, eps)
		xb, wb := upload(t, d, f32Bytes(x)), upload(t, d, f32Bytes(w))

		y := poisoned(t, d, 4*len(x))
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), wb.All(), y.All(), sh.rows) })
		// Each output is x·s·w with s from a sum of positive terms, so the
		// error is relative to the output itself.
		assertClose(t, bytesF32(download(t, d, y)), want, 1e-5, 1e-30)

		// In place.
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), wb.All(), xb.All(), sh.rows) })
		assertClose(t, bytesF32(download(t, d, xb)), want, 1e-5, 1e-30)
	}
}

func TestRMSNormRejectsShortWeights(t *testing.T) {
	d := vktest.Device(t)
	k, err := NewRMSNorm(d, 64, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	x, w := poisoned(t, d, 4*64*2), poisoned(t, d, 4*63)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, x.All(), w.All(), x.All(), 2); err == nil {
		t.Error("63 weights for rows of 64 were accepted")
	}
	if err := k.Record(c, x.All(), x.All(), x.All(), 3); err == nil {
		t.Error("3 rows in a 2-row range were accepted")
	}
	if _, err := NewRMSNorm(d, 64, float32(math.NaN())); err == nil {
		t.Error("a NaN epsilon was accepted")
	}
}

// TestLayerNorm runs the workgroup size of GPUs and of CPU devices over
// odd sizes, with a row whose mean is far from zero, a constant row (no
// variance: eps alone keeps it finite, and the output is the bias) and a
// row whose variance is below eps.
func TestLayerNorm(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	for i, sh := range []struct{ rows, dim int }{{5, 1000}, {4, 7}, {1, 4099}, {5, 1000}, {4, 7}, {1, 4099}} {
		const eps = 1e-5
		wg := []int{skWG, int(max(d.Info().SubgroupSize, 8))}[i/3]
		k, err := newLayerNorm(d, sh.dim, eps, wg)
		if err != nil {
			t.Fatal(err)
		}
		x := randFloats(r, sh.rows*sh.dim, 3)
		if sh.rows > 3 {
			for i := range sh.dim {
				x[i] += 5             // row 0: mean near 5
				x[sh.dim+i] = 1.5     // row 1: constant
				x[2*sh.dim+i] *= 1e-4 // row 2: variance below eps
			}
		}
		w, b := randFloats(r, sh.dim, 2), randFloats(r, sh.dim, 1)
		want := skLayerNormRef(x, w, b, sh.dim, eps)
		xb, wb, bb := upload(t, d, f32Bytes(x)), upload(t, d, f32Bytes(w)), upload(t, d, f32Bytes(b))

		y := poisoned(t, d, 4*len(x))
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), wb.All(), bb.All(), y.All(), sh.rows) })
		// Outputs are of order |w|·few + |b|; the bias can cancel the
		// normalised term, so the error is bounded absolutely too.
		assertClose(t, bytesF32(download(t, d, y)), want, 1e-5, 1e-5)

		// In place.
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), wb.All(), bb.All(), xb.All(), sh.rows) })
		assertClose(t, bytesF32(download(t, d, xb)), want, 1e-5, 1e-5)
	}
}

func TestLayerNormRejectsShortRanges(t *testing.T) {
	d := vktest.Device(t)
	k, err := NewLayerNorm(d, 64, 1e-12)
	if err != nil {
		t.Fatal(err)
	}
	x, w, b := poisoned(t, d, 4*64*2), poisoned(t, d, 4*64), poisoned(t, d, 4*63)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, x.All(), w.All(), b.All(), x.All(), 2); err == nil {
		t.Error("a bias of 63 for rows of 64 was accepted")
	}
	if err := k.Record(c, x.All(), w.All(), w.All(), x.All(), 3); err == nil {
		t.Error("3 rows in a 2-row range were accepted")
	}
}
