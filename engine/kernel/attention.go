package kernel

import (
	"fmt"
	"math"
	"strings"
	"sync"

	"headinfer/engine/gguf"
	"headinfer/shaders"
	"headinfer/vk"
)

// Attention runs flash attention for one geometry (KV element type, head
// dimension, grouped-query group size) as two kernels: attn_partial, which
// attends the queries of KV head groups to fixed-size blocks of a KV range
// and writes one unnormalised partial per block, and attn_merge, which folds
// partials into a running accumulator in index order and finally normalises.
// Splitting attention this way lets the engine compute resident heads in one
// pass and streamed heads a batch of blocks at a time with the same
// arithmetic in the same order, so the results are bit-identical.
//
// Partial layout (f32): parts[part][token][head][headDim+4], where head runs
// over the KVHeads·group query heads of one partial dispatch (KV head z's
// query head j is head z·group+j) and an entry holds the unnormalised output
// O[0..headDim) = Σ exp(s−m)·v, then the running maximum m of the scores
// s = scale·q·k (soft-capped, see AttnParams), then l = Σ exp(s−m), then
// two zeros. An entry that saw no visible KV row holds m = −math.MaxFloat32
// (standing for −∞), l = 0, O = 0.
// The merge accumulator uses the same layout with a single part.
//
// attn_partial comes in two variants with the same contract: a shared-memory
// tiled one for GPUs and one for CPU drivers (lavapipe), where each SIMD lane
// runs its own online softmax over a share of the block's rows in private
// registers (see shaders/attn_partial_cpu.glsl). NewAttention picks the CPU
// variant on CPU devices when a group's query rows fit its registers. The
// choice is fixed per Attention, so the arithmetic is too.
//
// The partial kernels are compiled on first use, because the CPU driver
// takes seconds per specialisation and a model may never prefill or never
// decode. An Attention may be used from several goroutines.
type Attention struct {
	d       *vk.Device
	kt, vt  gguf.Type // K and V element types
	headDim int
	group   int
	cpu     bool // the CPU variant of attn_partial
	merge   *vk.Kernel

	mu      sync.Mutex
	decode  attnKernel // one query token per workgroup
	prefill attnKernel // several query tokens per workgroup
}

// attnKernel is one specialisation of attn_partial, compiled on first use.
type attnKernel struct {
	spec   vk.KernelSpec
	tokens int // query tokens per workgroup (BR)
	k      *vk.Kernel
}

// attnVariant selects the attn_partial implementation.
type attnVariant int

const (
	attnAuto attnVariant = iota // by device type
	attnGPU
	attnCPU
)

// AttnParams are the push constants of one RecordPartial dispatch.
type AttnParams struct {
	NTokens    int     // query tokens: rows of Q and entries of positions
	QHeads     int     // query heads per Q row (a Q row holds QHeads·headDim floats)
	QHead0     int     // query head served first by KV head 0 of the dispatch (its group's first head)
	KVStart    int     // absolute position of row 0 of the bound K/V ranges
	KVRows     int     // KV rows in the bound ranges, per head
	Block      int     // rows per block; block b covers rows [b·Block, min((b+1)·Block, KVRows))
	PartBase   int     // part index written by block 0
	SlotStride int     // elements from one KV head's rows to the next's in K and V (multiple of 4)
	KVHeads    int     // KV heads in the dispatch (grid z); head z serves query heads QHead0+z·group …
	Scale      float32 // score scale, usually 1/sqrt(headDim)
	// Window is the sliding window in positions, 0 for none: a query at
	// position t sees positions p with t−Window < p ≤ t (llama.cpp's
	// standard sliding window; see Visible).
	Window int
	// SoftCap is the score soft cap c, 0 for none: a score s = Scale·q·k
	// becomes c·tanh(s/c) before the softmax (Gemma 2).
	SoftCap float32
	// Ring, when not 0, says that K and V are whole ring slots of Ring
	// rows (a multiple of Block): position p lives in row p mod Ring, and
	// the ring holds the latest Ring/Block position blocks, the newest
	// being the one of the last query's position (the positions must
	// end with the chunk's largest). The dispatch then covers KVRows/
	// Block of those blocks, oldest first, from the (KVStart/Block)-th
	// on; a block before position 0 holds nothing. Merged in that order
	// they give the bits of the same rows in a full slot.
	Ring int
}

// Visible says whether KV position p is visible to a query at position t
// under sliding window w (0: none): p ≤ t and t−p < w. It is the mask of
// llama.cpp's LLAMA_SWA_TYPE_STANDARD, whose is_masked_swa(p0, p1) masks
// key position p0 from a query at p1 when p1 − p0 ≥ n_swa, so a query sees
// itself and the w−1 positions before it.
func Visible(p, t, w int) bool { return p <= t && (w == 0 || t-p < w) }

// WindowStart is the first position a query at position t sees under
// sliding window w (0: none).
func WindowStart(t, w int) int {
	if w == 0 || t < w {
		return 0
	}
	return t - w + 1
}

// CheckAttnFeatures reports a sliding window or soft cap that the
// attention kernels cannot apply: a negative window or one past 32 bits,
// and a negative or non-finite cap.
func CheckAttnFeatures(window int, softCap float32) error {
	if window < 0 || uint64(window) > math.MaxUint32 {
		return fmt.Errorf("attention: sliding window %d is outside 0..%d (0: none)", window, uint32(math.MaxUint32))
	}
	if c := float64(softCap); math.IsNaN(c) || math.IsInf(c, 0) || c < 0 {
		return fmt.Errorf("attention: soft cap %v is not a finite value ≥ 0 (0: none)", softCap)
	}
	return nil
}

// MergeParams are the push constants of one RecordMerge dispatch.
type MergeParams struct {
	NTokens   int  // query tokens
	Heads     int  // heads per token in parts and acc (KVHeads·group of the partial dispatch)
	PartFirst int  // first part folded
	NParts    int  // parts folded, in index order; 0 only finalizes (or initializes)
	Init      bool // start from the neutral element instead of reading acc
	Finalize  bool // write O/l to out after folding
	OutHeads  int  // heads per out row (out rows hold OutHeads·headDim floats)
	OutHead0  int  // out head of accumulator head 0
}

const (
	attnWG         = 128      // threads per GPU attn_partial workgroup
	attnGPURows    = 32       // query rows (tokens × group) a GPU prefill workgroup aims at
	attnCPUFloats  = 4 * 128  // query rows × headDim a CPU workgroup keeps in registers (compile time grows fast beyond)
	attnCPUMaxRows = 16       // query rows of a CPU workgroup, for small heads
	mergeWG        = 64       // threads per attn_merge workgroup (fixed in the shader)
	attnShmemCap   = 32 << 10 // shared memory aimed at, for occupancy on GPUs
	attnMaxGroups  = 65535    // workgroups per grid dimension every device supports
	attnPushBytes  = 13 * 4   // AttnParams as attn_partial's push constants
)

// PartsBytes is the size of a partial buffer holding nParts parts for
// nTokens tokens and heads query heads (group × KV heads of a dispatch).
// The merge accumulator is PartsBytes(nTokens, heads, headDim, 1).
func PartsBytes(nTokens, heads, headDim, nParts int) int {
	return nParts * nTokens * heads * (headDim + 4) * 4
}

// Blocks is the number of blocks (and so parts) a partial dispatch over
// kvRows rows in blocks of block rows writes.
func Blocks(kvRows, block int) int { return (kvRows + block - 1) / block }

// NewAttention prepares the attention kernels for K and V of type kv
// (see NewAttentionKV).
func NewAttention(d *vk.Device, kv gguf.Type, headDim, group int) (*Attention, error) {
	return newAttention(d, kv, kv, headDim, group, attnAuto)
}

// NewAttentionKV prepares the attention kernels for K of type k and V of
// type v (F16, F32, Q8_0 or Q4_0; F32 only with F32), head dimension
// headDim (a multiple of 4 up to 256, of 32 with a quantized type) and
// group query heads per KV head. Quantized K and V are dequantized in
// registers as they are read, exactly as gguf.Dequantize does.
func NewAttentionKV(d *vk.Device, k, v gguf.Type, headDim, group int) (*Attention, error) {
	return newAttention(d, k, v, headDim, group, attnAuto)
}

// KVTypes are the element types of the K and V the kernels read.
func (a *Attention) KVTypes() (k, v gguf.Type) { return a.kt, a.vt }

// attnKVName is the K and V part of an attn_partial kernel's name: the
// type, or the K and then the V type when they differ.
func attnKVName(k, v gguf.Type) string {
	if k == v {
		return strings.ToLower(k.String())
	}
	return strings.ToLower(k.String()) + "_" + strings.ToLower(v.String())
}

func newAttention(d *vk.Device, kt, vt gguf.Type, headDim, group int, variant attnVariant) (*Attention, error) {
	for _, t := range []gguf.Type{kt, vt} {
		if err := CheckKVType(t, headDim); err != nil {
			return nil, fmt.Errorf("attention: %w", err)
		}
	}
	if kt != vt && (kt == gguf.F32 || vt == gguf.F32) {
		return nil, fmt.Errorf("attention: K of type %v with V of type %v is not supported (f32 goes with f32 only)", kt, vt)
	}
	if headDim < 4 || headDim > 256 || headDim%4 != 0 {
		return nil, fmt.Errorf("attention: head dimension %d is not supported (need a multiple of 4 up to 256)", headDim)
	}
	if group < 1 || group > 1024 {
		return nil, fmt.Errorf("attention: group size %d is out of range 1..1024", group)
	}
	a := &Attention{d: d, kt: kt, vt: vt, headDim: headDim, group: group}
	switch variant {
	case attnAuto:
		// Larger heads compile for tens of seconds on a CPU driver.
		a.cpu = d.Info().Type == vk.CPU && group*headDim <= attnCPUFloats && headDim <= 128
	case attnCPU:
		if group*headDim > attnCPUFloats {
			return nil, fmt.Errorf("attention: group %d × head dimension %d is too large for the CPU kernel", group, headDim)
		}
		a.cpu = true
	}
	var err error
	if a.cpu {
		name := "attn_partial_cpu_" + attnKVName(kt, vt)
		a.decode = a.cpuKernel(name, 1)
		a.prefill = a.cpuKernel(name, max(1, min(attnCPUMaxRows, attnCPUFloats/headDim)/group))
	} else {
		name := "attn_partial_" + attnKVName(kt, vt)
		limit := min(int(d.Info().MaxSharedMemory), attnShmemCap)
		if a.decode, err = a.gpuKernel(name, 1, limit); err != nil {
			return nil, err
		}
		if a.prefill, err = a.gpuKernel(name, max(1, attnGPURows/group), limit); err != nil {
			return nil, err
		}
	}
	a.merge, err = d.Kernel(vk.KernelSpec{
		Name: "attn_merge", SPIRV: shaders.MustSPIRV("attn_merge"),
		Buffers: 3, PushBytes: 8 * 4, Spec: []uint32{uint32(headDim)},
	})
	if err != nil {
		return nil, fmt.Errorf("attention: %w", err)
	}
	return a, nil
}

// gpuKernel specialises the GPU attn_partial for tokens query tokens per
// workgroup, shrinking the sub-tile and then the token tile until the
// shared memory fits in limit bytes.
func (a *Attention) gpuKernel(name string, tokens, limit int) (attnKernel, error) {
	cols := 32
	for attnShmem(a.headDim, tokens*a.group, tokens, cols) > limit {
		switch {
		case cols > 16:
			cols /= 2
		case tokens > 1:
			tokens /= 2
		case cols > 4:
			cols /= 2
		default:
			return attnKernel{}, fmt.Errorf("attention: head dimension %d with group %d needs %d bytes of shared memory, the device has %d",
				a.headDim, a.group, attnShmem(a.headDim, a.group, 1, cols), limit)
		}
	}
	return attnKernel{tokens: tokens, spec: vk.KernelSpec{
		Name: name, SPIRV: shaders.MustSPIRV(name),
		Buffers: 5, PushBytes: attnPushBytes,
		Spec: []uint32{attnWG, uint32(a.headDim), uint32(a.group), uint32(tokens), uint32(cols)},
	}}, nil
}

// cpuKernel specialises the CPU attn_partial for tokens query tokens per
// workgroup, with as many lanes as the device's SIMD width.
func (a *Attention) cpuKernel(name string, tokens int) attnKernel {
	lanes := int(a.d.Info().SubgroupSize)
	if lanes < 4 || lanes > 64 {
		lanes = 8
	}
	return attnKernel{tokens: tokens, spec: vk.KernelSpec{
		Name: name, SPIRV: shaders.MustSPIRV(name),
		Buffers: 5, PushBytes: attnPushBytes,
		Spec: []uint32{uint32(lanes), uint32(a.headDim), uint32(a.group), uint32(tokens), 1},
	}}
}

// partial returns the attn_partial specialisation for nTokens query
// tokens, compiling it on first use.
func (a *Attention) partial(nTokens int) (*attnKernel, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ak := &a.prefill
	if nTokens == 1 {
		ak = &a.decode
	}
	if ak.k == nil {
		k, err := a.d.Kernel(ak.spec)
		if err != nil {
			return nil, fmt.Errorf("attention: %w", err)
		}
		ak.k = k
	}
	return ak, nil
}

// attnShmem is the shared memory attn_partial declares for rows query rows
// of tokens tokens and sub-tiles of cols KV rows.
func attnShmem(headDim, rows, tokens, cols int) int {
	hd4 := headDim / 4
	return 16*(rows*hd4+cols*(hd4+1)) + 4*(rows*cols+3*rows+tokens)
}

// RecordPartial records attn_partial: the queries q (f32 [NTokens][QHeads·
// headDim], RoPE applied) at absolute positions positions (u32 [NTokens])
// attend, causally and within the sliding window (position p is visible to
// a query at position t iff Visible(p, t, Window)), with scores scaled and
// soft-capped, to the KV rows in k and v, and block b of each KV head writes part
// PartBase+b of parts (see Attention for the layout). Query tokens are
// processed one per workgroup when NTokens is 1 and in tiles otherwise; the
// choice depends only on NTokens, so equal dispatches give equal bits.
//
// A block's partial depends only on its rows and their absolute positions,
// so streaming a head's rows in batches that start on block boundaries of
// the whole range (KVStart advanced by a multiple of Block, PartBase by the
// blocks before) and merging the parts in order reproduces the one-pass
// result bit for bit. K and V must each fit one storage-buffer binding;
// split longer ranges the same way.
func (a *Attention) RecordPartial(c *vk.Commands, q, k, v, positions, parts vk.Range, p AttnParams) error {
	switch {
	case p.NTokens < 1 || p.QHeads < 1 || p.KVRows < 1 || p.Block < 1 || p.KVHeads < 1:
		return fmt.Errorf("attention: NTokens %d, QHeads %d, KVRows %d, Block %d and KVHeads %d must all be positive",
			p.NTokens, p.QHeads, p.KVRows, p.Block, p.KVHeads)
	case p.QHead0 < 0 || p.KVStart < 0 || p.PartBase < 0 || p.SlotStride < 0:
		return fmt.Errorf("attention: QHead0 %d, KVStart %d, PartBase %d and SlotStride %d must not be negative",
			p.QHead0, p.KVStart, p.PartBase, p.SlotStride)
	case p.QHead0+p.KVHeads*a.group > p.QHeads:
		return fmt.Errorf("attention: query heads %d..%d of the dispatch exceed the %d heads of a Q row",
			p.QHead0, p.QHead0+p.KVHeads*a.group-1, p.QHeads)
	case p.SlotStride%4 != 0:
		return fmt.Errorf("attention: slot stride %d is not a multiple of 4 elements", p.SlotStride)
	case p.KVHeads > 1 && p.SlotStride < p.KVRows*a.headDim:
		return fmt.Errorf("attention: slot stride %d is shorter than the %d×%d elements of a head's rows",
			p.SlotStride, p.KVRows, a.headDim)
	case math.IsNaN(float64(p.Scale)) || math.IsInf(float64(p.Scale), 0):
		return fmt.Errorf("attention: scale %v is not finite", p.Scale)
	case uint64(p.KVStart)+uint64(p.KVRows) > math.MaxUint32:
		return fmt.Errorf("attention: KV positions %d..%d exceed 32 bits", p.KVStart, p.KVStart+p.KVRows)
	case p.Ring < 0 || p.Ring > 0 && (p.Ring%p.Block != 0 || p.KVStart%p.Block != 0 || p.KVRows%p.Block != 0 || p.KVStart+p.KVRows > p.Ring):
		return fmt.Errorf("attention: ring of %d rows with blocks %d..%d of %d rows: the ring and the range must be whole blocks, the range within the ring",
			p.Ring, p.KVStart/p.Block, (p.KVStart+p.KVRows)/p.Block, p.Block)
	case p.Ring > 0 && p.KVHeads > 1 && p.SlotStride < p.Ring*a.headDim:
		return fmt.Errorf("attention: slot stride %d is shorter than the %d×%d elements of a head's ring",
			p.SlotStride, p.Ring, a.headDim)
	}
	if err := CheckAttnFeatures(p.Window, p.SoftCap); err != nil {
		return err
	}
	nb := Blocks(p.KVRows, p.Block)
	bound := p.KVRows // rows of the bound ranges, per head
	if p.Ring > 0 {
		bound = p.Ring
	}
	kvElems := uint64(p.KVHeads-1)*uint64(p.SlotStride) + uint64(bound)*uint64(a.headDim)
	heads := p.KVHeads * a.group
	if bs := max(a.kt.BlockSize(), a.vt.BlockSize()); p.SlotStride%bs != 0 {
		return fmt.Errorf("attention: slot stride %d is not a whole number of %d-value blocks", p.SlotStride, bs)
	}
	if err := attnCheckSizes(
		attnNeed{"Q", q, uint64(p.NTokens) * uint64(p.QHeads) * uint64(a.headDim) * 4},
		attnNeed{"K", k, KVBytes(a.kt, kvElems)},
		attnNeed{"V", v, KVBytes(a.vt, kvElems)},
		attnNeed{"positions", positions, uint64(p.NTokens) * 4},
		attnNeed{"parts", parts, uint64(PartsBytes(p.NTokens, heads, a.headDim, p.PartBase+nb))},
	); err != nil {
		return err
	}
	kern, err := a.partial(p.NTokens)
	if err != nil {
		return err
	}
	tiles := groups(p.NTokens, kern.tokens)
	if tiles > attnMaxGroups || nb > attnMaxGroups || p.KVHeads > attnMaxGroups {
		return fmt.Errorf("attention: grid %d×%d×%d exceeds %d workgroups per dimension (use larger blocks)",
			tiles, nb, p.KVHeads, attnMaxGroups)
	}
	pc, err := pushChecked(p.NTokens, p.QHeads, p.QHead0, p.KVStart, p.KVRows, p.Block,
		p.PartBase, p.SlotStride, p.KVHeads, p.Scale, p.Window, p.SoftCap, p.Ring)
	if err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	c.Dispatch(kern.k, [3]uint32{tiles, uint32(nb), uint32(p.KVHeads)}, pc, q, k, v, positions, parts)
	return nil
}

// RecordMerge records attn_merge: it folds parts PartFirst … PartFirst+
// NParts−1 of parts, in that order, into the accumulator acc (starting from
// acc's contents, or from the neutral element when Init is set) and stores
// the result back in acc; with Finalize it also writes the normalised
// output O/l for token t and head h to out (f32 [NTokens][OutHeads·headDim])
// at head OutHead0+h, or 0 for a head that saw no visible KV row. Merging
// parts in one dispatch or in consecutive dispatches that carry acc gives
// bit-identical results. Without Finalize out is not touched and may be the
// zero Range.
func (a *Attention) RecordMerge(c *vk.Commands, parts, acc, out vk.Range, p MergeParams) error {
	switch {
	case p.NTokens < 1 || p.Heads < 1:
		return fmt.Errorf("attention: merge of %d tokens × %d heads: both must be positive", p.NTokens, p.Heads)
	case p.PartFirst < 0 || p.NParts < 0 || p.OutHead0 < 0:
		return fmt.Errorf("attention: merge PartFirst %d, NParts %d and OutHead0 %d must not be negative",
			p.PartFirst, p.NParts, p.OutHead0)
	case p.Finalize && p.OutHead0+p.Heads > p.OutHeads:
		return fmt.Errorf("attention: merge output heads %d..%d exceed the %d heads of an output row",
			p.OutHead0, p.OutHead0+p.Heads-1, p.OutHeads)
	}
	need := []attnNeed{{"acc", acc, uint64(PartsBytes(p.NTokens, p.Heads, a.headDim, 1))}}
	if p.NParts > 0 {
		need = append(need, attnNeed{"parts", parts, uint64(PartsBytes(p.NTokens, p.Heads, a.headDim, p.PartFirst+p.NParts))})
	} else {
		parts = acc // nothing is read from it; any valid range will do
	}
	if p.Finalize {
		need = append(need, attnNeed{"out", out, uint64(p.NTokens) * uint64(p.OutHeads) * uint64(a.headDim) * 4})
	} else {
		out = acc
	}
	if err := attnCheckSizes(need...); err != nil {
		return err
	}
	perGroup := mergeWG / (a.headDim / 4)
	wgs := int(groups(p.NTokens*p.Heads, perGroup))
	x := min(wgs, attnMaxGroups)
	y := (wgs + x - 1) / x
	if y > attnMaxGroups {
		return fmt.Errorf("attention: merge of %d tokens × %d heads is too large for one dispatch", p.NTokens, p.Heads)
	}
	pc, err := pushChecked(p.NTokens, p.Heads, p.PartFirst, p.NParts, attnFlag(p.Init), attnFlag(p.Finalize), p.OutHeads, p.OutHead0)
	if err != nil {
		return fmt.Errorf("attention: %w", err)
	}
	c.Dispatch(a.merge, [3]uint32{uint32(x), uint32(y), 1}, pc, parts, acc, out)
	return nil
}

func attnFlag(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// attnNeed is a bound range and the bytes a dispatch reads or writes in it.
type attnNeed struct {
	name string
	r    vk.Range
	need uint64
}

// attnCheckSizes reports the first range that is missing or too small.
func attnCheckSizes(needs ...attnNeed) error {
	for _, n := range needs {
		if n.r.Buf == nil {
			return fmt.Errorf("attention: no %s buffer bound", n.name)
		}
		if n.r.Size < n.need {
			return fmt.Errorf("attention: %s range holds %d bytes, the dispatch needs %d", n.name, n.r.Size, n.need)
		}
	}
	return nil
}
