package offload

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"headinfer/engine/gguf"
)

// CPURate is the measured throughput of CPU decode attention.
type CPURate struct {
	KVBytesPerSec float64 // bytes of K and V read per second
	FLOPPerSec    float64 // 4·HeadDim flops per (query head, position): q·k and p·v
	Threads       int
	Code          CPUCode // the implementation that ran
}

// MeasureCPUAttention times one decode step (one query token) of group
// query heads per KV head over kvHeads KV heads of rows positions each, on
// synthetic KV of type kv, repeating it until minTime has passed (after one
// untimed run), with a pool of GOMAXPROCS threads. It takes 2·kvHeads·rows·
// headDim elements of memory for the duration. For a rate that reflects
// DRAM rather than caches the KV must be well beyond the last-level cache:
// 8 KV heads × 16K positions of head dimension 128 in f16 (64 MiB) and
// 100 ms give a stable figure on desktop CPUs.
func MeasureCPUAttention(kv gguf.Type, headDim, group, kvHeads, rows int, minTime time.Duration) (CPURate, error) {
	a := NewCPUAttention(0)
	defer a.Close()
	return a.Measure(kv, headDim, group, kvHeads, rows, minTime)
}

// Measure is MeasureCPUAttention on a's threads.
func (a *CPUAttention) Measure(kv gguf.Type, headDim, group, kvHeads, rows int, minTime time.Duration) (CPURate, error) {
	if kvHeads < 1 || rows < 1 {
		return CPURate{}, fmt.Errorf("cpu attention: measuring needs at least one KV head and one position, got %d and %d", kvHeads, rows)
	}
	p := CPUAttnParams{K: kv, V: kv, HeadDim: headDim, Group: group, NTokens: 1, QHeads: kvHeads * group,
		KVRows: rows, Scale: float32(1 / math.Sqrt(float64(headDim)))}
	q := make([]float32, kvHeads*group*headDim)
	for i := range q {
		q[i] = float32(i%7) - 3
	}
	heads := make([]CPUHeadKV, kvHeads)
	if kv.BlockSize() > 1 && headDim%kv.BlockSize() != 0 {
		return CPURate{}, fmt.Errorf("cpu attention: head dimension %d is not a whole number of %v blocks", headDim, kv)
	}
	size := rows * kv.RowBytes(headDim)
	for z := range heads {
		heads[z] = CPUHeadKV{K: syntheticKV(kv, size, z), V: syntheticKV(kv, size, z+kvHeads)}
	}
	parts := make([]float32, kvHeads*group*(headDim+4))
	pos := []uint32{uint32(rows - 1)}
	if err := a.Partial(q, pos, heads, parts, p); err != nil {
		return CPURate{}, err
	}
	n := 0
	start := time.Now()
	for n < 2 || time.Since(start) < minTime {
		if err := a.Partial(q, pos, heads, parts, p); err != nil {
			return CPURate{}, err
		}
		n++
	}
	sec := time.Since(start).Seconds() / float64(n)
	return CPURate{
		KVBytesPerSec: float64(2*kvHeads*size) / sec,
		FLOPPerSec:    float64(4*headDim*group*kvHeads*rows) / sec,
		Threads:       a.threads,
		Code:          a.Code(headDim),
	}, nil
}

// syntheticKV returns size bytes of KV elements of moderate magnitude
// (no infinities or NaNs, which would change the work), varied by seed.
func syntheticKV(kv gguf.Type, size, seed int) []byte {
	b := make([]byte, size)
	x := uint32(seed)*2654435761 + 1
	if kv == gguf.Q8_0 || kv == gguf.Q4_0 {
		f := make([]float32, size/kv.BlockBytes()*kv.BlockSize())
		for i := range f {
			x = x*1664525 + 1013904223
			f[i] = float32(int32(x)) / float32(1<<31)
		}
		q, err := gguf.Quantize(kv, f)
		if err != nil {
			panic(err) // whole blocks by construction
		}
		copy(b, q)
		return b
	}
	if kv == gguf.F16 {
		for i := 0; i+2 <= size; i += 2 {
			x = x*1664525 + 1013904223
			// sign, exponent 12..15 (2^-3..2^0), random mantissa
			binary.LittleEndian.PutUint16(b[i:], uint16(x>>16)&0x83ff|uint16(12+x>>30)<<10)
		}
		return b
	}
	for i := 0; i+4 <= size; i += 4 {
		x = x*1664525 + 1013904223
		binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(int32(x))/float32(1<<31)))
	}
	return b
}
