package vk_test

import (
	"testing"

	"headinfer/vk"
)

// Dispatch overhead. Run with HEADINFER_VALIDATION=0: the validation layer
// costs far more than what is measured here.
//
//	HEADINFER_VALIDATION=0 go test ./vk/ -run '^$' -bench .

// BenchmarkRecordDispatch is the host cost of recording one dispatch
// (descriptor set allocation and write, bind, push, dispatch).
func BenchmarkRecordDispatch(b *testing.B) {
	d := testDevice(b)
	k := axpyKernel(b, d, 64, 1)
	x := vkAlloc(b, d, vk.DeviceLocal, 4096)
	y := vkAlloc(b, d, vk.DeviceLocal, 4096)
	c := vkCommands(b, d)
	push := vkPush(uint32(1024), float32(0))
	const perRecording = 1000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%perRecording == perRecording-1 {
			b.StopTimer()
			if err := c.End(); err != nil {
				b.Fatal(err)
			}
			if err := c.Reset(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		c.Dispatch(k, [3]uint32{16, 1, 1}, push, x.All(), y.All())
	}
	b.StopTimer()
	if err := c.End(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSubmitWait is one Run of an empty recording: submission plus
// the host wait, the floor of a decode step.
func BenchmarkSubmitWait(b *testing.B) {
	d := testDevice(b)
	c := vkCommands(b, d)
	if err := c.End(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Run(c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/run")
}

// BenchmarkDispatchExecuted is the device-side cost of one tiny dispatch
// in a replayed recording of many, barriers between them.
func BenchmarkDispatchExecuted(b *testing.B) {
	d := testDevice(b)
	k := axpyKernel(b, d, 64, 1)
	x := vkAlloc(b, d, vk.DeviceLocal, 256)
	y := vkAlloc(b, d, vk.DeviceLocal, 256)
	c := vkCommands(b, d)
	const per = 100
	for i := 0; i < per; i++ {
		c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(64), float32(0)), x.All(), y.All())
		c.Barrier()
	}
	if err := c.End(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Run(c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*per), "µs/dispatch")
}
