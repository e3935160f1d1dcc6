package kernel

import (
	"math"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

func TestSwiGLU(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewSwiGLU(d)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_003
	gate, up := randFloats(r, n, 12), randFloats(r, n, 3)
	want := make([]float64, n)
	for i := range want {
		g := float64(gate[i])
		want[i] = g / (1 + math.Exp(-g)) * float64(up[i])
	}
	gb, ub := upload(t, d, f32Bytes(gate)), upload(t, d, f32Bytes(up))

	out := poisoned(t, d, 4*n)
	run(t, d, func(c *vk.Commands) error { return k.Record(c, gb.All(), ub.All(), out.All(), n) })
	assertClose(t, bytesF32(download(t, d, out)), want, 1e-5, 1e-7)

	// Fewer workgroups than elements need, and the output over the gate.
	k.maxGroups = 7
	run(t, d, func(c *vk.Commands) error { return k.Record(c, gb.All(), ub.All(), gb.All(), n) })
	assertClose(t, bytesF32(download(t, d, gb)), want, 1e-5, 1e-7)
}

func TestGEGLU(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewGEGLU(d)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_003
	gate, up := randFloats(r, n, 12), randFloats(r, n, 3)
	gate[0], gate[1] = 40, -40 // where tanh saturates
	want := make([]float64, n)
	for i := range want {
		g := float64(gate[i])
		want[i] = 0.5 * g * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g+0.044715*g*g*g))) * float64(up[i])
	}
	gb, ub := upload(t, d, f32Bytes(gate)), upload(t, d, f32Bytes(up))

	out := poisoned(t, d, 4*n)
	run(t, d, func(c *vk.Commands) error { return k.Record(c, gb.All(), ub.All(), out.All(), n) })
	assertClose(t, bytesF32(download(t, d, out)), want, 1e-5, 1e-6)

	k.maxGroups = 7
	run(t, d, func(c *vk.Commands) error { return k.Record(c, gb.All(), ub.All(), gb.All(), n) })
	assertClose(t, bytesF32(download(t, d, gb)), want, 1e-5, 1e-6)
}

func TestScale(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewScale(d)
	if err != nil {
		t.Fatal(err)
	}
	const n = 70_001
	x := randFloats(r, n, 80)
	xb := upload(t, d, f32Bytes(x))
	for _, tc := range []struct{ s, cap float64 }{{math.Sqrt(2304), 0}, {1, 30}, {0.5, 50}} {
		want := make([]float64, n)
		for i := range want {
			v := tc.s * float64(x[i])
			if tc.cap > 0 {
				v = tc.cap * math.Tanh(v/tc.cap)
			}
			want[i] = v
		}
		y := poisoned(t, d, 4*n)
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), y.All(), n, float32(tc.s), float32(tc.cap)) })
		assertClose(t, bytesF32(download(t, d, y)), want, 1e-5, 1e-6)
	}
	// In place, over fewer workgroups than the elements need.
	k.maxGroups = 3
	run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), xb.All(), n, 2, 0) })
	want := make([]float64, n)
	for i := range want {
		want[i] = 2 * float64(x[i])
	}
	assertClose(t, bytesF32(download(t, d, xb)), want, 1e-7, 1e-30)

	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, xb.All(), xb.All(), n, 1, -1); err == nil {
		t.Error("a negative cap was accepted")
	}
}

func TestAdd(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewAdd(d)
	if err != nil {
		t.Fatal(err)
	}
	const n = 70_001
	a, b := randFloats(r, n, 5), randFloats(r, n, 5)
	want := make([]float64, n)
	for i := range want {
		want[i] = float64(a[i]) + float64(b[i])
	}
	ab, bb := upload(t, d, f32Bytes(a)), upload(t, d, f32Bytes(b))

	y := poisoned(t, d, 4*n)
	run(t, d, func(c *vk.Commands) error { return k.Record(c, ab.All(), bb.All(), y.All(), n) })
	// The f32 sum is the correctly rounded exact sum.
	assertClose(t, bytesF32(download(t, d, y)), want, 1e-7, 1e-30)

	k.maxGroups = 3
	run(t, d, func(c *vk.Commands) error { return k.Record(c, ab.All(), bb.All(), ab.All(), n) })
	assertClose(t, bytesF32(download(t, d, ab)), want, 1e-7, 1e-30)
}

func TestElementwiseRejectsShortRanges(t *testing.T) {
	d := vktest.Device(t)
	k, err := NewAdd(d)
	if err != nil {
		t.Fatal(err)
	}
	a := poisoned(t, d, 400)
	short := poisoned(t, d, 396)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, a.All(), a.All(), short.All(), 100); err == nil {
		t.Error("a 99-float output range for 100 values was accepted")
	}
	if err := k.Record(c, a.All(), a.All(), a.All(), 0); err == nil {
		t.Error("0 elements were accepted")
	}
	if err := k.Record(c, a.All(), vk.Range{}, a.All(), 100); err == nil {
		t.Error("an empty range was accepted")
	}
}

// TestBias adds a bias of an odd width to rows of a product's output, with
// and without GELU, then in place over fewer workgroups than it needs.
func TestBias(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	k, err := NewBias(d)
	if err != nil {
		t.Fatal(err)
	}
	const rows, cols = 37, 1031
	x, b := randFloats(r, rows*cols, 6), randFloats(r, cols, 2)
	x[0], x[1] = 40, -40 // where tanh saturates
	xb, bb := upload(t, d, f32Bytes(x)), upload(t, d, f32Bytes(b))
	for _, gelu := range []bool{false, true} {
		want := make([]float64, len(x))
		for i := range want {
			// The sum is rounded to f32 before GELU, as the shader has it.
			v := float64(x[i] + b[i%cols])
			if gelu {
				v = skGELURef(v)
			}
			want[i] = v
		}
		y := poisoned(t, d, 4*len(x))
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), bb.All(), y.All(), rows, cols, gelu) })
		assertClose(t, bytesF32(download(t, d, y)), want, 1e-5, 1e-6)
	}
	want := make([]float64, len(x))
	for i := range want {
		want[i] = float64(x[i] + b[i%cols])
	}
	k.maxGroups = 5
	run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), bb.All(), xb.All(), rows, cols, false) })
	assertClose(t, bytesF32(download(t, d, xb)), want, 1e-7, 1e-30)

	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, xb.All(), bb.All(), xb.All(), rows, cols+1, false); err == nil {
		t.Error("a bias longer than its range was accepted")
	}
}
