//go:build unix

package offload

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"headinfer/engine/gguf"
)

// benchKV is synthetic KV of one geometry, shared by the sub-benchmarks.
type benchKV struct {
	kv                   gguf.Type
	hd, kvHeads, rows, g int
	heads                []CPUHeadKV
	q, parts             []float32
	pos                  []uint32
}

func newBenchKV(kv gguf.Type, hd, group, kvHeads, rows int) *benchKV {
	b := &benchKV{kv: kv, hd: hd, kvHeads: kvHeads, rows: rows, g: group}
	size := rows * hd * kv.BlockBytes()
	for z := range kvHeads {
		b.heads = append(b.heads, CPUHeadKV{K: syntheticKV(kv, size, z), V: syntheticKV(kv, size, z+kvHeads)})
	}
	b.q = make([]float32, kvHeads*group*hd)
	for i := range b.q {
		b.q[i] = float32(i%7) - 3
	}
	b.parts = make([]float32, kvHeads*group*(hd+4))
	b.pos = []uint32{uint32(rows - 1)}
	return b
}

func (b *benchKV) params() CPUAttnParams {
	return CPUAttnParams{K: b.kv, V: b.kv, HeadDim: b.hd, Group: b.g, NTokens: 1, QHeads: b.kvHeads * b.g,
		KVRows: b.rows, Scale: float32(1 / math.Sqrt(float64(b.hd)))}
}

func (b *benchKV) kvBytes() int64 { return int64(2 * b.kvHeads * b.rows * b.hd * b.kv.BlockBytes()) }

// report adds GB/s of KV read and GFLOP/s, and the share of the wall time
// the threads were on a CPU (below 1 when other processes took the cores).
func (b *benchKV) report(tb *testing.B, start time.Time, cpu0 float64, threads int) {
	wall := time.Since(start).Seconds()
	sec := wall / float64(tb.N)
	tb.ReportMetric(float64(b.kvBytes())/sec/1e9, "GB/s")
	tb.ReportMetric(float64(4*b.hd*b.g*b.kvHeads*b.rows)/sec/1e9, "GFLOP/s")
	reportCPU(tb, float64(b.kvBytes())/sec/1e9, cpu0, wall, threads)
}

// reportCPU adds the share of the wall time the threads were on a CPU
// (below 1 when other processes took the cores) and the GB/s divided by
// it: the rate per second on a CPU, comparable between runs on a shared
// machine (time spent waiting for memory counts as on a CPU).
func reportCPU(tb *testing.B, gbs, cpu0, wall float64, threads int) {
	util := (cpuSeconds() - cpu0) / (wall * float64(threads))
	tb.ReportMetric(util, "cpu-util")
	tb.ReportMetric(gbs/util, "GB/s-on-cpu")
}

// cpuSeconds is the CPU time the process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkCPUAttention is one decode step of CPU attention over 8 KV
// heads of 128K positions (f16, head dimension 128: 512 MiB of K and V),
// next to what the same threads copy per second with memmove over the same
// buffers (bytes read; it writes as many): the memory bandwidth the
// attention can at best reach. Also: the group sizes, f32 KV (64K
// positions, the same bytes), the portable code, one thread, and the same
// algorithm in plain Go on one thread, 4K positions (a short context's
// call), and KV small enough to stay in the caches (the arithmetic's
// ceiling).
//
//	go test -run '^$' -bench CPUAttention ./engine/offload/
func BenchmarkCPUAttention(b *testing.B) {
	const hd, kvHeads, rows = 128, 8, 128 << 10
	f16 := newBenchKV(gguf.F16, hd, 4, kvHeads, rows)
	threads := runtime.GOMAXPROCS(0)

	b.Run(fmt.Sprintf("memmove/threads%d", threads), func(tb *testing.B) {
		dst := make([]byte, len(f16.heads[0].K)*kvHeads)
		var srcs [][]byte
		for _, h := range f16.heads {
			srcs = append(srcs, h.K, h.V)
		}
		parallelCopy(dst, srcs, threads) // fault dst's pages in before timing
		tb.ResetTimer()
		start, cpu0 := time.Now(), cpuSeconds()
		for range tb.N {
			parallelCopy(dst, srcs, threads)
		}
		wall := time.Since(start).Seconds()
		gbs := float64(f16.kvBytes()) / (wall / float64(tb.N)) / 1e9
		tb.ReportMetric(gbs, "GB/s")
		reportCPU(tb, gbs, cpu0, wall, threads)
	})

	run := func(name string, d *benchKV, group, threads int, code CPUCode) {
		b.Run(name, func(tb *testing.B) {
			a := NewCPUAttention(threads)
			defer a.Close()
			a.code = min(a.code, code)
			d.g = group
			d.q = make([]float32, d.kvHeads*group*hd)
			d.parts = make([]float32, d.kvHeads*group*(hd+4))
			p := d.params()
			if err := a.Partial(d.q, d.pos, d.heads, d.parts, p); err != nil {
				tb.Fatal(err)
			}
			tb.ResetTimer()
			start, cpu0 := time.Now(), cpuSeconds()
			for range tb.N {
				if err := a.Partial(d.q, d.pos, d.heads, d.parts, p); err != nil {
					tb.Fatal(err)
				}
			}
			d.report(tb, start, cpu0, threads)
		})
	}
	best := cpuBest.forHeadDim(hd)
	for _, g := range []int{4, 1, 8} {
		run(fmt.Sprintf("f16/g%d/threads%d/%v", g, threads, best), f16, g, threads, best)
	}
	for _, th := range []int{threads, 1} {
		for code := best - 1; code >= CodePortable; code-- {
			run(fmt.Sprintf("f16/g4/threads%d/%v", th, code), f16, 4, th, code)
		}
	}
	run(fmt.Sprintf("f16/g4/threads1/%v", best), f16, 4, 1, best)
	b.Run("f16/g4/threads1/go", func(tb *testing.B) {
		f16.g = 4
		tb.ResetTimer()
		start, cpu0 := time.Now(), cpuSeconds()
		for range tb.N {
			goDecodeF16(f16)
		}
		f16.report(tb, start, cpu0, 1)
	})
	// A short context: what one layer's call costs when the work is small
	// (8 heads × 4K positions: 32 tasks, 16 MiB).
	run(fmt.Sprintf("f16/g4/threads%d/%v/4K", threads, best), newBenchKV(gguf.F16, hd, 4, kvHeads, 4096), 4, threads, best)
	// KV that stays in the caches (1 head × 4096 positions, 2 MiB): the
	// arithmetic's ceiling, without memory.
	small := newBenchKV(gguf.F16, hd, 4, 1, 4096)
	for _, g := range []int{4, 8} {
		run(fmt.Sprintf("f16/g%d/threads1/%v/in-cache", g, best), small, g, 1, best)
	}
	f16 = nil
	runtime.GC()
	f32 := newBenchKV(gguf.F32, hd, 4, kvHeads, rows/2)
	run(fmt.Sprintf("f32/g4/threads%d/%v", threads, best), f32, 4, threads, best)
}

// parallelCopy copies every source into dst with threads goroutines:
// thread t copies its share of each source into its own region of dst,
// reusing the region from its start when it is full.
func parallelCopy(dst []byte, srcs [][]byte, threads int) {
	var wg sync.WaitGroup
	region := len(dst) / threads
	for t := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := dst[t*region : (t+1)*region]
			at := 0
			for _, s := range srcs {
				n := len(s) / threads
				chunk := s[t*n : (t+1)*n]
				if at+len(chunk) > len(out) {
					at = 0
				}
				at += copy(out[at:], chunk)
			}
		}()
	}
	wg.Wait()
}

// f16Table maps f16 bits to f32, for the plain Go variant.
var f16Table = func() []float32 {
	t := make([]float32, 1<<16)
	b := make([]byte, 2)
	for i := range t {
		b[0], b[1] = byte(i), byte(i>>8)
		v := make([]float32, 1)
		if err := gguf.Dequantize(gguf.F16, b, v); err != nil {
			panic(err)
		}
		t[i] = v[0]
	}
	return t
}()

// goDecodeF16 is the C kernel's algorithm (chunks of K converted once,
// online softmax, P·V) in plain Go on one thread, one decode token seeing
// every row, for comparing the implementation languages. Its output is
// discarded.
func goDecodeF16(b *benchKV) {
	const ch = 32
	hd, g := b.hd, b.g
	scale := float32(1 / math.Sqrt(float64(hd)))
	qs := make([]float32, g*hd)
	tile := make([]float32, ch*hd)
	s := make([]float32, ch)
	o := make([]float32, g*hd)
	m, l := make([]float32, g), make([]float32, g)
	pv := make([][]float32, g) // probabilities of the chunk per query head
	for j := range pv {
		pv[j] = make([]float32, ch)
	}
	for z, h := range b.heads {
		for i := range qs {
			qs[i] = scale * b.q[z*g*hd+i]
		}
		clear(o)
		clear(l)
		for i := range m {
			m[i] = -math.MaxFloat32
		}
		for c0 := 0; c0 < b.rows; c0 += ch {
			nc := min(ch, b.rows-c0)
			for i := range nc * hd {
				e := 2 * (c0*hd + i)
				tile[i] = f16Table[uint16(h.K[e])|uint16(h.K[e+1])<<8]
			}
			for j := range g {
				q := qs[j*hd : (j+1)*hd]
				mx := m[j]
				for c := range nc {
					var dot float32
					k := tile[c*hd : (c+1)*hd]
					for d, x := range q {
						dot += x * k[d]
					}
					s[c] = dot
					mx = max(mx, dot)
				}
				alpha := float32(math.Exp(float64(m[j] - mx)))
				var sum float32
				p := pv[j][:nc]
				for c := range nc {
					p[c] = float32(math.Exp(float64(s[c] - mx)))
					sum += p[c]
				}
				m[j], l[j] = mx, l[j]*alpha+sum
				oj := o[j*hd : (j+1)*hd]
				for d := range oj {
					oj[d] *= alpha
				}
			}
			for i := range nc * hd {
				e := 2 * (c0*hd + i)
				tile[i] = f16Table[uint16(h.V[e])|uint16(h.V[e+1])<<8]
			}
			for j := range g {
				oj := o[j*hd : (j+1)*hd]
				for c, w := range pv[j][:nc] {
					v := tile[c*hd : (c+1)*hd]
					for d := range oj {
						oj[d] += w * v[d]
					}
				}
			}
		}
	}
}
