package kernel

import (
	"fmt"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// The packed layout of quantized matrices, which CPU devices read instead
// of GGUF's (see matvec.glsl, PACKED).
//
// A CPU device runs a workgroup as SIMD vectors whose lanes are its
// invocations. A storage-buffer load there is a loop over the lanes, one
// 4-byte component at a time with a bounds check each, and a workgroup
// whose lanes and rows each walk their own stretch of memory defeats the
// hardware prefetcher. So the rows are repacked at load time: each lane
// reads 16-byte texels of a uniform texel buffer (a few vector
// instructions for all lanes), and a workgroup's reads form one forward
// stream.
//
// Every row is cut into "lane units" of 256 weights. The rows of a matrix
// are taken in groups of G (the rows one workgroup computes) and a row's
// units in steps of L (the lanes): in step s, lane l takes unit s·L + l of
// each of the G rows. A unit is T texels:
//
//	Q4_0  8 blocks: texel i the 16 quant bytes of block i; texel 8 the eight f16 scales
//	Q8_0  8 blocks: texels 2i, 2i+1 the 32 quants of block i; texel 16 the eight scales
//	Q4_K  the 144-byte block as it is (scales header, then qs)
//	Q5_K  the 176-byte block as it is (header, qh, qs)
//	Q6_K  ql (texels 0-7), qh (8-11), the 16 int8 scales (12); its f16 d
//	      goes to the step's tail
//
// A step of a group holds, texel-major, texel t of lane l's unit of row r
// at (t·G + r)·L + l, then (Q6_K) a tail of G·⌈2L/16⌉ texels: the L
// lanes' f16 d for each row in turn. Groups follow each other; a row's
// units past its end, and the rows past the matrix's last, are zeros, so
// the kernel needs no bounds checks on weights (zero scales make them
// count for nothing). Bytes per row equal GGUF's when the row is a whole
// number of steps (4096 columns: two steps of 8 lanes).
type packing struct {
	t      gguf.Type
	lanes  int // L: invocations of a workgroup
	rows   int // G: rows of a workgroup
	texels int // T: texels of a lane unit
	tail   int // texels of one row's tail in a step (Q6_K), else 0
}

// packUnit is the weights of a lane unit.
const packUnit = 256

// newPacking returns the packed layout a CPU device with this geometry
// uses for type t, or nil where t keeps the GGUF layout.
func newPacking(t gguf.Type, lanes, rows int) *packing {
	p := &packing{t: t, lanes: lanes, rows: rows}
	switch t {
	case gguf.Q4_0:
		p.texels = 9
	case gguf.Q8_0:
		p.texels = 17
	case gguf.Q4_K:
		p.texels = 9
	case gguf.Q5_K:
		p.texels = 11
	case gguf.Q6_K:
		p.texels = 13
		p.tail = (2*lanes + 15) / 16
	default:
		return nil
	}
	return p
}

// packingFor is the packed layout MatVec expects on a device for type t,
// or nil: GPUs, and types that are not quantized, keep the GGUF layout.
func packingFor(info vk.DeviceInfo, t gguf.Type) *packing {
	if info.Type != vk.CPU {
		return nil
	}
	wg, rows, _ := mvDefaultGeometry(info, t)
	return newPacking(t, wg, rows)
}

// fits reports whether a row of cols weights can be packed: a whole
// number of lane units.
func (p *packing) fits(cols int) bool { return cols > 0 && cols%packUnit == 0 }

// steps returns the steps of a row of cols weights.
func (p *packing) steps(cols int) int {
	units := cols / packUnit
	return (units + p.lanes - 1) / p.lanes
}

// stepTexels returns the texels of one step of one group.
func (p *packing) stepTexels() int { return (p.texels*p.lanes + p.tail) * p.rows }

// groupBytes returns the bytes of one group of rows of cols weights.
func (p *packing) groupBytes(cols int) uint64 {
	return 16 * uint64(p.steps(cols)) * uint64(p.stepTexels())
}

// rowBytes returns the bytes per row in the packed layout (a group's bytes
// over its rows), which for whole groups is exact.
func (p *packing) rowBytes(cols int) uint64 { return p.groupBytes(cols) / uint64(p.rows) }

// bytes returns the size of a packed matrix of rows × cols: whole groups.
func (p *packing) bytes(rows, cols int) uint64 {
	return uint64((rows+p.rows-1)/p.rows) * p.groupBytes(cols)
}

// unitBytes is the GGUF bytes of a lane unit.
func (p *packing) unitBytes() int { return packUnit / p.t.BlockSize() * p.t.BlockBytes() }

// pack converts rows × cols weights from GGUF layout to the packed one.
func (p *packing) pack(raw []byte, rows, cols int) ([]byte, error) {
	if !p.fits(cols) {
		return nil, fmt.Errorf("packing %v: %d columns is not a multiple of %d", p.t, cols, packUnit)
	}
	rb := p.t.RowBytes(cols)
	if rows <= 0 || len(raw) < rows*rb {
		return nil, fmt.Errorf("packing %v: %d bytes for %d rows of %d", p.t, len(raw), rows, rb)
	}
	out := make([]byte, p.bytes(rows, cols))
	p.walk(rows, cols, func(row, unit int, texel func(t int) []byte, d []byte) {
		p.packUnit(raw[row*rb+unit*p.unitBytes():][:p.unitBytes()], texel, d)
	}, out)
	return out, nil
}

// unpack is pack's inverse (for tests).
func (p *packing) unpack(packed []byte, rows, cols int) ([]byte, error) {
	if !p.fits(cols) || uint64(len(packed)) < p.bytes(rows, cols) {
		return nil, fmt.Errorf("unpacking %v: %d bytes for %d × %d", p.t, len(packed), rows, cols)
	}
	rb := p.t.RowBytes(cols)
	out := make([]byte, rows*rb)
	p.walk(rows, cols, func(row, unit int, texel func(t int) []byte, d []byte) {
		p.unpackUnit(out[row*rb+unit*p.unitBytes():][:p.unitBytes()], texel, d)
	}, packed)
	return out, nil
}

// walk calls fn for every lane unit of the matrix that holds weights,
// with the unit's texel t of buf and where its tail d (Q6_K) lies.
func (p *packing) walk(rows, cols int, fn func(row, unit int, texel func(t int) []byte, d []byte), buf []byte) {
	units, steps := cols/packUnit, p.steps(cols)
	st := p.stepTexels()
	for row := range rows {
		g, r := row/p.rows, row%p.rows
		for unit := range units {
			s, l := unit/p.lanes, unit%p.lanes
			step := 16 * ((g*steps + s) * st)
			texel := func(t int) []byte {
				o := step + 16*((t*p.rows+r)*p.lanes+l)
				return buf[o : o+16]
			}
			var d []byte
			if p.tail > 0 {
				o := step + 16*(p.texels*p.rows*p.lanes+r*p.tail) + 2*l
				d = buf[o : o+2]
			}
			fn(row, unit, texel, d)
		}
	}
}

// packUnit places one lane unit's GGUF bytes u into its texels.
func (p *packing) packUnit(u []byte, texel func(t int) []byte, d []byte) {
	switch p.t {
	case gguf.Q4_0, gguf.Q8_0:
		bb, qb := p.t.BlockBytes(), p.t.BlockBytes()-2
		scales := texel(p.texels - 1)
		for b := range 8 {
			blk := u[b*bb : (b+1)*bb]
			copy(scales[2*b:], blk[:2])
			for i := 0; i < qb; i += 16 {
				copy(texel((b*qb+i)/16), blk[2+i:2+i+16])
			}
		}
	case gguf.Q6_K:
		for t := range 13 {
			copy(texel(t), u[16*t:])
		}
		copy(d, u[208:210])
	default:
		for t := range p.texels {
			copy(texel(t), u[16*t:])
		}
	}
}

// unpackUnit is packUnit's inverse.
func (p *packing) unpackUnit(u []byte, texel func(t int) []byte, d []byte) {
	switch p.t {
	case gguf.Q4_0, gguf.Q8_0:
		bb, qb := p.t.BlockBytes(), p.t.BlockBytes()-2
		scales := texel(p.texels - 1)
		for b := range 8 {
			blk := u[b*bb : (b+1)*bb]
			copy(blk[:2], scales[2*b:])
			for i := 0; i < qb; i += 16 {
				copy(blk[2+i:2+i+16], texel((b*qb+i)/16))
			}
		}
	case gguf.Q6_K:
		for t := range 13 {
			copy(u[16*t:], texel(t))
		}
		copy(u[208:210], d)
	default:
		for t := range p.texels {
			copy(u[16*t:], texel(t))
		}
	}
}

// Packed reports whether MatVec (and, on CPU devices, MatMul) on a device
// reads a matrix of type t with rows of cols weights in the packed layout
// rather than GGUF's; Pack converts one.
func Packed(info vk.DeviceInfo, t gguf.Type, cols int) bool {
	p := packingFor(info, t)
	return p != nil && p.fits(cols)
}

// PackGroup is the rows of one group of the packed layout of type t on a
// device: matrices that kernels read as one (stacked rows) must each hold
// a multiple of it, since each matrix's last group is padded with zeros.
func PackGroup(info vk.DeviceInfo, t gguf.Type) int {
	if p := packingFor(info, t); p != nil {
		return p.rows
	}
	return 1
}

// Pack returns rows × cols weights of type t (GGUF layout in raw) in the
// packed layout of the device; see Packed.
func Pack(info vk.DeviceInfo, t gguf.Type, rows, cols int, raw []byte) ([]byte, error) {
	p := packingFor(info, t)
	if p == nil {
		return nil, fmt.Errorf("packing %v: the device reads this type in GGUF layout", t)
	}
	return p.pack(raw, rows, cols)
}
