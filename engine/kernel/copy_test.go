package kernel

import (
	"bytes"
	"fmt"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

func TestCopy(t *testing.T) {
	d := vktest.Device(t)
	for _, tc := range []struct {
		size, soff, doff int
		limit, align     uint64
	}{
		{16, 0, 0, 0, 0},
		{16 * 1001, 32, 16, 0, 0},
		{16 * 70000, 16, 48, 0, 0},     // several workgroups, last one partial
		{16 * 5000, 16, 32, 4096, 0},   // split into many dispatches
		{16 * 4096 * 4, 0, 0, 4096, 0}, // chunks that end on workgroup boundaries
		{16 * 1001, 32, 48, 0, 256},    // bindings start below the data: nonzero, different offsets
	} {
		t.Run(fmt.Sprintf("%d/%d,%d/limit=%d", tc.size, tc.soff, tc.doff, tc.limit), func(t *testing.T) {
			r := newRand(t)
			data := make([]byte, tc.size)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			_, src := mvOperand(t, d, data, uint64(tc.soff))
			db := poisoned(t, d, tc.doff+tc.size+64)
			dst := db.Range(uint64(tc.doff), uint64(tc.size))
			k, err := NewCopy(d)
			if err != nil {
				t.Fatal(err)
			}
			k.limit, k.align = tc.limit, tc.align
			run(t, d, func(c *vk.Commands) error { return k.Record(c, dst, src) })
			all := download(t, d, db)
			if !bytes.Equal(all[tc.doff:tc.doff+tc.size], data) {
				t.Fatal("copied bytes differ from the source")
			}
			for i, v := range all {
				if (i < tc.doff || i >= tc.doff+tc.size) && v != 0xff {
					t.Fatalf("byte %d outside the destination was overwritten", i)
				}
			}
		})
	}
}

func TestCopyErrors(t *testing.T) {
	d := vktest.Device(t)
	k, err := NewCopy(d)
	if err != nil {
		t.Fatal(err)
	}
	b := poisoned(t, d, 256)
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	for _, tc := range []struct {
		name     string
		dst, src vk.Range
	}{
		{"sizes differ", b.Range(0, 32), b.Range(128, 16)},
		{"size not a multiple of 16", b.Range(0, 24), b.Range(128, 24)},
		{"misaligned offset", b.Range(8, 16), b.Range(128, 16)},
		{"empty", b.Range(0, 0), b.Range(128, 0)},
	} {
		if err := k.Record(c, tc.dst, tc.src); err == nil {
			t.Errorf("%s: Record returned no error", tc.name)
		}
	}
}
