package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Options configure Open.
type Options struct {
	// Select names the device: "" falls back to $HEADINFER_DEVICE, then to
	// the default rule of Choose.
	Select string
	// Validation enables VK_LAYER_KHRONOS_validation with synchronization
	// validation; messages are collected by ValidationMessages. Open fails
	// if the layer is missing.
	Validation bool
	// CacheDir holds the pipeline cache; "" is os.UserCacheDir()/headinfer.
	CacheDir string
	// Log receives one-line notices; nil writes them to stderr.
	Log func(string)
	// InlineCPU asks Mesa's lavapipe to run kernels on its submitting
	// thread rather than its thread pool (LP_NUM_THREADS=0), unless the
	// environment sets LP_NUM_THREADS. Waking the pool costs tens of µs
	// per dispatch, more than a small model's kernels take, but a large
	// model's kernels need the pool's memory bandwidth. It sets the
	// variable for the rest of the process; other devices ignore it.
	InlineCPU bool
	// WaitTimeout bounds host waits for submitted work that have no
	// deadline of their own (default DefaultWaitTimeout).
	WaitTimeout time.Duration
	// FaultSubmit, for tests of failure handling, makes the Nth
	// submission (counting from 1 over all queues) fail with
	// VK_ERROR_DEVICE_LOST without reaching the driver; 0 (the default)
	// reads $HEADINFER_FAULT_SUBMIT, unset means never.
	FaultSubmit int
}

// Device is an open logical device with its queues, memory and kernels.
// Its methods are safe for concurrent use; a Commands is not.
type Device struct {
	inst *C.hi_instance
	dev  *C.hi_device
	phys physical
	info DeviceInfo
	log  func(string)

	compute, transfer *Queue

	mem   allocator
	align uint64 // offset alignment of sub-allocations

	kmu     sync.Mutex
	kernels map[string]*Kernel
	pcache  pipelineCache

	stage stager

	// Live commands and timelines, released by Close.
	objMu     sync.Mutex
	cmds      map[*Commands]struct{}
	timelines map[*Timeline]struct{}

	// Failure state (see Fail) and fault injection.
	failed      atomic.Pointer[failure]
	hung        atomic.Bool // a wait for submitted work timed out
	submits     atomic.Int64
	faultAt     int64
	waitTimeout time.Duration

	closeOnce   sync.Once
	closingMsgs []string // validation messages of Close itself
}

// Open creates a logical device on the selected physical device.
func Open(opt Options) (*Device, error) {
	logf := opt.Log
	if logf == nil {
		logf = func(s string) { fmt.Fprintln(os.Stderr, s) }
	}
	sel := opt.Select
	if sel == "" {
		sel = os.Getenv("HEADINFER_DEVICE")
	}
	if _, set := os.LookupEnv("LP_NUM_THREADS"); opt.InlineCPU && !set {
		os.Setenv("LP_NUM_THREADS", "0") // read by lavapipe as it enumerates devices
	}
	faultAt, err := faultSubmit(opt)
	if err != nil {
		return nil, err
	}
	in, err := newInstance(instanceOptions{validation: opt.Validation})
	if err != nil {
		return nil, err
	}
	d := &Device{inst: in, log: logf, kernels: map[string]*Kernel{},
		cmds: map[*Commands]struct{}{}, timelines: map[*Timeline]struct{}{},
		faultAt: faultAt, waitTimeout: opt.WaitTimeout}
	if d.waitTimeout <= 0 {
		d.waitTimeout = DefaultWaitTimeout
	}
	fail := func(err error) (*Device, error) {
		d.destroy()
		return nil, err
	}
	ps, err := physicals(in)
	if err != nil {
		return fail(err)
	}
	infos := make([]DeviceInfo, len(ps))
	for i := range ps {
		infos[i] = ps[i].info
	}
	idx, err := Choose(infos, sel)
	if err != nil {
		return fail(err)
	}
	d.phys = ps[idx]
	d.info = d.phys.info
	if why := d.phys.unusable(); why != "" {
		return fail(fmt.Errorf("vk: device %d (%s) cannot be used: %s; devices: %s", d.info.Index, d.info.Name, why, listDevices(infos)))
	}
	if d.info.Type == CPU {
		why := "no GPU found"
		if sel != "" {
			why = fmt.Sprintf("selected by %q", sel)
		}
		for i := range ps {
			if ps[i].info.Type != CPU && sel == "" {
				why = fmt.Sprintf("GPU %s cannot be used: %s", ps[i].info.Name, ps[i].unusable())
				break
			}
		}
		logf(fmt.Sprintf("vk: using CPU device %s: %s", d.info.Name, why))
	}
	if err := result(C.hi_device_create(in, d.phys.phys, &d.phys.raw, &d.dev), "vkCreateDevice on "+d.info.Name); err != nil {
		return fail(err)
	}
	d.align = max(d.info.MinStorageBufferOffsetAlignment, 256)
	if d.compute, err = newQueue(d, d.dev.compute, uint32(d.phys.raw.compute_family), false, uint32(d.phys.raw.compute_ts_bits)); err != nil {
		return fail(err)
	}
	d.transfer = d.compute
	if d.info.TransferQueue {
		if d.transfer, err = newQueue(d, d.dev.transfer, uint32(d.phys.raw.transfer_family), true, uint32(d.phys.raw.transfer_ts_bits)); err != nil {
			return fail(err)
		}
	}
	if err := d.mem.init(d); err != nil {
		return fail(err)
	}
	if err := d.pcache.open(d, opt.CacheDir); err != nil {
		return fail(err)
	}
	return d, nil
}

// unusable says why the engine cannot run on the device, or "" if it can.
func (p *physical) unusable() string {
	var miss []string
	if p.raw.api_version < C.VK_API_VERSION_1_2 {
		return fmt.Sprintf("it supports Vulkan %s, 1.2 or newer is needed", p.info.APIVersion)
	}
	if p.raw.compute_family < 0 {
		return "it has no compute queue"
	}
	if !p.info.Storage16 {
		miss = append(miss, "storageBuffer16BitAccess")
	}
	if !p.info.Timeline {
		miss = append(miss, "timelineSemaphore")
	}
	if len(miss) > 0 {
		return "it lacks " + strings.Join(miss, " and ")
	}
	return ""
}

// Info describes the device in use.
func (d *Device) Info() DeviceInfo {
	info := d.info
	info.Heaps = append([]Heap(nil), d.info.Heaps...)
	if d.info.MemoryBudget && d.dev != nil {
		var budget, usage [C.HI_MAX_HEAPS]C.uint64_t
		C.hi_memory_budget(d.inst, d.phys.phys, &budget[0], &usage[0], C.uint32_t(len(info.Heaps)))
		for i := range info.Heaps {
			info.Heaps[i].Budget, info.Heaps[i].Usage = uint64(budget[i]), uint64(usage[i])
		}
	}
	return info
}

// Compute is the queue Run submits to.
func (d *Device) Compute() *Queue { return d.compute }

// Transfer is the transfer-only queue, or the compute queue when the
// device has no transfer-only family.
func (d *Device) Transfer() *Queue { return d.transfer }

// ValidationMessages returns the validation warnings and errors reported
// since Open or since the previous call.
func (d *Device) ValidationMessages() []string {
	if d.inst == nil {
		m := d.closingMsgs
		d.closingMsgs = nil
		return m
	}
	s := C.hi_messages_drain(d.inst)
	if s == nil {
		return nil
	}
	defer C.hi_messages_free(s)
	var out []string
	for _, m := range strings.Split(C.GoString(s), "\x1e") {
		if m != "" {
			out = append(out, m)
		}
	}
	return out
}

// Close waits for the device to go idle, saves the pipeline cache and
// releases everything the device owns. Buffers, Commands and Timelines
// must not be used afterwards. A device that hung (a wait for its work
// timed out) and still has work pending is not destroyed: Close returns
// the failure and leaves it allocated.
func (d *Device) Close() error {
	var err error
	d.closeOnce.Do(func() {
		if d.dev != nil {
			if err = d.drain(); err != nil {
				// Destroying objects that pending work still uses could
				// crash the driver: a hung device is left as it is.
				d.log(fmt.Sprintf("vk: device %s left open: %v", d.info.Name, err))
				return
			}
			err = result(C.hi_device_wait_idle(d.dev), "vkDeviceWaitIdle")
			if perr := d.pcache.save(); err == nil {
				err = perr
			}
		}
		d.destroy()
	})
	return err
}

// drain waits for everything submitted to the queues, for at most the
// default wait; on a device that hung it only checks (see waitFor).
func (d *Device) drain() error {
	if d.compute == nil {
		return nil
	}
	if err := d.compute.Idle(); err != nil {
		return err
	}
	if d.transfer != d.compute {
		return d.transfer.Idle()
	}
	return nil
}

// destroy releases what exists of a device, in reverse order of creation.
func (d *Device) destroy() {
	if d.dev != nil {
		d.stage.free()
		d.objMu.Lock()
		cmds, tls := d.cmds, d.timelines
		d.cmds, d.timelines = nil, nil
		d.objMu.Unlock()
		for c := range cmds {
			c.Free()
		}
		for t := range tls {
			t.Free()
		}
		d.kmu.Lock()
		for _, k := range d.kernels {
			C.hi_kernel_destroy(d.dev, k.c)
		}
		d.kernels = nil
		d.kmu.Unlock()
		d.pcache.close()
		d.mem.close()
		if d.transfer != nil && d.transfer != d.compute {
			d.transfer.free()
		}
		if d.compute != nil {
			d.compute.free()
		}
		C.hi_device_destroy(d.dev)
		d.dev = nil
	}
	if d.inst != nil {
		// Keep what vkDestroyDevice reported (leaked objects) readable.
		d.closingMsgs = d.ValidationMessages()
		C.hi_instance_destroy(d.inst)
		d.inst = nil
	}
}

// errClosed is returned by methods of a closed device.
var errClosed = errors.New("vk: device is closed")

// track records a live object for Close; it reports false if the device
// is closed.
func track[T comparable](d *Device, m *map[T]struct{}, v T) bool {
	d.objMu.Lock()
	defer d.objMu.Unlock()
	if *m == nil {
		return false
	}
	(*m)[v] = struct{}{}
	return true
}

// untrack forgets an object freed by its owner.
func untrack[T comparable](d *Device, m *map[T]struct{}, v T) {
	d.objMu.Lock()
	defer d.objMu.Unlock()
	if *m != nil {
		delete(*m, v)
	}
}

// cBytes views C memory as a byte slice.
func cBytes(p unsafe.Pointer, n uint64) []byte {
	return unsafe.Slice((*byte)(p), n)
}
