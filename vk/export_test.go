package vk

// Hooks for the external tests of this package.

// SetStaging makes Write and Read go through the staging buffer even for
// mapped memory (force) and sets its chunk size; chunk 0 restores the
// default.
func SetStaging(d *Device, force bool, chunk uint64) {
	d.stage.mu.Lock()
	defer d.stage.mu.Unlock()
	d.stage.forceStaging = force
	d.stage.chunk = chunk
}

// PipelineCacheLoaded is how many bytes of cache data Open accepted.
func PipelineCacheLoaded(d *Device) int { return d.pcache.loaded }

// PipelineCachePath is the cache file of the device.
func PipelineCachePath(d *Device) string { return d.pcache.path }

// PickTypeOf exposes the memory type choice.
var PickTypeOf = pickTypeOf
