// Package check answers, on the user's own device, "does my driver compute
// the right numbers, and how fast?": every compute kernel against a float64
// reference computed on the host, the engine's exactness invariants on a
// synthetic model, and the bandwidths that bound a decode step. It is what
// `headinfer check` runs.
package check

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"headinfer/engine/kernel"
	"headinfer/vk"
)

// Options configure a run.
type Options struct {
	Device     string // device selector, as vk.Options.Select
	Validation bool   // run under the Khronos validation layer
	// Full adds the largest shapes of 7B and 8B models and more engine
	// cases; without it a run takes seconds even on a CPU device.
	Full bool
	Seed uint64 // random inputs' seed (0: a fresh one, reported)
	// Only, when set, runs just the checks whose names contain it, and
	// measures no bandwidth.
	Only string
	// Tamper, when set, may change a kernel's output before it is
	// compared: tests plant a fault this way to see it reported.
	Tamper func(name string, got []float32)
	// Each, when set, hears each result as it comes.
	Each func(Result)
	Log  func(string)
}

// Result is one check: a kernel against its reference, or an engine
// invariant.
type Result struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // "kernel" or "engine"
	Pass bool   `json:"pass"`
	// Error is the measured error in the unit Limit is in (see
	// kernel.Outcome); nil when an output was NaN or infinite, or the
	// check could not run (Detail says why).
	Error   *float64 `json:"error"`
	Limit   float64  `json:"limit"`
	Detail  string   `json:"detail,omitempty"`
	Seconds float64  `json:"seconds"`
}

// Measure is one bandwidth figure.
type Measure struct {
	Name string  `json:"name"`
	GBps float64 `json:"gb_per_s"`
	// OfCopy is GBps as a fraction of the copy kernel's, for the matrix
	// kernels: how close a decode step's products come to the memory
	// speed a shader reaches on this device.
	OfCopy float64 `json:"of_copy,omitempty"`
	Detail string  `json:"detail"`
}

// Facts describes the device.
type Facts struct {
	Name          string   `json:"name"`
	Type          string   `json:"type"`
	VendorID      uint32   `json:"vendor_id"`
	DeviceID      uint32   `json:"device_id"`
	Driver        string   `json:"driver"`
	DriverInfo    string   `json:"driver_info"`
	APIVersion    string   `json:"api_version"`
	SubgroupSize  uint32   `json:"subgroup_size"`
	StorageRange  uint64   `json:"max_storage_buffer_range"`
	MaxAllocation uint64   `json:"max_allocation_size"`
	Heaps         []Heap   `json:"heaps"`
	Features      []string `json:"features"`
}

// Heap is one memory heap of the device.
type Heap struct {
	Bytes       uint64 `json:"bytes"`
	DeviceLocal bool   `json:"device_local"`
}

// Report is a whole run.
type Report struct {
	Device    Facts     `json:"device"`
	Seed      uint64    `json:"seed"`
	Full      bool      `json:"full"`
	Checks    []Result  `json:"checks"`
	Bandwidth []Measure `json:"bandwidth"`
	Passed    int       `json:"passed"`
	Failed    int       `json:"failed"`
	Seconds   float64   `json:"seconds"`
}

// OK reports whether every check passed.
func (r Report) OK() bool { return r.Failed == 0 && r.Passed > 0 }

// Run opens the device and runs every check, then the bandwidth
// measurements. An error means the run could not go on (no such device);
// a check that fails, or cannot run, is a failed Result.
func Run(opt Options) (Report, error) {
	t0 := time.Now()
	d, err := vk.Open(vk.Options{Select: opt.Device, Validation: opt.Validation, Log: opt.Log})
	if err != nil {
		return Report{}, err
	}
	defer d.Close()
	seed := opt.Seed
	if seed == 0 {
		seed = rand.Uint64() | 1
	}
	rep := Report{Device: factsOf(d.Info()), Seed: seed, Full: opt.Full}
	add := func(r Result) {
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			r.Pass = false
			r.Detail = fmt.Sprintf("validation layer: %s", msgs[0])
		}
		if r.Pass {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Checks = append(rep.Checks, r)
		if opt.Each != nil {
			opt.Each(r)
		}
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for _, c := range kernel.Checks(d.Info(), opt.Full) {
		if !strings.Contains(c.Name, opt.Only) {
			continue
		}
		tc := time.Now()
		o, err := c.Run(d, r, opt.Tamper)
		add(kernelResult(c.Name, o, err, time.Since(tc)))
	}
	for _, inv := range invariants(opt.Full) {
		if !strings.Contains(inv.name, opt.Only) {
			continue
		}
		tc := time.Now()
		diffs, detail, err := inv.run(opt, r)
		add(engineResult(inv.name, diffs, detail, err, time.Since(tc)))
	}
	if len(rep.Checks) == 0 {
		return Report{}, fmt.Errorf("no check's name contains %q", opt.Only)
	}
	if opt.Only == "" {
		rep.Bandwidth = bandwidth(d, opt.Full)
	}
	rep.Seconds = time.Since(t0).Seconds()
	return rep, nil
}

// PlantFault changes one output by 1% of the largest: one wrong element
// among many right ones, which every check must report.
func PlantFault(got []float32) {
	if len(got) == 0 {
		return
	}
	var most float32
	for _, v := range got {
		most = max(most, float32(math.Abs(float64(v))))
	}
	got[len(got)/2] += 0.01*most + 1e-6
}

func kernelResult(name string, o kernel.Outcome, err error, took time.Duration) Result {
	r := Result{Name: name, Kind: "kernel", Limit: o.Limit, Seconds: took.Seconds()}
	switch {
	case err != nil:
		r.Detail = err.Error()
	case math.IsInf(o.Error, 0) || math.IsNaN(o.Error):
		r.Detail = "not finite: " + o.Worst
	default:
		e := o.Error
		r.Error, r.Pass = &e, o.Pass()
		if !r.Pass {
			r.Detail = o.Worst
		}
	}
	return r
}

func engineResult(name string, diffs int, detail string, err error, took time.Duration) Result {
	r := Result{Name: name, Kind: "engine", Seconds: took.Seconds(), Detail: detail}
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	e := float64(diffs)
	r.Error, r.Pass = &e, diffs == 0
	return r
}

func factsOf(i vk.DeviceInfo) Facts {
	f := Facts{Name: i.Name, Type: i.Type.String(), VendorID: i.VendorID, DeviceID: i.DeviceID, Driver: i.Driver,
		DriverInfo: i.DriverInfo, APIVersion: i.APIVersion, SubgroupSize: i.SubgroupSize,
		StorageRange: i.MaxStorageBufferRange, MaxAllocation: i.MaxAllocationSize}
	for _, h := range i.Heaps {
		f.Heaps = append(f.Heaps, Heap{Bytes: h.Size, DeviceLocal: h.DeviceLocal})
	}
	f.Features, _ = i.Features()
	return f
}
