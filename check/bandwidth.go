package check

import (
	"fmt"
	"time"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// bandwidth measures what bounds a decode step: the copy kernel (the
// memory speed a shader reaches), host → device and device → host through
// the staging buffers (what streamed KV heads cross), and each weight
// type's matrix × vector product as a fraction of the copy. A measurement
// that cannot run is reported with its error; it fails no check.
func bandwidth(d *vk.Device, full bool) []Measure {
	rows, cols, iters, hostBytes := 4096, 4096, 5, 32<<20
	if full {
		iters, hostBytes = 20, 512<<20
	}
	var ms []Measure
	cp, err := kernel.BenchCopy(d, rows*cols*2, iters)
	if err != nil {
		return append(ms, Measure{Name: "copy", Detail: err.Error()})
	}
	ms = append(ms, Measure{Name: "copy", GBps: cp.GBps, Detail: cp.Op + " (bytes read + written, best of runs)"})
	for _, dir := range []bool{true, false} {
		ms = append(ms, hostTransfer(d, hostBytes, dir))
	}
	for _, t := range gguf.SupportedTypes {
		r, err := kernel.BenchMatVec(d, t, rows, cols, iters)
		if err != nil {
			ms = append(ms, Measure{Name: "matvec " + t.String(), Detail: err.Error()})
			continue
		}
		ms = append(ms, Measure{Name: "matvec " + t.String(), GBps: r.GBps, OfCopy: r.GBps / cp.GBps,
			Detail: r.Op + " (weight bytes, best of runs)"})
	}
	return ms
}

// hostTransfer times Device.Write (toDevice) or Device.Read of size bytes:
// the best of three, host clock.
func hostTransfer(d *vk.Device, size int, toDevice bool) Measure {
	name := "device → host"
	if toDevice {
		name = "host → device"
	}
	b, err := d.Alloc(vk.DeviceLocal, uint64(size), "check transfer")
	if err != nil {
		return Measure{Name: name, Detail: err.Error()}
	}
	defer b.Free()
	data := make([]byte, size)
	best := time.Duration(0)
	for range 3 {
		t0 := time.Now()
		if toDevice {
			err = d.Write(b.All(), data)
		} else {
			err = d.Read(b.All(), data)
		}
		if err != nil {
			return Measure{Name: name, Detail: err.Error()}
		}
		if took := time.Since(t0); best == 0 || took < best {
			best = took
		}
	}
	return Measure{Name: name, GBps: float64(size) / best.Seconds() / 1e9,
		Detail: fmt.Sprintf("%d MiB through the staging buffers, best of 3", size>>20)}
}
