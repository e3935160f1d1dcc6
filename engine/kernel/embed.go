package kernel

import (
	"fmt"
	"math"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// Embed looks up token embeddings: out[t] = W[ids[t]] decoded to f32, for a
// GGUF embedding matrix W of vocab rows of dim values of one type.
// An id at or above vocab gives a row of zeros rather than reading past W.
type Embed struct {
	d     *vk.Device
	k     *vk.Kernel
	name  string
	t     gguf.Type
	dim   int
	vocab int
	// maxBind is the most bytes one binding of W may span: the device
	// limit, lowered by tests to exercise the split.
	maxBind uint64
}

// NewEmbed prepares the lookup for a vocab × dim matrix of type t.
func NewEmbed(d *vk.Device, t gguf.Type, dim, vocab int) (*Embed, error) {
	name, err := kernelName("embed", t)
	if err != nil {
		return nil, err
	}
	if dim <= 0 || vocab <= 0 || dim > math.MaxInt32/4 || vocab > math.MaxInt32 {
		return nil, fmt.Errorf("%s: shape %d×%d out of range", name, vocab, dim)
	}
	if bs := t.BlockSize(); dim%bs != 0 {
		return nil, fmt.Errorf("%s: dimension %d is not a multiple of the %v block size %d", name, dim, t, bs)
	}
	if err := skNeed(d, name, false, t != gguf.F32); err != nil {
		return nil, err
	}
	k, err := skKernel(d, name, 3, 20)
	if err != nil {
		return nil, err
	}
	return &Embed{d: d, k: k, name: name, t: t, dim: dim, vocab: vocab, maxBind: d.Info().MaxStorageBufferRange}, nil
}

// Record records the lookup of tokens ids (uint32) from w into out
// (tokens × dim f32). Because the ids are only known on the device, the
// whole of W is bound: when it is larger than one binding may be, it is
// split by rows into as many dispatches as needed, each writing the tokens
// whose row it holds. That is one dispatch unless W exceeds the device's
// maxStorageBufferRange (128 MiB on lavapipe, 4 GiB on most GPUs).
func (e *Embed) Record(c *vk.Commands, ids, w, out vk.Range, tokens int) error {
	info := e.d.Info()
	name := e.name
	if tokens <= 0 || tokens > math.MaxInt32/e.dim {
		return fmt.Errorf("%s: %d tokens out of range", name, tokens)
	}
	grid, err := skGrid(info, name, int(groups(e.dim, skWG)), tokens)
	if err != nil {
		return err
	}
	ib, err := skBind(info, name, "ids", ids, 4*uint64(tokens))
	if err != nil {
		return err
	}
	ob, err := skBind(info, name, "output", out, 4*uint64(tokens)*uint64(e.dim))
	if err != nil {
		return err
	}
	rowBytes := uint64(e.t.RowBytes(e.dim))
	unit := uint64(2) // w[] of the shader is uint16_t, or float for F32
	if e.t == gguf.F32 {
		unit = 4
	}
	if w.Buf == nil {
		return fmt.Errorf("%s: weight range has no buffer", name)
	}
	if need := uint64(e.vocab) * rowBytes; w.Size < need {
		return fmt.Errorf("%s: weight range holds %d bytes, a %d×%d %v matrix needs %d", name, w.Size, e.vocab, e.dim, e.t, need)
	}
	if w.Off%unit != 0 {
		return fmt.Errorf("%s: weight range offset %d is not a multiple of %d bytes", name, w.Off, unit)
	}
	per := e.rowsPerBinding()
	if per == 0 {
		return fmt.Errorf("%s: a row of %d bytes does not fit one storage-buffer binding of %d bytes", name, rowBytes, e.maxBind)
	}
	align := max(info.MinStorageBufferOffsetAlignment, 1)
	for lo := 0; lo < e.vocab; lo += per {
		if lo > 0 {
			// The chunks write disjoint rows of out, but synchronization
			// validation tracks whole bindings and would see a hazard.
			c.Barrier()
		}
		hi := min(lo+per, e.vocab)
		abs := w.Off + uint64(lo)*rowBytes
		start := abs - abs%align
		wb := vk.Range{Buf: w.Buf, Off: start, Size: abs + uint64(hi-lo)*rowBytes - start}
		c.Dispatch(e.k, grid, push(uint32(e.dim), uint32(lo), uint32(hi), uint32(e.vocab), uint32((abs-start)/unit)),
			ib, wb, ob)
	}
	return nil
}

// rowsPerBinding is how many rows of W one dispatch binds. A binding starts
// at an aligned offset, up to align−1 bytes before its first row.
func (e *Embed) rowsPerBinding() int {
	align := max(e.d.Info().MinStorageBufferOffsetAlignment, 1)
	rowBytes := uint64(e.t.RowBytes(e.dim))
	if e.maxBind < align-1+rowBytes {
		return 0
	}
	return int(min((e.maxBind-(align-1))/rowBytes, uint64(e.vocab)))
}
