package vk_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"headinfer/shaders"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// vkNewRand returns a generator with a fresh seed, logged for replay.
func vkNewRand(t testing.TB) *rand.Rand {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func vkRandFloats(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return v
}

func vkF32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func vkBytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// vkPush packs uint32 and float32 push constants.
func vkPush(vals ...any) []byte {
	var b []byte
	for _, v := range vals {
		switch v := v.(type) {
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, v)
		case float32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		default:
			panic("vkPush: unsupported type")
		}
	}
	return b
}

// axpyKernel builds vk_test_axpy: y[i] = x[i]*mul + add for i < n, with
// workgroup size local.
func axpyKernel(t testing.TB, d *vk.Device, local, mul uint32) *vk.Kernel {
	t.Helper()
	k, err := d.Kernel(vk.KernelSpec{
		Name:      "vk_test_axpy",
		SPIRV:     shaders.MustSPIRV("vk_test_axpy"),
		Buffers:   2,
		PushBytes: 8,
		Spec:      []uint32{local, mul},
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// axpyRef is the float64 reference of vk_test_axpy, with the scale of
// its terms for the error bound (the device may fuse or not).
func axpyRef(x []float32, mul, add float32) (want, scale []float64) {
	want, scale = make([]float64, len(x)), make([]float64, len(x))
	for i, v := range x {
		want[i] = float64(v)*float64(mul) + float64(add)
		scale[i] = math.Abs(float64(v)*float64(mul)) + math.Abs(float64(add))
	}
	return want, scale
}

// vkAlloc allocates a buffer freed when the test ends.
func vkAlloc(t testing.TB, d *vk.Device, kind vk.MemoryKind, size uint64) *vk.Buffer {
	t.Helper()
	b, err := d.Alloc(kind, size, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Free)
	return b
}

// vkPoison fills a range with NaN bits so unwritten output shows.
func vkPoison(t testing.TB, d *vk.Device, r vk.Range) {
	t.Helper()
	p := make([]byte, r.Size)
	for i := range p {
		p[i] = 0xff
	}
	if err := d.Write(r, p); err != nil {
		t.Fatal(err)
	}
}

func vkRead(t testing.TB, d *vk.Device, r vk.Range) []byte {
	t.Helper()
	out := make([]byte, r.Size)
	if err := d.Read(r, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func vkWrite(t testing.TB, d *vk.Device, r vk.Range, data []byte) {
	t.Helper()
	if err := d.Write(r, data); err != nil {
		t.Fatal(err)
	}
}

// vkCommands returns fresh commands freed when the test ends.
func vkCommands(t testing.TB, d *vk.Device) *vk.Commands {
	t.Helper()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Free)
	return c
}

// vkCloseF32 fails unless every got[i] is within 1e-6 of want[i]
// relative to scale[i], the sum of magnitudes of its terms.
func vkCloseF32(t testing.TB, got []float32, want, scale []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	for i := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.Abs(g-want[i]) > 1e-6*scale[i]+1e-30 {
			t.Fatalf("element %d of %d: got %v, want %v", i, len(want), got[i], want[i])
		}
	}
}

func testDevice(t testing.TB) *vk.Device { return vktest.Device(t) }
