package kernel

import (
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// mmShapes covers every row count, row length and token count of the
// matvec test without running their full product.
func mmShapes(t gguf.Type) [][3]int {
	if t.BlockSize() == 1 {
		return [][3]int{
			{1, 37, 5}, {3, 301, 67}, {37, 32, 1}, {300, 96, 5},
			{37, 4128, 67}, {300, 301, 1}, {3, 96, 67}, {1, 4128, 1},
		}
	}
	if t.BlockSize() == 256 {
		return [][3]int{
			{1, 256, 5}, {3, 4352, 67}, {37, 768, 1}, {300, 256, 67}, {300, 2560, 5}, {37, 512, 67},
		}
	}
	return [][3]int{
		{1, 32, 5}, {3, 4128, 67}, {37, 96, 1}, {300, 32, 67}, {300, 4128, 5}, {37, 1280, 67},
	}
}

func TestMatMul(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		for i, sh := range mmShapes(typ) {
			s := mvSpec{typ: typ, rows: sh[0], cols: sh[1], n: sh[2], acc: i%2 == 1,
				lay: []mvLayout{mvAligned, mvOddOffsets, mvWordOffset}[i%3]}
			for _, tiled := range []bool{true, false} {
				s.tiled = tiled
				t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
			}
		}
	}
}

// TestMatMulSplit makes the binding limit small so that W is split by rows
// and X and Y by tokens, with Y chunks interleaved in one strided array.
func TestMatMulSplit(t *testing.T) {
	d := vktest.Device(t)
	for _, typ := range mvTypes {
		for _, tiled := range []bool{true, false} {
			cols := 96
			if typ.BlockSize() == 256 {
				cols = 256
			}
			limit := uint64(8192)
			if !tiled {
				limit = splitLimit(d, typ, cols, limit)
			}
			s := mvSpec{typ: typ, rows: 300, cols: cols, n: 67, acc: true, lay: mvWordOffset, limit: limit, tiled: tiled}
			t.Run(s.String(), func(t *testing.T) { mvCase(t, d, s) })
		}
	}
}

func TestMatMulErrors(t *testing.T) {
	d := vktest.Device(t)
	if _, err := NewMatMul(d, gguf.Type(3)); err == nil {
		t.Error("NewMatMul accepted Q4_1, which has no kernel")
	}
	k, err := NewMatMul(d, gguf.F16)
	if err != nil {
		t.Fatal(err)
	}
	w := poisoned(t, d, 2*8*16)
	x := poisoned(t, d, 4*16*3)
	y := poisoned(t, d, 4*8*3)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	for _, tc := range []struct {
		name          string
		rows, cols, n int
		x, y          vk.Range
	}{
		{"zero tokens", 8, 16, 0, x.All(), y.All()},
		{"x too short", 8, 16, 3, x.Range(0, 4*16*2), y.All()},
		{"y too short", 8, 16, 3, x.All(), y.Range(0, 4*8*2)},
		{"weights too short", 9, 16, 1, x.All(), y.All()},
		{"misaligned y", 8, 16, 1, x.All(), y.Range(2, 32)},
	} {
		if err := k.Record(c, w.All(), tc.rows, tc.cols, tc.n, tc.x, tc.y, false); err == nil {
			t.Errorf("%s: Record returned no error", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}
