package vk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"headinfer/vk"
	"headinfer/vk/vktest"
)

// TestDevices checks enumeration and that the test device is usable.
func TestDevices(t *testing.T) {
	devs, err := vk.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		t.Fatal("no devices and no error")
	}
	for _, dv := range devs {
		t.Logf("%d: %s (%s), driver %s %s, Vulkan %s, subgroup %d, heaps %+v",
			dv.Index, dv.Name, dv.Type, dv.Driver, dv.DriverInfo, dv.APIVersion, dv.SubgroupSize, dv.Heaps)
		if dv.Name == "" || dv.APIVersion == "" || len(dv.Heaps) == 0 {
			t.Errorf("device %d is missing basic properties: %+v", dv.Index, dv)
		}
	}
	info := testDevice(t).Info()
	if !info.Storage16 || !info.Timeline {
		t.Errorf("open device lacks required features: %+v", info)
	}
	if info.MaxStorageBufferRange == 0 || info.MaxWorkgroupInvocations == 0 || info.SubgroupSize == 0 || info.MaxWorkgroupCount[0] == 0 {
		t.Errorf("open device has zero limits: %+v", info)
	}
	if d0 := devs[info.Index]; d0.Name != info.Name {
		t.Errorf("open device %q is not device %d of Devices (%q)", info.Name, info.Index, d0.Name)
	}
}

// TestChoose checks the default preference order and both selector forms.
func TestChoose(t *testing.T) {
	ok := func(name string, typ vk.DeviceType, idx int) vk.DeviceInfo {
		return vk.DeviceInfo{Index: idx, Name: name, Type: typ, Storage16: true, Timeline: true}
	}
	devs := []vk.DeviceInfo{
		ok("llvmpipe (LLVM 15)", vk.CPU, 0),
		ok("Intel Iris Xe", vk.Integrated, 1),
		ok("NVIDIA GeForce RTX 4090", vk.Discrete, 2),
		ok("NVIDIA GeForce RTX 3060", vk.Discrete, 3),
	}
	old := ok("Ancient GPU", vk.Discrete, 4)
	old.Timeline = false
	devs = append(devs, old)
	cases := []struct {
		sel  string
		want int
	}{
		{"", 2}, {"1", 1}, {"0", 0}, {"3060", 3}, {"nvidia", 2}, {"LLVMPIPE", 0}, {" iris ", 1}, {"ancient", 4},
	}
	for _, c := range cases {
		got, err := vk.Choose(devs, c.sel)
		if err != nil || got != c.want {
			t.Errorf("Choose(%q) = %d, %v; want %d", c.sel, got, err, c.want)
		}
	}
	if got, _ := vk.Choose(devs[:2], ""); got != 1 {
		t.Errorf("integrated not preferred over CPU: got %d", got)
	}
	if got, _ := vk.Choose([]vk.DeviceInfo{old, devs[0]}, ""); got != 1 {
		t.Errorf("a device lacking timeline semaphores preferred: got %d", got)
	}
	for _, sel := range []string{"7", "radeon"} {
		if _, err := vk.Choose(devs, sel); err == nil || !strings.Contains(err.Error(), "RTX 4090") {
			t.Errorf("Choose(%q): %v, want an error listing the devices", sel, err)
		}
	}
	if _, err := vk.Choose(nil, ""); err == nil || !strings.Contains(err.Error(), "apt-get install mesa-vulkan-drivers") {
		t.Errorf("Choose with no devices: %v", err)
	}
}

// TestSelectEnv checks that $HEADINFER_DEVICE selects when Options.Select
// is empty.
func TestSelectEnv(t *testing.T) {
	t.Setenv("HEADINFER_DEVICE", "no such device anywhere")
	_, err := vk.Open(vk.Options{CacheDir: t.TempDir(), Log: func(string) {}})
	if err == nil || !strings.Contains(err.Error(), "no such device anywhere") {
		t.Fatalf("Open with a bad $HEADINFER_DEVICE: %v", err)
	}
	name := testDevice(t).Info().Name
	t.Setenv("HEADINFER_DEVICE", "0")
	d, err := vk.Open(vk.Options{Select: name, CacheDir: t.TempDir(), Log: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Info().Name != name {
		t.Errorf("Options.Select %q gave %q", name, d.Info().Name)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelineCache checks that Close writes the cache file, that a new
// device loads it, and that a corrupt file is ignored and replaced.
func TestPipelineCache(t *testing.T) {
	dir := t.TempDir()
	open := func() *vk.Device {
		t.Helper()
		d, err := vk.Open(vk.Options{CacheDir: dir, Validation: vktest.Validation(), Log: func(string) {}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	closeDev := func(d *vk.Device) {
		t.Helper()
		axpyKernel(t, d, 64, 9)
		if msgs := d.ValidationMessages(); len(msgs) > 0 {
			t.Errorf("validation: %s", strings.Join(msgs, "\n"))
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	d := open()
	path := vk.PipelineCachePath(d)
	if filepath.Dir(path) != dir {
		t.Fatalf("cache file %s is not in %s", path, dir)
	}
	if n := vk.PipelineCacheLoaded(d); n != 0 {
		t.Fatalf("fresh cache dir, yet %d bytes loaded", n)
	}
	closeDev(d)
	saved, err := os.ReadFile(path)
	if err != nil || len(saved) < 32 {
		t.Fatalf("cache file after Close: %d bytes, %v", len(saved), err)
	}

	d = open()
	if n := vk.PipelineCacheLoaded(d); n != len(saved) {
		t.Fatalf("reopened device loaded %d bytes of a %d-byte cache", n, len(saved))
	}
	closeDev(d)

	garbage := bytes.Repeat([]byte{0xa5}, 4096)
	if err := os.WriteFile(path, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	d = open()
	if n := vk.PipelineCacheLoaded(d); n != 0 {
		t.Fatalf("corrupt cache file accepted (%d bytes)", n)
	}
	closeDev(d)
	if data, _ := os.ReadFile(path); bytes.Equal(data, garbage) {
		t.Fatal("corrupt cache file was not replaced")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// TestValidationMessages provokes a synchronization hazard on a device of
// its own and checks the messenger reports it, then drains.
func TestValidationMessages(t *testing.T) {
	d, err := vk.Open(vk.Options{Validation: true, CacheDir: t.TempDir(), Log: func(string) {}})
	if err != nil {
		// Without the layer, Open must say how to get it.
		if !strings.Contains(err.Error(), "apt-get install vulkan-validationlayers") {
			t.Fatalf("Open with validation: %v", err)
		}
		return
	}
	defer d.Close()
	k := axpyKernel(t, d, 64, 1)
	const n = 256
	x, err := d.Alloc(vk.DeviceLocal, 4*n, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	y, err := d.Alloc(vk.DeviceLocal, 4*n, "y")
	if err != nil {
		t.Fatal(err)
	}
	defer y.Free()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	c.Fill(x.All(), 0)
	// Deliberately no Barrier: the dispatch reads what the fill writes.
	c.Dispatch(k, [3]uint32{n / 64, 1, 1}, vkPush(uint32(n), float32(0)), x.All(), y.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
	msgs := d.ValidationMessages()
	if len(msgs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), "SYNC-HAZARD-READ-AFTER-WRITE") {
		t.Fatalf("missing barrier not reported; messages: %q", msgs)
	}
	if again := d.ValidationMessages(); len(again) != 0 {
		t.Fatalf("messages not drained: %q", again)
	}
}

// TestClose checks that Close releases what is still live without
// validation errors and that the device then refuses work.
func TestClose(t *testing.T) {
	d, err := vk.Open(vk.Options{Validation: vktest.Validation(), CacheDir: t.TempDir(), Log: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	k := axpyKernel(t, d, 64, 1)
	b, err := d.Alloc(vk.Upload, 1000, "left over")
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	c.Dispatch(k, [3]uint32{1, 1, 1}, vkPush(uint32(10), float32(1)), b.All(), b.All())
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	tl, err := d.NewTimeline()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Compute().Submit(c, nil, []vk.Sync{{tl, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if msgs := d.ValidationMessages(); len(msgs) > 0 {
		t.Errorf("validation messages from Close:\n%s", strings.Join(msgs, "\n"))
	}
	c.Free()
	tl.Free()
	b.Free()
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Alloc(vk.Upload, 10, "late"); err == nil {
		t.Error("Alloc after Close succeeded")
	}
	if _, err := d.NewCommands(); err == nil {
		t.Error("NewCommands after Close succeeded")
	}
	if _, err := d.NewTimeline(); err == nil {
		t.Error("NewTimeline after Close succeeded")
	}
}

// TestMissingPieces checks the advice given when the validation layer or
// every driver is missing, by pointing the loader at empty folders.
func TestMissingPieces(t *testing.T) {
	t.Run("layer", func(t *testing.T) {
		t.Setenv("VK_LAYER_PATH", t.TempDir())
		t.Setenv("VK_ADD_LAYER_PATH", "")
		t.Setenv("XDG_DATA_HOME", t.TempDir())
		t.Setenv("XDG_DATA_DIRS", t.TempDir())
		t.Setenv("XDG_CONFIG_DIRS", t.TempDir())
		_, err := vk.Open(vk.Options{Validation: true, CacheDir: t.TempDir(), Log: func(string) {}})
		if err == nil || !strings.Contains(err.Error(), "apt-get install vulkan-validationlayers") {
			t.Fatalf("Open without the layer: %v", err)
		}
	})
	t.Run("driver", func(t *testing.T) {
		t.Setenv("VK_DRIVER_FILES", filepath.Join(t.TempDir(), "none.json"))
		t.Setenv("VK_ICD_FILENAMES", filepath.Join(t.TempDir(), "none.json"))
		_, err := vk.Devices()
		if err == nil || !strings.Contains(err.Error(), "apt-get install mesa-vulkan-drivers libvulkan1") {
			t.Fatalf("Devices without drivers: %v", err)
		}
		_, err = vk.Open(vk.Options{CacheDir: t.TempDir(), Log: func(string) {}})
		if err == nil || !strings.Contains(err.Error(), "apt-get install mesa-vulkan-drivers libvulkan1") {
			t.Fatalf("Open without drivers: %v", err)
		}
	})
}
