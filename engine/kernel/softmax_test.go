package kernel

import (
	"math"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

func TestSoftmax(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewSoftmax(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range []struct{ rows, cols int }{{3, 1001}, {4, 5}, {1, 33_333}} {
		x := randFloats(r, sh.rows*sh.cols, 10)
		for i := range sh.cols {
			x[i] += 80 // exp(90) overflows f32: only a max-subtracted softmax survives it
		}
		x[len(x)-1] = float32(math.Inf(-1))
		if sh.rows > 1 {
			// A row far below zero: exp without the max subtracted underflows.
			for i := range sh.cols {
				x[sh.cols+i] -= 200
			}
		}
		want := softmaxRef(x, sh.rows, sh.cols)
		xb := upload(t, d, f32Bytes(x))
		y := poisoned(t, d, 4*len(x))
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), y.All(), sh.rows, sh.cols) })
		assertClose(t, bytesF32(download(t, d, y)), want, 1e-5, 1e-30)

		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), xb.All(), sh.rows, sh.cols) })
		assertClose(t, bytesF32(download(t, d, xb)), want, 1e-5, 1e-30)
	}
}
