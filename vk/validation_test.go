package vk_test

import (
	"strings"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// TestValidationReports breaks a rule on purpose, filling a buffer twice
// with no barrier between the two writes, and checks that synchronization
// validation's message reaches ValidationMessages: if messages were lost,
// every test that relies on them would pass with nothing checked.
func TestValidationReports(t *testing.T) {
	if !vktest.Validation() {
		t.Skip("validation is off (HEADINFER_VALIDATION=0)")
	}
	d, err := vk.Open(vk.Options{Validation: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	if msgs := d.ValidationMessages(); len(msgs) > 0 {
		t.Fatalf("messages before the mistake:\n%s", strings.Join(msgs, "\n"))
	}
	b, err := d.Alloc(vk.DeviceLocal, 4096, "twice written")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	c.Fill(b.All(), 1)
	c.Fill(b.All(), 2) // write after write with no barrier: a hazard
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	msgs := d.ValidationMessages()
	if len(msgs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), "SYNC-HAZARD-WRITE-AFTER-WRITE") {
		t.Fatalf("after two unordered writes, validation reported %d messages, want SYNC-HAZARD-WRITE-AFTER-WRITE:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	if msgs := d.ValidationMessages(); len(msgs) != 0 {
		t.Errorf("ValidationMessages does not drain: %q", msgs)
	}
}
