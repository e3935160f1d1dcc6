package vk

/*
#include "vkc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ErrDeviceFailed is matched (errors.Is) by every error after which the
// device cannot be trusted to run more work: a submission the driver
// refused, a lost device, or a wait for submitted work that timed out.
// Once one happens the device stays failed: later submissions fail at once
// with the first failure, and the owner should close the device (and open
// a new one, if it wants to go on).
var ErrDeviceFailed = errors.New("vk: device failed")

// DefaultWaitTimeout bounds a host wait for submitted work when the caller
// gives no deadline (Options.WaitTimeout overrides it). It is generous: a
// long prefill step on a CPU device takes minutes, and a wait that gives
// up marks the device failed.
const DefaultWaitTimeout = time.Hour

// FaultSubmitEnv names the environment variable that sets
// Options.FaultSubmit when the option is zero, so that tests can make a
// device fail inside the real binary.
const FaultSubmitEnv = "HEADINFER_FAULT_SUBMIT"

// failure is the error that made a device fail.
type failure struct{ err error }

func (f *failure) Error() string        { return f.err.Error() }
func (f *failure) Unwrap() error        { return f.err }
func (f *failure) Is(target error) bool { return target == ErrDeviceFailed }

// Fail marks the device failed because of err, unless it already failed,
// and returns err wrapped so that it matches ErrDeviceFailed. Package vk
// calls it on submission errors, lost devices and timed-out waits; users
// call it when their own wait for submitted work gives up.
func (d *Device) Fail(err error) error {
	if err == nil {
		err = errors.New("vk: device marked failed")
	}
	var f *failure
	if !errors.As(err, &f) {
		f = &failure{err: err}
	}
	if d.failed.CompareAndSwap(nil, f) {
		d.log(fmt.Sprintf("vk: device %s failed: %v", d.info.Name, err))
	}
	return f
}

// Hang is Fail for a wait of the caller's own that gave up on submitted
// work: the device also counts as hung, so that later waits for its work
// (freeing commands, Close) only check instead of waiting it out.
func (d *Device) Hang(err error) error {
	d.hung.Store(true)
	return d.Fail(err)
}

// Failed is the error that made the device fail, or nil while it works.
func (d *Device) Failed() error {
	if f := d.failed.Load(); f != nil {
		return f
	}
	return nil
}

// faultSubmit is the submission (1-based) that Options.FaultSubmit, or its
// environment variable, makes fail; 0 for none.
func faultSubmit(opt Options) (int64, error) {
	if opt.FaultSubmit != 0 {
		return int64(opt.FaultSubmit), nil
	}
	s := os.Getenv(FaultSubmitEnv)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("vk: $%s=%q is not a submission number", FaultSubmitEnv, s)
	}
	return n, nil
}

// injected reports whether this submission is the one to fail, counting
// it.
func (d *Device) injected() bool {
	n := d.submits.Add(1)
	return d.faultAt > 0 && n == d.faultAt
}

// deviceLost is the error an injected fault returns.
func deviceLost(op string) error {
	return &Error{Op: op + " (fault injected by " + FaultSubmitEnv + ")", Code: int(C.VK_ERROR_DEVICE_LOST)}
}

// waitResult turns the result of a wait for submitted work into an error;
// a timeout or a lost device marks the device failed.
func (d *Device) waitResult(r C.VkResult, what string, timeout time.Duration) error {
	switch r {
	case C.VK_SUCCESS:
		return nil
	case C.VK_TIMEOUT:
		d.hung.Store(true)
		return d.Fail(fmt.Errorf("vk: %s did not finish within %v: the device seems hung", what, timeout.Round(time.Millisecond)))
	case C.VK_ERROR_DEVICE_LOST:
		return d.Fail(result(r, what))
	}
	return result(r, what)
}

// timeoutUntil is the wait for a deadline: the time left (at least zero),
// or the device's default wait when deadline is zero.
func (d *Device) timeoutUntil(deadline time.Time) time.Duration {
	if deadline.IsZero() {
		return d.waitTimeout
	}
	return max(time.Until(deadline), 0)
}
