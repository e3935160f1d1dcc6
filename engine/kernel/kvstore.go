package kernel

import (
	"fmt"
	"math"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// KVStore writes a chunk's new keys (after RoPE) or values into KV slots,
// converting to the cache's element type (f32, f16 rounded to nearest
// even, or llama.cpp's Q8_0 and Q4_0 blocks of 32 values along the head
// dimension, byte for byte what gguf.Quantize makes of the row). A slot
// holds one (layer, KV head): [rows][headDim] values, row r for position
// RowBase + r. Strides stay in elements whatever the type; a quantized
// row of headDim values takes t.RowBytes(headDim) bytes.
type KVStore struct {
	d    *vk.Device
	k    *vk.Kernel
	name string
	t    gguf.Type
	hdim int
}

// Type is the element type of the slots the store writes.
func (k *KVStore) Type() gguf.Type { return k.t }

// KVSlots says where one Record reads and writes.
type KVSlots struct {
	Tokens     int // rows of the source, one per token of the chunk
	SrcHeads   int // KV heads per source row: a row is SrcHeads·headDim f32
	FirstHead  int // the source head written to the first slot
	Heads      int // slots written: source heads FirstHead … FirstHead+Heads−1
	SlotStride int // elements from one slot to the next in the destination (a multiple of 32 for Q8_0 and Q4_0)
	SlotRows   int // rows (positions) each slot holds
	RowBase    int // the position that row 0 of each slot holds
	// Ring makes each slot a ring of SlotRows rows, position p in row
	// p mod SlotRows (RowBase unused): a sliding-window layer's slots,
	// which keep only the latest positions.
	Ring bool
}

// NewKVStore prepares the store into slots of type t (gguf.F16, F32, Q8_0
// or Q4_0) for heads of headDim values.
func NewKVStore(d *vk.Device, t gguf.Type, headDim int) (*KVStore, error) {
	if err := CheckKVType(t, headDim); err != nil {
		return nil, fmt.Errorf("kv_store: %w", err)
	}
	name := "kv_store_" + strings.ToLower(t.String())
	if headDim <= 0 || headDim > math.MaxInt32/4 {
		return nil, fmt.Errorf("%s: head size %d out of range", name, headDim)
	}
	if err := skNeed(d, name, false, t != gguf.F32); err != nil {
		return nil, err
	}
	k, err := skKernel(d, name, 3, 32)
	if err != nil {
		return nil, err
	}
	return &KVStore{d: d, k: k, name: name, t: t, hdim: headDim}, nil
}

// Record records the store of src (Tokens × SrcHeads·headDim f32) into the
// slots of dst, token t going to row positions[t] − RowBase. Tokens whose
// row falls outside [0, SlotRows) are skipped: they belong to another block
// of the cache, which a separate Record with another RowBase fills. With
// Ring, token t goes to row positions[t] mod SlotRows and none is skipped.
func (k *KVStore) Record(c *vk.Commands, src, positions, dst vk.Range, s KVSlots) error {
	info := k.d.Info()
	const lim = math.MaxInt32
	switch {
	case s.Tokens <= 0 || s.SrcHeads <= 0 || s.Heads <= 0 || s.SlotRows <= 0:
		return fmt.Errorf("%s: %d tokens, %d source heads, %d slots of %d rows: all must be positive",
			k.name, s.Tokens, s.SrcHeads, s.Heads, s.SlotRows)
	case s.FirstHead < 0 || s.FirstHead+s.Heads > s.SrcHeads:
		return fmt.Errorf("%s: heads %d to %d are not all among the %d source heads",
			k.name, s.FirstHead, s.FirstHead+s.Heads-1, s.SrcHeads)
	case s.SrcHeads > lim/k.hdim || s.Tokens > lim/(s.SrcHeads*k.hdim) || s.SlotRows > lim/k.hdim || s.SlotStride > lim:
		return fmt.Errorf("%s: shape out of range", k.name)
	case s.SlotStride < s.SlotRows*k.hdim:
		return fmt.Errorf("%s: slots %d elements apart overlap: each holds %d rows of %d",
			k.name, s.SlotStride, s.SlotRows, k.hdim)
	case s.RowBase < 0 || s.RowBase > math.MaxUint32:
		return fmt.Errorf("%s: row base %d out of range", k.name, s.RowBase)
	case s.SlotStride%k.t.BlockSize() != 0:
		return fmt.Errorf("%s: slot stride %d is not a whole number of %d-value blocks", k.name, s.SlotStride, k.t.BlockSize())
	}
	elems := uint64(s.Heads-1)*uint64(s.SlotStride) + uint64(s.SlotRows)*uint64(k.hdim)
	if elems > lim {
		return fmt.Errorf("%s: %d slots %d elements apart are too large for one dispatch", k.name, s.Heads, s.SlotStride)
	}
	grid, err := skGrid(info, k.name, int(groups(s.Heads*k.hdim/k.t.BlockSize(), skWG)), s.Tokens)
	if err != nil {
		return err
	}
	sb, err := skBind(info, k.name, "source", src, 4*uint64(s.Tokens)*uint64(s.SrcHeads*k.hdim))
	if err != nil {
		return err
	}
	pb, err := skBind(info, k.name, "positions", positions, 4*uint64(s.Tokens))
	if err != nil {
		return err
	}
	db, err := skBind(info, k.name, "destination", dst, KVBytes(k.t, elems))
	if err != nil {
		return err
	}
	c.Dispatch(k.k, grid,
		push(uint32(k.hdim), uint32(s.Heads), uint32(s.SrcHeads), uint32(s.FirstHead),
			uint32(s.SlotStride), uint32(s.SlotRows), uint32(s.RowBase), attnFlag(s.Ring)),
		sb, pb, db)
	return nil
}

// KVTypes are the KV cache element types the KV store and attention
// kernels read and write.
var KVTypes = []gguf.Type{gguf.F16, gguf.F32, gguf.Q8_0, gguf.Q4_0}

// CheckKVType reports a KV element type the kernels do not handle, and a
// block-quantized type whose 32-value blocks do not tile a head of
// headDim values (blocks run along the head dimension, as llama.cpp's do).
func CheckKVType(t gguf.Type, headDim int) error {
	switch t {
	case gguf.F16, gguf.F32:
		return nil
	case gguf.Q8_0, gguf.Q4_0:
		if headDim%t.BlockSize() != 0 {
			return fmt.Errorf("a %v KV cache needs a head size that is a multiple of %d; this model's is %d (use f16 or f32)",
				t, t.BlockSize(), headDim)
		}
		return nil
	}
	return fmt.Errorf("no KV cache of type %v (supported: f16, f32, q8_0, q4_0)", t)
}

// KVBytes is the size of elems elements of KV type t; for a block type,
// elems is a whole number of blocks (slots hold whole rows).
func KVBytes(t gguf.Type, elems uint64) uint64 {
	return elems / uint64(t.BlockSize()) * uint64(t.BlockBytes())
}
