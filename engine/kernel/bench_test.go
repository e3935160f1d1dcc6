package kernel

import (
	"fmt"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk/vktest"
)

// The benchmarks report device time (dev-µs/op) and bandwidth from
// timestamps; Go's own ns/op includes setup and is not the number to read.

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
				b.ReportMetric(r.NS/1e3, "dev-µs/op")
				b.ReportMetric(r.GBps, "GB/s")
			})
		}
	}
}

func BenchmarkMatMul(b *testing.B) {
	d := vktest.Device(b)
	for _, typ := range []gguf.Type{gguf.F16, gguf.Q8_0} {
		b.Run(fmt.Sprintf("%v/4096x4096/n=64", typ), func(b *testing.B) {
			var r BenchResult
			var err error
			for b.Loop() {
				if r, err = BenchMatMul(d, typ, 4096, 4096, 64, 3); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(r.NS/1e3, "dev-µs/op")
			b.ReportMetric(2*4096*4096*64/r.NS, "GFLOP/s")
		})
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
	b.ReportMetric(r.NS/1e3, "dev-µs/op")
	b.ReportMetric(r.GBps, "GB/s")
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
