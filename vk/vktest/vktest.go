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

	onceSecond sync.Once
	second     *vk.Device
	errSecond  error
)

// Device returns the test binary's device, opened on first use with the
// selector in $HEADINFER_DEVICE and with validation unless
// HEADINFER_VALIDATION=0. The test fails if validation messages appear
// before it ends.
func Device(t testing.TB) *vk.Device {
	t.Helper()
	once.Do(func() { dev, err = open() })
	return checked(t, dev, err)
}

// Second returns another device of the test binary, opened as Device
// opens its own: the same physical device, a logical device of its own,
// for tests of models split over two devices.
func Second(t testing.TB) *vk.Device {
	t.Helper()
	onceSecond.Do(func() { second, errSecond = open() })
	return checked(t, second, errSecond)
}

func open() (*vk.Device, error) {
	return vk.Open(vk.Options{
		Validation: Validation(),
		Log:        func(s string) { fmt.Fprintln(os.Stderr, s) },
	})
}

// checked fails t at once if the device did not open, and at its end if
// validation messages appeared.
func checked(t testing.TB, d *vk.Device, err error) *vk.Device {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("%d Vulkan validation messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
		}
	})
	return d
}

// Validation reports whether tests run with the validation layer: yes
// unless HEADINFER_VALIDATION=0.
func Validation() bool { return os.Getenv("HEADINFER_VALIDATION") != "0" }
