// Package offload is the HeadInfer core: head-wise KV offload. It places a
// sequence's KV cache (Cache: per layer, the first KV heads resident in
// device memory, the others in the host store, one K and one V region per
// streamed (layer, KV head) slot in pinned host memory that the device
// copies from and to directly), schedules a step's attention over it
// (Cache.Attend: resident heads in place, streamed heads block by block
// through two device buffers), and records the step as a Program, command
// buffers on the compute and transfer queues that timeline semaphores
// order.
package offload

import (
	"fmt"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// Geometry is the shape of a KV cache.
type Geometry struct {
	Layers, KVHeads int
	HeadDim         int
	Ctx             int // positions per slot
	// K and V are the element types of the keys and the values (F16, F32,
	// Q8_0 or Q4_0; see kernel.KVTypes), chosen apart. A quantized row is
	// HeadDim/32 blocks; offsets within slots count elements, as the
	// kernels' do, and become bytes through bytes.
	K, V gguf.Type
}

// typeOf is the element type of the values (isV) or the keys.
func (g Geometry) typeOf(isV bool) gguf.Type {
	if isV {
		return g.V
	}
	return g.K
}

// RowBytes is the size of one position of one slot's V (isV) or K.
func (g Geometry) RowBytes(isV bool) uint64 {
	return kernel.KVBytes(g.typeOf(isV), uint64(g.HeadDim))
}

// RowBytesKV is the size of one position of one slot's K and V together.
func (g Geometry) RowBytesKV() uint64 { return g.RowBytes(false) + g.RowBytes(true) }

// SlotBytes is the size of one slot's V (isV) or K region: Ctx rows.
func (g Geometry) SlotBytes(isV bool) uint64 { return uint64(g.Ctx) * g.RowBytes(isV) }

// SlotRows is the rows a slot of rows positions takes in memory: with a
// block-quantized K or V, rows round up to a multiple of 16, so that the
// slots after it start on a 16-byte boundary whatever rows is (a
// quantized row of 32 values is 18 or 34 bytes, which would leave an
// odd context's next slot on a 2-byte one, where no device binds).
func (g Geometry) SlotRows(rows int) int {
	if g.K.BlockSize() == 1 && g.V.BlockSize() == 1 {
		return rows
	}
	return (rows + 15) / 16 * 16
}

// bytes is the size of elems elements of V (isV) or K; elems is a whole
// number of rows, or of blocks.
func (g Geometry) bytes(isV bool, elems int) uint64 {
	return kernel.KVBytes(g.typeOf(isV), uint64(elems))
}

// Run is a run of consecutive streamed KV heads of one layer whose K (and
// V) regions lie back to back in one buffer, so that one kernel dispatch
// can address all of them: head First+i's rows start i·Stride elements
// into K and V.
type Run struct {
	First, N int
	K, V     *vk.Buffer
	Stride   int // elements from one head's region to the next's
}

// Store is the host KV store: for every streamed slot, a contiguous K and
// a contiguous V region of Ctx rows in Readback memory (host-visible,
// coherent, mapped, and host-cached where the device offers it, so that
// the CPU reads it at memory speed rather than through uncached
// write-combined mappings), which copies on either queue read and kernels
// may write. Coherent memory needs no flush after the host writes nor
// invalidate before it reads; a memory type that is cached but not
// coherent is not used.
type Store struct {
	g     Geometry
	first []int   // per layer: the first streamed head; heads first… are here
	runs  [][]Run // per layer
	bytes uint64
}

// NewStore allocates host regions for heads first[l] … KVHeads−1 of every
// layer l. Heads share a buffer while the buffer stays within both
// maxBuffer bytes (what one allocation and one binding may span) so that a
// layer's new rows are written with few dispatches; a slot larger than
// that gets a buffer of its own.
func NewStore(d *vk.Device, g Geometry, first []int, maxBuffer uint64) (*Store, error) {
	if len(first) != g.Layers {
		return nil, fmt.Errorf("offload: %d per-layer head counts for %d layers", len(first), g.Layers)
	}
	s := &Store{g: g, first: first, runs: make([][]Run, g.Layers)}
	stride := g.SlotRows(g.Ctx) * g.HeadDim
	kSlot, vSlot := g.bytes(false, stride), g.bytes(true, stride)
	slot := max(kSlot, vSlot)
	if m := d.Info().MaxAllocationSize; m > 0 && slot > m {
		return nil, fmt.Errorf("offload: one KV head of %d positions takes %s of host memory, more than the device allocates at once (%s): lower --ctx-size",
			g.Ctx, bytesize.Format(slot), bytesize.Format(m))
	}
	per := max(1, int(maxBuffer/max(slot, 1)))
	for l := 0; l < g.Layers; l++ {
		for h := first[l]; h < g.KVHeads; h += per {
			n := min(per, g.KVHeads-h)
			r := Run{First: h, N: n, Stride: stride}
			var err error
			if r.K, err = d.Alloc(vk.Readback, kSlot*uint64(n), fmt.Sprintf("host KV layer %d K", l)); err == nil {
				r.V, err = d.Alloc(vk.Readback, vSlot*uint64(n), fmt.Sprintf("host KV layer %d V", l))
			}
			if err != nil {
				r.K.Free()
				s.Free()
				return nil, fmt.Errorf("host KV store of %d positions: %w", g.Ctx, err)
			}
			s.runs[l] = append(s.runs[l], r)
			s.bytes += (kSlot + vSlot) * uint64(n)
		}
	}
	return s, nil
}

// Runs are layer l's streamed heads, grouped by buffer.
func (s *Store) Runs(l int) []Run { return s.runs[l] }

// Slot is the K and V range of rows [row, row+rows) of head h of layer l,
// which must be streamed.
func (s *Store) Slot(l, h, row, rows int) (k, v vk.Range, err error) {
	if l < 0 || l >= len(s.runs) || row < 0 || rows < 1 || row+rows > s.g.Ctx {
		return vk.Range{}, vk.Range{}, fmt.Errorf("offload: rows %d..%d of layer %d are outside the host store (%d layers, %d positions)",
			row, row+rows, l, len(s.runs), s.g.Ctx)
	}
	for _, r := range s.runs[l] {
		if h >= r.First && h < r.First+r.N {
			at := (h-r.First)*r.Stride + row*s.g.HeadDim
			elems := rows * s.g.HeadDim
			k = r.K.Range(s.g.bytes(false, at), s.g.bytes(false, elems))
			v = r.V.Range(s.g.bytes(true, at), s.g.bytes(true, elems))
			return k, v, nil
		}
	}
	return vk.Range{}, vk.Range{}, fmt.Errorf("offload: head %d of layer %d is not in the host store", h, l)
}

// Bytes is the host memory the store holds.
func (s *Store) Bytes() uint64 { return s.bytes }

// Free releases the store's memory; the device must be done with it.
func (s *Store) Free() {
	for _, runs := range s.runs {
		for _, r := range runs {
			r.K.Free()
			r.V.Free()
		}
	}
	s.runs = nil
	s.bytes = 0
}
