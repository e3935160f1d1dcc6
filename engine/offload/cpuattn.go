package offload

/*
#cgo CFLAGS: -O3 -Wall
#cgo LDFLAGS: -lm
#include "cpuattn.h"
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
)

// CPUBlockRows is the number of KV rows one CPU task attends before its
// partial is folded with the head's others. It is fixed, not derived from
// the thread count, so that a result does not depend on the machine's
// cores: the same inputs give the same bits with any number of threads.
const CPUBlockRows = 1024

// cpuMaxRows bounds the query rows (tokens × group) per KV head of a call,
// which size every task's partial and every thread's scratch.
const cpuMaxRows = 1024

// cpuBlockFloats bounds the per task partials a call keeps at once (16
// MiB): decode at a million positions of 8 KV heads needs 4.3M floats at
// group 4, several tokens or larger groups take rounds.
const cpuBlockFloats = 4 << 20

// cpuMaxIndex bounds query heads and part indices, far beyond any model,
// so that size arithmetic on them cannot overflow.
const cpuMaxIndex = 1 << 20

// CPUAttention computes decode attention partials on the CPU for KV heads
// whose K and V rows live in host memory (the host KV store), so that
// streamed heads need not cross the device link. Its output is the partial
// layout of kernel.Attention (see kernel.PartsBytes): the device's
// attn_merge folds a CPU partial exactly as it folds a device one.
//
// The work of one call is split into tasks of CPUBlockRows rows of one KV
// head, run by a pool of threads; each task's partial is folded with the
// head's others in row order. The arithmetic is C compiled with -O3: it
// reads f16 or Q8_0/Q4_0 KV where it lies, converting (dequantizing) 32
// rows at a time to f32 in an L1 tile (the dequantization is exact but for
// one product per value, so every code gives the same tile), with AVX-512F where the CPU has it, else AVX2 + FMA + F16C, else
// portable C (see CPUCode), chosen at run time so that one binary serves
// every x86-64 CPU and other architectures build the portable code.
//
// The caller orders the CPU work with the device's: the step's new K/V rows
// and its queries must have been written by the device (its submission
// waited for, and invalidated where the memory is not coherent) before
// Partial reads them, and the merge that folds the parts must be submitted
// (or released) only after Partial returns. The host store must be memory
// the CPU reads at full speed (cached), not write-combined.
//
// A CPUAttention serves one call at a time (calls from several goroutines
// are serialised). It holds threads until Close.
type CPUAttention struct {
	mu      sync.Mutex
	threads int
	code    CPUCode         // the best code this CPU runs
	start   []chan struct{} // one per pool goroutine; closed by Close
	done    sync.WaitGroup
	scratch [][]float32 // per thread (index 0: the caller)
	blocks  []float32   // per task partials, reused
	// blockFloats bounds blocks: a call whose tasks' partials would need
	// more runs in rounds of fewer blocks per head (a variable for tests).
	blockFloats int
	job         cpuJob
	next        atomic.Int64
	closed      bool
}

// cpuJob is the call being worked on, read by every thread.
type cpuJob struct {
	shape   C.hi_cpuattn_shape
	q       []float32
	pos     []uint32
	heads   []CPUHeadKV
	kRowB   int // bytes per K row
	vRowB   int // bytes per V row
	qHead0  int
	kvStart int64
	rows    int
	b0, nb  int // the round's first block and blocks per head
	entry   int // floats per task partial
}

// CPUHeadKV is one KV head's rows in host memory: K and V each hold at
// least KVRows rows of HeadDim elements (of CPUAttnParams.K and V: f16 or
// f32 little endian, or Q8_0 or Q4_0 blocks along the row), row 0 being
// absolute position KVStart.
type CPUHeadKV struct {
	K, V []byte
}

// CPUAttnParams describe one CPUAttention.Partial call. The fields mirror
// kernel.AttnParams, so that a call covers what one device partial
// dispatch over the same heads covers.
type CPUAttnParams struct {
	K, V    gguf.Type // element types of K and V: F16, F32, Q8_0 or Q4_0
	HeadDim int       // a multiple of 4, at most 256
	Group   int       // query heads per KV head
	NTokens int       // query tokens (1 for decode); NTokens·Group ≤ 1024
	QHeads  int       // query heads per Q row (a Q row holds QHeads·HeadDim floats)
	QHead0  int       // query head served first by the first KV head (its group's first head)
	KVStart int       // absolute position of row 0 of every head's K and V
	KVRows  int       // rows attended per head
	Part    int       // part index written in parts
	Scale   float32   // score scale, usually 1/sqrt(HeadDim)
	Window  int       // sliding window in positions, 0 for none (see kernel.Visible)
	SoftCap float32   // score soft cap c: s becomes c·tanh(s/c) before the softmax; 0 for none
}

// CPUCode is an implementation of the CPU attention arithmetic.
type CPUCode int

// The implementations, each usable where the CPU has its instructions and
// the head dimension is a multiple of its lanes; a call uses the best one
// that qualifies.
const (
	CodePortable CPUCode = iota // portable C
	CodeAVX2                    // AVX2 + FMA + F16C, 8 lanes
	CodeAVX512                  // AVX-512F, 16 lanes
)

// String gives "portable", "avx2" or "avx512".
func (c CPUCode) String() string {
	switch c {
	case CodeAVX2:
		return "avx2"
	case CodeAVX512:
		return "avx512"
	}
	return "portable"
}

// lanes is the f32 lanes of the code's vectors.
func (c CPUCode) lanes() int {
	switch c {
	case CodeAVX2:
		return 8
	case CodeAVX512:
		return 16
	}
	return 1
}

// forHeadDim is the best code at most c that handles head dimension hd.
func (c CPUCode) forHeadDim(hd int) CPUCode {
	for c > CodePortable && hd%c.lanes() != 0 {
		c--
	}
	return c
}

// cpuBest is the best code this CPU runs.
var cpuBest = CPUCode(C.hi_cpuattn_simd())

// NewCPUAttention starts a pool of threads workers (GOMAXPROCS when
// threads ≤ 0), the calling goroutine counting as one.
func NewCPUAttention(threads int) *CPUAttention {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	a := &CPUAttention{threads: threads, code: cpuBest, blockFloats: cpuBlockFloats}
	a.scratch = make([][]float32, threads)
	a.start = make([]chan struct{}, threads-1)
	for i := range a.start {
		a.start[i] = make(chan struct{})
		go a.worker(i+1, a.start[i])
	}
	return a
}

// Threads is the number of threads a call uses.
func (a *CPUAttention) Threads() int { return a.threads }

// Code is the implementation calls use for head dimension headDim.
func (a *CPUAttention) Code(headDim int) CPUCode { return a.code.forHeadDim(headDim) }

// Close stops the pool. Calls after Close return an error.
func (a *CPUAttention) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	for _, c := range a.start {
		close(c)
	}
}

func (a *CPUAttention) worker(id int, start chan struct{}) {
	for range start {
		a.work(id)
		a.done.Done()
	}
}

// Partial attends the queries q (f32 [NTokens][QHeads·HeadDim], RoPE
// applied, unscaled) at absolute positions positions ([NTokens]) to the
// rows of heads, causally and within the sliding window (position p is
// visible to a query at position t iff kernel.Visible(p, t, Window)), and
// writes the flash-attention partial of every (token, query head) to part
// Part of parts: for KV head z of heads and query head j of its group,
// entry ((Part·NTokens + t)·len(heads)·Group + z·Group + j) of HeadDim+4
// floats holds O = Σ exp(s−m)·v (unnormalised), then m (the maximum score
// s = Scale·q·k, soft-capped by SoftCap; −math.MaxFloat32 when no row is
// visible), l = Σ exp(s−m), 0, 0. parts needs kernel.PartsBytes(NTokens,
// len(heads)·Group, HeadDim, Part+1)/4 floats; other parts are not touched.
//
// A subset of positions [from, to) of a head is attended by passing its
// rows from..to−1 with KVStart = from; the device merge folds such a
// partial with partials of the other positions in any part order.
//
// Partial does not allocate once its buffers have grown to the largest
// call's size.
func (a *CPUAttention) Partial(q []float32, positions []uint32, heads []CPUHeadKV, parts []float32, p CPUAttnParams) error {
	if err := p.check(q, positions, heads, parts); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("cpu attention: used after Close")
	}
	hd, R := p.HeadDim, p.Group*p.NTokens
	entry := R * (hd + 4)
	nb := (p.KVRows + CPUBlockRows - 1) / CPUBlockRows
	round := max(1, min(nb, a.blockFloats/(len(heads)*entry)))
	if need := len(heads) * round * entry; len(a.blocks) < need {
		a.blocks = make([]float32, need)
	}
	scratch := int(C.hi_cpuattn_scratch_floats(C.int(hd), C.int(R)))
	for i := range a.scratch {
		if len(a.scratch[i]) < scratch {
			a.scratch[i] = make([]float32, scratch)
		}
	}
	a.job = cpuJob{
		shape: C.hi_cpuattn_shape{hd: C.int(hd), group: C.int(p.Group), ntok: C.int(p.NTokens),
			qstride: C.int(p.QHeads * hd), k_type: cpuKVType(p.K), v_type: cpuKVType(p.V),
			simd: C.int(a.code.forHeadDim(hd)), scale: C.float(p.Scale),
			softcap: C.float(p.SoftCap), window: C.int64_t(p.Window)},
		q: q, pos: positions, heads: heads, kRowB: p.K.RowBytes(hd), vRowB: p.V.RowBytes(hd), qHead0: p.QHead0,
		kvStart: int64(p.KVStart), rows: p.KVRows, entry: entry,
	}
	nHeads := len(heads) * p.Group
	E := hd + 4
	tstride := nHeads * E
	for b0 := 0; b0 < nb; b0 += round {
		a.job.b0, a.job.nb = b0, min(round, nb-b0)
		tasks := len(heads) * a.job.nb
		a.next.Store(0)
		helpers := min(len(a.start), tasks-1)
		a.done.Add(helpers)
		for i := range helpers {
			a.start[i] <- struct{}{}
		}
		a.work(0)
		a.done.Wait()

		// Fold each head's blocks in row order into its entries of the part.
		init := 0
		if b0 == 0 {
			init = 1
		}
		for z := range heads {
			dst := parts[(p.Part*p.NTokens*nHeads+z*p.Group)*E:]
			C.hi_cpuattn_fold((*C.float)(&a.blocks[z*a.job.nb*entry]), C.int(a.job.nb), C.int(hd), C.int(p.Group),
				C.int(p.NTokens), (*C.float)(&dst[0]), C.int64_t(tstride), C.int(init))
		}
	}
	a.job = cpuJob{} // drop references to the caller's memory
	return nil
}

// work runs tasks of the current job until none are left.
func (a *CPUAttention) work(id int) {
	j := &a.job
	scratch := a.scratch[id]
	tasks := int64(len(j.heads) * j.nb)
	for {
		i := a.next.Add(1) - 1
		if i >= tasks {
			return
		}
		z, b := int(i)/j.nb, j.b0+int(i)%j.nb
		r0 := b * CPUBlockRows
		rows := min(CPUBlockRows, j.rows-r0)
		h := j.heads[z]
		q := j.q[(j.qHead0+z*int(j.shape.group))*int(j.shape.hd):]
		C.hi_cpuattn_block(j.shape, (*C.float)(&q[0]), (*C.uint32_t)(&j.pos[0]),
			unsafe.Pointer(&h.K[r0*j.kRowB]), unsafe.Pointer(&h.V[r0*j.vRowB]),
			C.int64_t(j.kvStart+int64(r0)), C.int(rows),
			(*C.float)(&scratch[0]), (*C.float)(&a.blocks[int(i)*j.entry]))
	}
}

// check validates a call's parameters and buffer sizes.
func (p CPUAttnParams) check(q []float32, positions []uint32, heads []CPUHeadKV, parts []float32) error {
	switch {
	case cpuKVType(p.K) < 0 || cpuKVType(p.V) < 0:
		return fmt.Errorf("cpu attention: K type %v or V type %v is not supported (use F16, F32, Q8_0 or Q4_0)", p.K, p.V)
	case p.K.BlockSize() > 1 && p.HeadDim%p.K.BlockSize() != 0 || p.V.BlockSize() > 1 && p.HeadDim%p.V.BlockSize() != 0:
		return fmt.Errorf("cpu attention: head dimension %d is not a whole number of 32-value blocks of %v K and %v V", p.HeadDim, p.K, p.V)
	case p.HeadDim < 4 || p.HeadDim > 256 || p.HeadDim%4 != 0:
		return fmt.Errorf("cpu attention: head dimension %d is not supported (need a multiple of 4 up to 256)", p.HeadDim)
	case p.Group < 1 || p.Group > 1024:
		return fmt.Errorf("cpu attention: group size %d is out of range 1..1024", p.Group)
	case p.NTokens < 1 || p.KVRows < 1 || len(heads) < 1:
		return fmt.Errorf("cpu attention: NTokens %d, KVRows %d and KV heads %d must all be positive", p.NTokens, p.KVRows, len(heads))
	case p.NTokens > cpuMaxRows || p.NTokens*p.Group > cpuMaxRows:
		return fmt.Errorf("cpu attention: %d tokens × group %d is more than the %d query rows per KV head it serves (it is for decode; prefill attention belongs on the device)",
			p.NTokens, p.Group, cpuMaxRows)
	case p.QHeads < 1 || p.QHeads > cpuMaxIndex || p.QHead0 < 0 || p.QHead0 > cpuMaxIndex || p.KVStart < 0 || p.Part < 0 || p.Part > cpuMaxIndex:
		return fmt.Errorf("cpu attention: QHeads %d must be in 1..%d, QHead0 %d and Part %d in 0..%d, KVStart %d not negative",
			p.QHeads, cpuMaxIndex, p.QHead0, p.Part, cpuMaxIndex, p.KVStart)
	case p.QHead0+len(heads)*p.Group > p.QHeads:
		return fmt.Errorf("cpu attention: query heads %d..%d exceed the %d heads of a Q row",
			p.QHead0, p.QHead0+len(heads)*p.Group-1, p.QHeads)
	case math.IsNaN(float64(p.Scale)) || math.IsInf(float64(p.Scale), 0):
		return fmt.Errorf("cpu attention: scale %v is not finite", p.Scale)
	case int64(p.KVStart)+int64(p.KVRows) > math.MaxUint32:
		return fmt.Errorf("cpu attention: KV positions %d..%d exceed 32 bits", p.KVStart, p.KVStart+p.KVRows)
	case kernel.CheckAttnFeatures(p.Window, p.SoftCap) != nil:
		return fmt.Errorf("cpu %w", kernel.CheckAttnFeatures(p.Window, p.SoftCap))
	case len(q) < p.NTokens*p.QHeads*p.HeadDim:
		return fmt.Errorf("cpu attention: Q holds %d floats, %d tokens × %d heads × %d need %d",
			len(q), p.NTokens, p.QHeads, p.HeadDim, p.NTokens*p.QHeads*p.HeadDim)
	case len(positions) < p.NTokens:
		return fmt.Errorf("cpu attention: %d positions for %d tokens", len(positions), p.NTokens)
	}
	needK, needV := p.KVRows*p.K.RowBytes(p.HeadDim), p.KVRows*p.V.RowBytes(p.HeadDim)
	for z, h := range heads {
		if len(h.K) < needK || len(h.V) < needV {
			return fmt.Errorf("cpu attention: KV head %d holds %d K and %d V bytes, %d rows need %d and %d",
				z, len(h.K), len(h.V), p.KVRows, needK, needV)
		}
	}
	if n := (p.Part + 1) * p.NTokens * len(heads) * p.Group * (p.HeadDim + 4); len(parts) < n {
		return fmt.Errorf("cpu attention: parts hold %d floats, part %d of %d tokens × %d heads needs %d",
			len(parts), p.Part, p.NTokens, len(heads)*p.Group, n)
	}
	return nil
}

// cpuKVType is t as cpuattn.h's HI_KV_* code, −1 for a type it lacks.
func cpuKVType(t gguf.Type) C.int {
	switch t {
	case gguf.F32:
		return C.HI_KV_F32
	case gguf.F16:
		return C.HI_KV_F16
	case gguf.Q8_0:
		return C.HI_KV_Q8_0
	case gguf.Q4_0:
		return C.HI_KV_Q4_0
	}
	return -1
}

// FloatsOf views mapped host memory (a vk.Buffer's Bytes, such as a Q
// readback or a parts upload buffer) as f32 values without copying, for
// Partial's q and parts. b must be 4-byte aligned.
func FloatsOf(b []byte) ([]float32, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, fmt.Errorf("cpu attention: f32 data at %p is not 4-byte aligned", &b[0])
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), nil
}

// StoreHeads appends to dst the K and V rows [row, row+rows) of host store
// heads first … first+n−1 of layer l, as Partial reads them, and returns
// the extended slice. Passing a kept slice's dst[:0] avoids allocating per
// step.
func StoreHeads(dst []CPUHeadKV, s *Store, l, first, n, row, rows int) ([]CPUHeadKV, error) {
	for h := first; h < first+n; h++ {
		k, v, err := s.Slot(l, h, row, rows)
		if err != nil {
			return dst, err
		}
		kb, vb := k.Buf.Bytes(), v.Buf.Bytes()
		if kb == nil || vb == nil {
			return dst, fmt.Errorf("cpu attention: the host KV of layer %d head %d is not mapped", l, h)
		}
		dst = append(dst, CPUHeadKV{K: kb[k.Off : k.Off+k.Size], V: vb[v.Off : v.Off+v.Size]})
	}
	return dst, nil
}
