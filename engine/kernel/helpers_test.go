package kernel

import (
	"math"
	"math/rand/v2"
	"testing"

	"headinfer/vk"
)

// newRand returns a generator with a fresh seed, logged so that a failure
// can be replayed.
func newRand(t testing.TB) *rand.Rand {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// upload allocates a device-local buffer holding data.
func upload(t testing.TB, d *vk.Device, data []byte) *vk.Buffer {
	t.Helper()
	b, err := d.Alloc(vk.DeviceLocal, uint64(len(data)), "test input")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Free)
	if err := d.Write(b.All(), data); err != nil {
		t.Fatal(err)
	}
	return b
}

// poisoned allocates a device-local buffer of size bytes filled with NaN
// bits, so that an output the kernel fails to write shows up as NaN.
func poisoned(t testing.TB, d *vk.Device, size int) *vk.Buffer {
	t.Helper()
	p := make([]byte, size)
	for i := range p {
		p[i] = 0xff
	}
	return upload(t, d, p)
}

// download reads a whole buffer back.
func download(t testing.TB, d *vk.Device, b *vk.Buffer) []byte {
	t.Helper()
	out := make([]byte, b.Size())
	if err := d.Read(b.All(), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// run records fn into fresh commands and runs them to completion.
func run(t testing.TB, d *vk.Device, fn func(c *vk.Commands) error) {
	t.Helper()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := fn(c); err != nil {
		t.Fatal(err)
	}
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
}

// assertClose fails unless every got[i] is within rtol relative (or atol
// absolute, for values near zero) of want[i], and reports the worst element.
func assertClose(t testing.TB, got []float32, want []float64, rtol, atol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	worst, wi := 0.0, -1
	for i := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			t.Fatalf("element %d is %v (want %v): not written or overflowed", i, g, want[i])
		}
		err := math.Abs(g - want[i])
		tol := max(atol, rtol*math.Abs(want[i]))
		if r := err / tol; r > worst {
			worst, wi = r, i
		}
	}
	if worst > 1 {
		t.Fatalf("element %d: got %v, want %v (error %.3g× the tolerance rtol=%g atol=%g)",
			wi, got[wi], want[wi], worst, rtol, atol)
	}
}
