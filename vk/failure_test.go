package vk_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// openOwn opens a device of the test's own (a failed device stays
// failed, so these tests cannot use the shared one) and closes it at the
// end, failing the test on validation messages.
func openOwn(t *testing.T, opt vk.Options) *vk.Device {
	t.Helper()
	opt.Validation = vktest.Validation()
	d, err := vk.Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("%d validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
		}
	})
	return d
}

// ended returns ended commands holding a fill of b.
func ended(t *testing.T, d *vk.Device, b *vk.Buffer) *vk.Commands {
	t.Helper()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Free)
	c.Fill(b.All(), 7)
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFaultSubmit checks the fault injection and what a failed submission
// does to the device: the Nth submission fails with VK_ERROR_DEVICE_LOST,
// the device is marked failed, and every later submission fails at once
// with the same error.
func TestFaultSubmit(t *testing.T) {
	d := openOwn(t, vk.Options{FaultSubmit: 2})
	b := vkAlloc(t, d, vk.DeviceLocal, 1024)
	c := ended(t, d, b)
	if err := d.Run(c); err != nil {
		t.Fatalf("first submission: %v", err)
	}
	if d.Failed() != nil {
		t.Fatalf("failed after a good submission: %v", d.Failed())
	}
	err := d.Run(c)
	if !errors.Is(err, vk.ErrDeviceFailed) || !strings.Contains(err.Error(), "VK_ERROR_DEVICE_LOST") {
		t.Fatalf("second submission: %v, want an injected device loss", err)
	}
	if f := d.Failed(); f == nil || f.Error() != err.Error() {
		t.Fatalf("Failed() = %v, want %v", f, err)
	}
	if err2 := d.Compute().Submit(c, nil, nil); !errors.Is(err2, vk.ErrDeviceFailed) || err2.Error() != err.Error() {
		t.Errorf("submission on the failed device: %v", err2)
	}
	if err := d.Compute().Idle(); err != nil {
		t.Errorf("waiting for what was submitted before the failure: %v", err)
	}
}

// TestFaultSubmitEnv checks that the environment variable reaches Open
// and that a bad value is refused.
func TestFaultSubmitEnv(t *testing.T) {
	t.Setenv(vk.FaultSubmitEnv, "1")
	d := openOwn(t, vk.Options{})
	c := ended(t, d, vkAlloc(t, d, vk.DeviceLocal, 256))
	if err := d.Run(c); !errors.Is(err, vk.ErrDeviceFailed) {
		t.Errorf("first submission with %s=1: %v", vk.FaultSubmitEnv, err)
	}
	t.Setenv(vk.FaultSubmitEnv, "third")
	if d, err := vk.Open(vk.Options{}); err == nil || !strings.Contains(err.Error(), vk.FaultSubmitEnv) {
		if d != nil {
			d.Close()
		}
		t.Errorf("Open with %s=third: %v", vk.FaultSubmitEnv, err)
	}
}

// TestRunUntilDeadline holds the compute queue on a semaphore nothing
// signals and checks that RunUntil gives up at its deadline and reports
// the device as failed (hung), and that Close then returns at once,
// leaving the device allocated rather than destroying what the pending
// work uses.
func TestRunUntilDeadline(t *testing.T) {
	d := openOwn(t, vk.Options{})
	gate, err := d.NewTimeline() // Close frees it, once the device is idle
	if err != nil {
		t.Fatal(err)
	}
	c := ended(t, d, vkAlloc(t, d, vk.DeviceLocal, 256))
	if err := d.Compute().Submit(nil, []vk.Sync{{T: gate, Value: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.RunUntil(time.Now().Add(100*time.Millisecond), c) }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		// Release the queue so that the test can end.
		gate.Signal(1)
		t.Fatalf("RunUntil with a deadline 100 ms away had not returned after a minute: %v", <-done)
	}
	if !errors.Is(err, vk.ErrDeviceFailed) || !strings.Contains(err.Error(), "hung") {
		t.Errorf("RunUntil past its deadline: %v, want a hung device", err)
	}
	if d.Failed() == nil {
		t.Error("the device is not marked failed")
	}
	// Close must neither wait for the hung work nor destroy what it uses.
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err = <-closed:
	case <-time.After(time.Minute):
		gate.Signal(1)
		t.Fatalf("Close of a hung device had not returned after a minute: %v", <-closed)
	}
	if !errors.Is(err, vk.ErrDeviceFailed) {
		t.Errorf("Close of a hung device: %v, want the failure", err)
	}
	// The device was left allocated: its queue can still be released.
	if err := gate.Signal(1); err != nil {
		t.Fatal(err)
	}
}
