package kernel

import (
	"encoding/binary"
	"math"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

func TestArgmax(t *testing.T) {
	d := vktest.Device(t)
	r := newRand(t)
	const maxN = 128_256
	k, err := NewArgmax(d, maxN, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Free)
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	negZero := float32(math.Copysign(0, -1))

	random := func(n int) []float32 { return randFloats(r, n, 30) }
	cases := map[string][]float32{
		"vocab":          random(maxN),
		"odd size":       random(5_001),
		"one":            {-3},
		"max last":       append(random(4_097), 31),
		"all NaN":        {nan, nan, nan},
		"NaN below -inf": {nan, -inf, nan, -inf},
		"NaN and number": {nan, 2, nan, 5, nan},
		"zero signs":     {-1, negZero, 0, -2},
		"zero signs 2":   {-1, 0, negZero, -2},
		"all equal":      {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7},
	}
	// Equal maxima in different workgroups, in one workgroup and in one
	// subgroup: the lowest index wins.
	for name, at := range map[string][]int{
		"tie across groups":    {100_000, 3_000, 70_000},
		"tie in group":         {2_100, 2_047 + 2_048, 2_049},
		"tie in subgroup":      {9, 12, 10},
		"tie in invocation":    {300 + 512, 300, 300 + 256},
		"tie at the ends":      {maxN - 1, 0},
		"tie after first item": {maxN - 2, 2_048},
	} {
		x := random(maxN)
		for _, i := range at {
			x[i] = 40
		}
		cases[name] = x
	}
	out := poisoned(t, d, 4)
	for name, x := range cases {
		xb := upload(t, d, f32Bytes(x))
		run(t, d, func(c *vk.Commands) error { return k.Record(c, xb.All(), out.All(), len(x)) })
		got := binary.LittleEndian.Uint32(download(t, d, out))
		if want := skArgmaxRef(x); got != want {
			t.Errorf("%s: argmax = %d, want %d", name, got, want)
		}
		if err := d.Write(out.All(), []byte{0xff, 0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
	}

	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := k.Record(c, out.All(), out.All(), maxN+1); err == nil {
		t.Error("more values than the Argmax was made for were accepted")
	}

	// Rows back to back, each searched on its own: row 1 holds the
	// largest value of all (at its end), row 2 a tie (its lower index wins).
	const n = 5_001
	rows := append(append(random(n), append(random(n-1), 50)...), random(n)...)
	rows[2*n+3], rows[2*n+4_000] = 33, 33
	outs := poisoned(t, d, 12)
	rb := upload(t, d, f32Bytes(rows))
	run(t, d, func(c *vk.Commands) error { return k.RecordRows(c, rb.All(), outs.All(), n, 3) })
	got := download(t, d, outs)
	for i := range 3 {
		if g, want := binary.LittleEndian.Uint32(got[4*i:]), skArgmaxRef(rows[i*n:(i+1)*n]); g != want {
			t.Errorf("row %d: argmax = %d, want %d", i, g, want)
		}
	}
	if err := k.RecordRows(c, rb.All(), outs.All(), n, 4); err == nil {
		t.Error("more rows than the Argmax was made for were accepted")
	}
}
