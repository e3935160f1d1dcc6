// Package vktest opens the Vulkan device that tests share and fails a
// test when the validation layer reports a problem during it.
package vktest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"headinfer/vk"
)

var (
	once sync.Once
	dev  *vk.Device
	err  error
)

// Device returns the test binary's device, opened on first use with the
// selector in $HEADINFER_DEVICE and with validation unless
// HEADINFER_VALIDATION=0. The test fails if validation messages appear
// before it ends.
func Device(t testing.TB) *vk.Device {
	t.Helper()
	once.Do(func() {
		dev, err = vk.Open(vk.Options{
			Validation: Validation(),
			Log:        func(s string) { fmt.Fprintln(os.Stderr, s) },
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if msgs := dev.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("%d Vulkan validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
		}
	})
	return dev
}

// Validation reports whether tests run with the validation layer: yes
// unless HEADINFER_VALIDATION=0.
func Validation() bool { return os.Getenv("HEADINFER_VALIDATION") != "0" }
