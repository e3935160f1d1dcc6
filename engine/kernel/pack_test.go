package kernel

import (
	"bytes"
	"testing"

	"headinfer/engine/gguf"
)

var packTypes = []gguf.Type{gguf.Q4_0, gguf.Q8_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// TestPackRoundTrip packs random rows (odd row counts, rows that end in a
// partial step) and checks that unpacking gives the GGUF bytes back, that
// they dequantize as the originals do, that the padding is zero, and that
// a few units lie where the layout says.
func TestPackRoundTrip(t *testing.T) {
	r := newRand(t)
	for _, typ := range packTypes {
		for _, lanes := range []int{8, 16} {
			for _, shape := range [][2]int{{37, 256}, {64, 4096}, {33, 4352}, {5, 11008}} {
				rows, cols := shape[0], shape[1]
				p := newPacking(typ, lanes, 32)
				raw, deq := mvWeights(t, r, typ, rows, cols)
				packed, err := p.pack(raw, rows, cols)
				if err != nil {
					t.Fatal(err)
				}
				if uint64(len(packed)) != p.bytes(rows, cols) {
					t.Fatalf("%v %dx%d: %d packed bytes, want %d", typ, rows, cols, len(packed), p.bytes(rows, cols))
				}
				back, err := p.unpack(packed, rows, cols)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(back, raw) {
					t.Fatalf("%v %dx%d lanes %d: unpack(pack(w)) differs from w", typ, rows, cols, lanes)
				}
				got := make([]float32, rows*cols)
				if err := gguf.Dequantize(typ, back, got); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if got[i] != deq[i] {
						t.Fatalf("%v: weight %d dequantizes to %v after the round trip, %v before", typ, i, got[i], deq[i])
					}
				}
				packSpotCheck(t, p, raw, packed, rows, cols)
				packPaddingZero(t, p, packed, rows, cols)
			}
		}
	}
}

// packSpotCheck finds the last unit of the last row, and the first unit
// of row 1, by the layout's formula written out here, and compares its
// first quant bytes and its scale with the GGUF block's.
func packSpotCheck(t *testing.T, p *packing, raw, packed []byte, rows, cols int) {
	t.Helper()
	units := cols / 256
	steps := (units + p.lanes - 1) / p.lanes
	stepBytes := 16 * (p.texels*p.lanes + p.tail) * p.rows
	for _, ru := range [][2]int{{rows - 1, units - 1}, {min(1, rows-1), 0}} {
		row, unit := ru[0], ru[1]
		g, rr, s, l := row/p.rows, row%p.rows, unit/p.lanes, unit%p.lanes
		step := (g*steps + s) * stepBytes
		at := func(texel int) int { return step + 16*((texel*p.rows+rr)*p.lanes+l) }
		blk := raw[row*p.t.RowBytes(cols)+unit*p.unitBytes():]
		var wantQ, gotQ, wantD, gotD []byte
		switch p.t {
		case gguf.Q4_0, gguf.Q8_0:
			// Block 3 of the unit: its quants start texel 3 (Q4_0) or 6
			// (Q8_0); its scale is half 3 of the last texel.
			b := blk[3*p.t.BlockBytes():]
			qt := 3 * (p.t.BlockBytes() - 2) / 16
			wantQ, gotQ = b[2:18], packed[at(qt):at(qt)+16]
			wantD, gotD = b[:2], packed[at(p.texels-1)+6:at(p.texels-1)+8]
		case gguf.Q6_K:
			wantQ, gotQ = blk[:16], packed[at(0):at(0)+16]
			o := step + 16*(p.texels*p.rows*p.lanes+rr*p.tail) + 2*l
			wantD, gotD = blk[208:210], packed[o:o+2]
		default:
			wantQ, gotQ = blk[16:32], packed[at(1):at(1)+16]
			wantD, gotD = blk[:4], packed[at(0):at(0)+4]
		}
		if !bytes.Equal(wantQ, gotQ) || !bytes.Equal(wantD, gotD) {
			t.Fatalf("%v row %d unit %d: quants %x scale %x in the packed layout, want %x and %x",
				p.t, row, unit, gotQ, gotD, wantQ, wantD)
		}
	}
}

// packPaddingZero checks that what pack adds beyond the matrix (units past
// a row's end, rows past the last) is zero, so that it counts for nothing.
func packPaddingZero(t *testing.T, p *packing, packed []byte, rows, cols int) {
	t.Helper()
	used := make([]bool, len(packed))
	p.walk(rows, cols, func(row, unit int, texel func(int) []byte, d []byte) {
		for i := range p.texels {
			tx := texel(i)
			for j := range tx {
				used[cap(packed)-cap(tx)+j] = true
			}
		}
		for j := range d {
			used[cap(packed)-cap(d)+j] = true
		}
	}, packed)
	for i, u := range used {
		if !u && packed[i] != 0 {
			t.Fatalf("%v %dx%d: padding byte %d is %#x", p.t, rows, cols, i, packed[i])
		}
	}
}

func TestPackErrors(t *testing.T) {
	p := newPacking(gguf.Q4_K, 8, 32)
	if _, err := p.pack(make([]byte, 144), 1, 128); err == nil {
		t.Error("pack accepted 128 columns, not a whole lane unit")
	}
	if _, err := p.pack(make([]byte, 100), 1, 256); err == nil {
		t.Error("pack accepted 100 bytes for a 144-byte row")
	}
	if newPacking(gguf.F16, 8, 32) != nil {
		t.Error("F16 has a packed layout")
	}
}
