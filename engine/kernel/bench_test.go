package kernel

import (
	"fmt"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk/vktest"
)

// The benchmarks report device time from timestamps (the fastest and the
// median run, µs) and bandwidth from the fastest run; Go's own ns/op
// includes setup and is not the number to read.

func benchReport(b *testing.B, r BenchResult) {
	b.ReportMetric(r.BestNS/1e3, "best-µs")
	b.ReportMetric(r.NS/1e3, "median-µs")
	b.ReportMetric(r.GBps, "GB/s")
}

func BenchmarkMatVec(b *testing.B) {
	d := vktest.Device(b)
	for _, typ := range mvTypes {
		for _, shape := range [][2]int{{4096, 4096}, {11008, 4096}} {
			b.Run(fmt.Sprintf("%v/%dx%d", typ, shape[0], shape[1]), func(b *testing.B) {
				var r BenchResult
				var err error
				for b.Loop() {
					if r, err = BenchMatVec(d, typ, shape[0], shape[1], 10); err != nil {
						b.Fatal(err)
					}
				}
				benchReport(b, r)
			})
		}
	}
}

func BenchmarkMatMul(b *testing.B) {
	d := vktest.Device(b)
	const rows, cols, n = 4096, 4096, 64
	for _, typ := range []gguf.Type{gguf.F16, gguf.Q8_0} {
		for _, tiled := range []bool{false, true} {
			name := fmt.Sprintf("%v/%dx%d/n=%d", typ, rows, cols, n)
			if tiled {
				name += "/tiled"
			}
			b.Run(name, func(b *testing.B) {
				var r BenchResult
				var err error
				for b.Loop() {
					if r, err = benchMatMul(d, typ, rows, cols, n, 2, tiled); err != nil {
						b.Fatal(err)
					}
				}
				benchReport(b, r)
				b.ReportMetric(2*rows*cols*n/r.BestNS, "GFLOP/s")
			})
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	d := vktest.Device(b)
	var r BenchResult
	var err error
	for b.Loop() {
		if r, err = BenchCopy(d, 64<<20, 10); err != nil {
			b.Fatal(err)
		}
	}
	benchReport(b, r)
}

func BenchmarkDispatch(b *testing.B) {
	d := vktest.Device(b)
	var r DispatchCost
	var err error
	for b.Loop() {
		if r, err = BenchDispatch(d, 1000, 100); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.PerDispatchUS, "µs/dispatch")
	b.ReportMetric(r.PerSubmitUS, "µs/submit")
}

// TestBench runs each benchmark function once on small odd shapes, so that
// `headinfer bench kernels` cannot break unnoticed.
func TestBench(t *testing.T) {
	d := vktest.Device(t)
	check := func(r BenchResult, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if !(r.BestNS > 0 && r.NS >= r.BestNS && r.GBps > 0) || r.Bytes == 0 {
			t.Fatalf("%s: implausible result %+v", r.Op, r)
		}
		t.Log(r)
	}
	for _, typ := range mvTypes {
		// One block of columns: 32 for most types, 256 for K-quants.
		check(BenchMatVec(d, typ, 3, max(32, typ.BlockSize()), 3))
	}
	for _, whole := range []bool{false, true} {
		check(BenchMatVecGeometry(d, gguf.Q4_K, 3, 256, 0, 3, 32, 2, whole))
	}
	// A GPU's shape with several vectors: read once for all of them.
	r, err := BenchMatVecGeometry(d, gguf.Q8_0, 5, 64, 3, 2, 32, 4, false)
	check(r, err)
	if !strings.HasSuffix(r.Op, " 32x4 n=3") || r.Reads != 1 {
		t.Errorf("%s read %d times: want the op to end in \" 32x4 n=3\" and one read", r.Op, r.Reads)
	}
	check(BenchMatMul(d, gguf.Q4_0, 5, 64, 3, 2))
	// The batched product, one vector and up to the most the kernel
	// takes: the weights counted once, read once per workgroup's vectors.
	for _, typ := range []gguf.Type{gguf.F16, gguf.Q8_0, gguf.Q4_K} {
		for _, n := range []int{1, 3, MatVecMaxBatch} {
			r, err := BenchMatVecBatch(d, typ, 5, max(64, typ.BlockSize()), n, 2)
			check(r, err)
			if want := fmt.Sprintf(" n=%d", n); !strings.HasSuffix(r.Op, want) {
				t.Errorf("%s: want the op to end in %q", r.Op, want)
			}
			if one := uint64(5 * typ.RowBytes(max(64, typ.BlockSize()))); r.Bytes != one || r.Reads < 1 || r.Reads > n {
				t.Errorf("%s: %d bytes read %d times, want the weights' %d bytes read 1 to %d times", r.Op, r.Bytes, r.Reads, one, n)
			}
		}
	}
	for _, n := range []int{0, -1, MatVecMaxBatch + 1} {
		if _, err := BenchMatVecBatch(d, gguf.Q8_0, 5, 64, n, 1); err == nil {
			t.Errorf("BenchMatVecBatch accepted %d vectors", n)
		}
	}
	check(benchMatMul(d, gguf.F16, 5, 37, 3, 2, true))
	check(BenchCopy(d, 4100, 3))
	dc, err := BenchDispatch(d, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !(dc.PerDispatchUS > 0 && dc.PerSubmitUS > 0) {
		t.Fatalf("implausible dispatch costs %+v", dc)
	}
	if _, err := BenchMatVec(d, gguf.Q8_0, 3, 33, 1); err == nil {
		t.Error("BenchMatVec accepted 33 columns of Q8_0")
	}
	if _, err := BenchCopy(d, 15, 1); err == nil {
		t.Error("BenchCopy accepted 15 bytes")
	}
}

// BenchmarkMatVecBatch times the batched matrix × vector kernel of a
// decode step of n sequences: what one more sequence in a step costs
// against a step of its own (n = 1).
func BenchmarkMatVecBatch(b *testing.B) {
	d := vktest.Device(b)
	const rows, cols = 11008, 4096
	for _, typ := range mvTypes {
		for _, n := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("%v/%dx%d/n=%d", typ, rows, cols, n), func(b *testing.B) {
				var r BenchResult
				var err error
				for b.Loop() {
					if r, err = BenchMatVecBatch(d, typ, rows, cols, n, 5); err != nil {
						b.Fatal(err)
					}
				}
				benchReport(b, r)
				b.ReportMetric(r.BestNS/1e3/float64(n), "best-µs/vector")
			})
		}
	}
}
