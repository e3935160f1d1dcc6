//go:build window

package window

import (
	"errors"
	"fmt"
	"image"
	"math"
	"runtime"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"
	vk "github.com/vulkan-go/vulkan"
)

// presenter shows CPU-drawn frames in a window through a Vulkan swapchain
// on an instance and device of its own, apart from the engine's: a frame
// is copied into a host-visible buffer, and from there into the acquired
// swapchain image by the transfer engine, which is all that presenting
// needs (no graphics pipeline).
type presenter struct {
	inst     vk.Instance
	surf     vk.Surface
	gpu      vk.PhysicalDevice
	gpuName  string
	dev      vk.Device
	queue    vk.Queue
	family   uint32
	validate bool

	swap     vk.Swapchain
	format   vk.Format
	bgr      bool // the swapchain's bytes are B, G, R, A
	extent   vk.Extent2D
	images   []vk.Image
	rendered []vk.Semaphore // per swapchain image: its copy is done, it may be presented
	usage    vk.ImageUsageFlags

	pool     vk.CommandPool
	cmd      vk.CommandBuffer
	fence    vk.Fence     // the last frame's commands are done
	acquired vk.Semaphore // the acquired image may be written

	staging, readback hostBuffer
}

// hostBuffer is a buffer in host-visible, coherent memory, mapped.
type hostBuffer struct {
	buf  vk.Buffer
	mem  vk.DeviceMemory
	size int
	ptr  unsafe.Pointer
}

func (b hostBuffer) bytes() []byte {
	if b.ptr == nil {
		return nil
	}
	return unsafe.Slice((*byte)(b.ptr), b.size)
}

func check(r vk.Result, what string) error {
	if r == vk.Success {
		return nil
	}
	return fmt.Errorf("window: %s: %w", what, vk.Error(r))
}

// cstr is s as the NUL-terminated string vulkan-go passes to C.
//
// vulkan-go stores pointers to Go strings and slices in the C structs it
// builds and passes out-parameters as unsafe.Pointer, which makes the cgo
// pointer check look at the whole Go object pointed to. So strings and
// slices that reach C are pinned for the call (runtime.Pinner), and
// handles are created into local variables, never into fields of a struct
// that holds Go pointers.
func cstr(s string) string { return s + "\x00" }

// newPresenter creates the instance and the window's surface; attach
// makes it ready to present.
func newPresenter(w *glfw.Window, validate bool) (p *presenter, err error) {
	vk.SetGetInstanceProcAddr(glfw.GetVulkanGetInstanceProcAddress())
	if err := vk.Init(); err != nil {
		return nil, fmt.Errorf("window: the Vulkan loader: %w", err)
	}
	p = &presenter{validate: validate}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	exts := w.GetRequiredInstanceExtensions()
	if len(exts) == 0 {
		return nil, errors.New("window: this display offers no Vulkan surface (glfw found no surface extensions)")
	}
	var layers []string
	if validate {
		if !hasInstanceLayer("VK_LAYER_KHRONOS_validation") {
			return nil, errors.New("window: validation requested but VK_LAYER_KHRONOS_validation is not installed: apt-get install vulkan-validationlayers")
		}
		layers = append(layers, cstr("VK_LAYER_KHRONOS_validation"))
		exts = append(exts, "VK_EXT_debug_utils")
	}
	for i := range exts {
		exts[i] = cstr(exts[i])
	}
	var inst vk.Instance
	r := vk.CreateInstance(&vk.InstanceCreateInfo{
		SType: vk.StructureTypeInstanceCreateInfo,
		PApplicationInfo: &vk.ApplicationInfo{
			SType:            vk.StructureTypeApplicationInfo,
			PApplicationName: cstr("headinfer window"),
			PEngineName:      cstr("headinfer"),
			ApiVersion:       vk.MakeVersion(1, 1, 0),
		},
		EnabledExtensionCount:   uint32(len(exts)),
		PpEnabledExtensionNames: exts,
		EnabledLayerCount:       uint32(len(layers)),
		PpEnabledLayerNames:     layers,
	}, nil, &inst)
	p.inst = inst
	if err := check(r, "creating the instance"); err != nil {
		return nil, err
	}
	if err := vk.InitInstance(p.inst); err != nil {
		return nil, fmt.Errorf("window: %w", err)
	}
	if validate {
		if err := startMessages(p.inst); err != nil {
			return nil, err
		}
	}
	surf, err := createSurface(p.inst, w)
	if err != nil {
		return nil, err
	}
	p.surf = surf
	return p, nil
}

// attach picks the device that presents, creates it and the swapchain for
// a framebuffer of fw × fh pixels.
//
// It is separate from newPresenter because listing the devices makes
// Mesa's lavapipe set itself up, reading its environment (LP_NUM_THREADS)
// once for the process: done before the engine opens its device, it would
// change how the engine's lavapipe runs. So the window attaches once the
// engine has its device.
func (p *presenter) attach(fw, fh int) error {
	if err := p.pickDevice(); err != nil {
		return err
	}
	if err := p.createDevice(); err != nil {
		return err
	}
	return p.createSwapchain(fw, fh)
}

func hasInstanceLayer(name string) bool {
	var n uint32
	if vk.EnumerateInstanceLayerProperties(&n, nil) != vk.Success {
		return false
	}
	props := make([]vk.LayerProperties, n)
	if vk.EnumerateInstanceLayerProperties(&n, props) != vk.Success {
		return false
	}
	for i := range props {
		props[i].Deref()
		if vk.ToString(props[i].LayerName[:]) == name {
			return true
		}
	}
	return false
}

// pickDevice takes the first device with a queue family that can present
// to the surface (every queue family can copy).
func (p *presenter) pickDevice() error {
	var n uint32
	if err := check(vk.EnumeratePhysicalDevices(p.inst, &n, nil), "listing devices"); err != nil {
		return err
	}
	gpus := make([]vk.PhysicalDevice, n)
	if err := check(vk.EnumeratePhysicalDevices(p.inst, &n, gpus), "listing devices"); err != nil {
		return err
	}
	for _, g := range gpus[:n] {
		var nq uint32
		vk.GetPhysicalDeviceQueueFamilyProperties(g, &nq, nil)
		for i := uint32(0); i < nq; i++ {
			var ok vk.Bool32
			if vk.GetPhysicalDeviceSurfaceSupport(g, i, p.surf, &ok) == vk.Success && ok == vk.True {
				var props vk.PhysicalDeviceProperties
				vk.GetPhysicalDeviceProperties(g, &props)
				props.Deref()
				p.gpu, p.family, p.gpuName = g, i, vk.ToString(props.DeviceName[:])
				return nil
			}
		}
	}
	return errors.New("window: no Vulkan device can present to this display's windows")
}

func (p *presenter) createDevice() error {
	var pin runtime.Pinner
	defer pin.Unpin()
	prio := []float32{0.5}
	ext := cstr("VK_KHR_swapchain")
	pin.Pin(&prio[0])
	pin.Pin(unsafe.StringData(ext))
	var dev vk.Device
	r := vk.CreateDevice(p.gpu, &vk.DeviceCreateInfo{
		SType:                vk.StructureTypeDeviceCreateInfo,
		QueueCreateInfoCount: 1,
		PQueueCreateInfos: []vk.DeviceQueueCreateInfo{{
			SType:            vk.StructureTypeDeviceQueueCreateInfo,
			QueueFamilyIndex: p.family,
			QueueCount:       1,
			PQueuePriorities: prio,
		}},
		EnabledExtensionCount:   1,
		PpEnabledExtensionNames: []string{ext},
	}, nil, &dev)
	if err := check(r, "creating the device"); err != nil {
		return err
	}
	p.dev = dev
	var q vk.Queue
	vk.GetDeviceQueue(p.dev, p.family, 0, &q)
	p.queue = q
	var pool vk.CommandPool
	r = vk.CreateCommandPool(p.dev, &vk.CommandPoolCreateInfo{
		SType:            vk.StructureTypeCommandPoolCreateInfo,
		Flags:            vk.CommandPoolCreateFlags(vk.CommandPoolCreateResetCommandBufferBit),
		QueueFamilyIndex: p.family,
	}, nil, &pool)
	p.pool = pool
	if err := check(r, "creating a command pool"); err != nil {
		return err
	}
	cmds := make([]vk.CommandBuffer, 1)
	r = vk.AllocateCommandBuffers(p.dev, &vk.CommandBufferAllocateInfo{
		SType:              vk.StructureTypeCommandBufferAllocateInfo,
		CommandPool:        p.pool,
		Level:              vk.CommandBufferLevelPrimary,
		CommandBufferCount: 1,
	}, cmds)
	if err := check(r, "allocating a command buffer"); err != nil {
		return err
	}
	p.cmd = cmds[0]
	var fence vk.Fence
	r = vk.CreateFence(p.dev, &vk.FenceCreateInfo{SType: vk.StructureTypeFenceCreateInfo, Flags: vk.FenceCreateFlags(vk.FenceCreateSignaledBit)}, nil, &fence)
	p.fence = fence
	if err := check(r, "creating a fence"); err != nil {
		return err
	}
	return p.newSemaphore(&p.acquired)
}

func (p *presenter) newSemaphore(s *vk.Semaphore) error {
	var sem vk.Semaphore // not *s: see cstr
	r := vk.CreateSemaphore(p.dev, &vk.SemaphoreCreateInfo{SType: vk.StructureTypeSemaphoreCreateInfo}, nil, &sem)
	*s = sem
	return check(r, "creating a semaphore")
}

// createSwapchain makes the swapchain for a framebuffer of fw × fh
// pixels, and the buffers a frame goes through.
func (p *presenter) createSwapchain(fw, fh int) error {
	var caps vk.SurfaceCapabilities
	if err := check(vk.GetPhysicalDeviceSurfaceCapabilities(p.gpu, p.surf, &caps), "reading the surface's capabilities"); err != nil {
		return err
	}
	caps.Deref()
	caps.CurrentExtent.Deref()
	caps.MinImageExtent.Deref()
	caps.MaxImageExtent.Deref()
	need := vk.ImageUsageFlags(vk.ImageUsageTransferDstBit | vk.ImageUsageTransferSrcBit)
	if caps.SupportedUsageFlags&need != need {
		return errors.New("window: the surface's images cannot be copied to and from (transfer usage unsupported)")
	}
	p.usage = need
	ext := caps.CurrentExtent
	if ext.Width == math.MaxUint32 {
		ext = vk.Extent2D{
			Width:  uint32(min(max(fw, int(caps.MinImageExtent.Width)), int(caps.MaxImageExtent.Width))),
			Height: uint32(min(max(fh, int(caps.MinImageExtent.Height)), int(caps.MaxImageExtent.Height))),
		}
	}
	if ext.Width == 0 || ext.Height == 0 {
		return errors.New("window: the window has no area")
	}
	var nf uint32
	if err := check(vk.GetPhysicalDeviceSurfaceFormats(p.gpu, p.surf, &nf, nil), "listing surface formats"); err != nil {
		return err
	}
	formats := make([]vk.SurfaceFormat, nf)
	if err := check(vk.GetPhysicalDeviceSurfaceFormats(p.gpu, p.surf, &nf, formats), "listing surface formats"); err != nil {
		return err
	}
	chosen := -1
	for i := range formats {
		formats[i].Deref()
		switch formats[i].Format {
		case vk.FormatB8g8r8a8Unorm, vk.FormatB8g8r8a8Srgb, vk.FormatR8g8b8a8Unorm, vk.FormatR8g8b8a8Srgb:
			if chosen < 0 || formats[i].Format == vk.FormatB8g8r8a8Unorm {
				chosen = i
			}
		}
	}
	if chosen < 0 {
		return errors.New("window: the surface offers no 8-bit RGBA or BGRA format")
	}
	f := formats[chosen]
	p.format = f.Format
	p.bgr = f.Format == vk.FormatB8g8r8a8Unorm || f.Format == vk.FormatB8g8r8a8Srgb
	count := caps.MinImageCount + 1
	if caps.MaxImageCount > 0 && count > caps.MaxImageCount {
		count = caps.MaxImageCount
	}
	alpha := vk.CompositeAlphaOpaqueBit
	if vk.CompositeAlphaFlagBits(caps.SupportedCompositeAlpha)&alpha == 0 {
		for b := vk.CompositeAlphaFlagBits(1); b <= vk.CompositeAlphaInheritBit; b <<= 1 {
			if vk.CompositeAlphaFlagBits(caps.SupportedCompositeAlpha)&b != 0 {
				alpha = b
				break
			}
		}
	}
	old := p.swap
	var swap vk.Swapchain
	r := vk.CreateSwapchain(p.dev, &vk.SwapchainCreateInfo{
		SType:            vk.StructureTypeSwapchainCreateInfo,
		Surface:          p.surf,
		MinImageCount:    count,
		ImageFormat:      f.Format,
		ImageColorSpace:  f.ColorSpace,
		ImageExtent:      ext,
		ImageArrayLayers: 1,
		ImageUsage:       p.usage,
		ImageSharingMode: vk.SharingModeExclusive,
		PreTransform:     caps.CurrentTransform,
		CompositeAlpha:   alpha,
		PresentMode:      vk.PresentModeFifo, // the one mode every surface has
		Clipped:          vk.True,
		OldSwapchain:     old,
	}, nil, &swap)
	p.swap = swap
	if old != vk.NullSwapchain {
		vk.DestroySwapchain(p.dev, old, nil)
	}
	if err := check(r, "creating the swapchain"); err != nil {
		p.swap = vk.NullSwapchain
		return err
	}
	var n uint32
	if err := check(vk.GetSwapchainImages(p.dev, p.swap, &n, nil), "listing swapchain images"); err != nil {
		return err
	}
	p.images = make([]vk.Image, n)
	if err := check(vk.GetSwapchainImages(p.dev, p.swap, &n, p.images), "listing swapchain images"); err != nil {
		return err
	}
	for _, s := range p.rendered {
		vk.DestroySemaphore(p.dev, s, nil)
	}
	p.rendered = make([]vk.Semaphore, n)
	for i := range p.rendered {
		if err := p.newSemaphore(&p.rendered[i]); err != nil {
			return err
		}
	}
	p.extent = ext
	size := int(ext.Width) * int(ext.Height) * 4
	p.freeBuffer(&p.staging)
	p.freeBuffer(&p.readback)
	var err error
	if p.staging, err = p.newHostBuffer(size, vk.BufferUsageTransferSrcBit); err != nil {
		return err
	}
	p.readback, err = p.newHostBuffer(size, vk.BufferUsageTransferDstBit)
	return err
}

func (p *presenter) newHostBuffer(size int, usage vk.BufferUsageFlagBits) (hostBuffer, error) {
	b := hostBuffer{size: size}
	var buf vk.Buffer
	r := vk.CreateBuffer(p.dev, &vk.BufferCreateInfo{
		SType:       vk.StructureTypeBufferCreateInfo,
		Size:        vk.DeviceSize(size),
		Usage:       vk.BufferUsageFlags(usage),
		SharingMode: vk.SharingModeExclusive,
	}, nil, &buf)
	b.buf = buf
	if err := check(r, "creating a frame buffer"); err != nil {
		return b, err
	}
	var req vk.MemoryRequirements
	vk.GetBufferMemoryRequirements(p.dev, b.buf, &req)
	req.Deref()
	var props vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(p.gpu, &props)
	props.Deref()
	want := vk.MemoryPropertyFlags(vk.MemoryPropertyHostVisibleBit | vk.MemoryPropertyHostCoherentBit)
	typ := -1
	for i := uint32(0); i < props.MemoryTypeCount; i++ {
		props.MemoryTypes[i].Deref()
		if req.MemoryTypeBits&(1<<i) != 0 && props.MemoryTypes[i].PropertyFlags&want == want {
			typ = int(i)
			break
		}
	}
	if typ < 0 {
		vk.DestroyBuffer(p.dev, b.buf, nil)
		return hostBuffer{}, errors.New("window: the device has no host-visible coherent memory")
	}
	var mem vk.DeviceMemory
	r = vk.AllocateMemory(p.dev, &vk.MemoryAllocateInfo{
		SType:           vk.StructureTypeMemoryAllocateInfo,
		AllocationSize:  req.Size,
		MemoryTypeIndex: uint32(typ),
	}, nil, &mem)
	b.mem = mem
	if err := check(r, "allocating frame memory"); err != nil {
		vk.DestroyBuffer(p.dev, b.buf, nil)
		return hostBuffer{}, err
	}
	if err := check(vk.BindBufferMemory(p.dev, b.buf, b.mem, 0), "binding frame memory"); err != nil {
		p.freeBuffer(&b)
		return hostBuffer{}, err
	}
	var ptr unsafe.Pointer
	r = vk.MapMemory(p.dev, b.mem, 0, vk.DeviceSize(size), 0, &ptr)
	b.ptr = ptr
	if err := check(r, "mapping frame memory"); err != nil {
		p.freeBuffer(&b)
		return hostBuffer{}, err
	}
	return b, nil
}

func (p *presenter) freeBuffer(b *hostBuffer) {
	if b.ptr != nil {
		vk.UnmapMemory(p.dev, b.mem)
	}
	if b.buf != vk.NullBuffer {
		vk.DestroyBuffer(p.dev, b.buf, nil)
	}
	if b.mem != vk.NullDeviceMemory {
		vk.FreeMemory(p.dev, b.mem, nil)
	}
	*b = hostBuffer{}
}

// size is the swapchain's extent: the size frames are drawn at.
func (p *presenter) size() image.Point {
	return image.Pt(int(p.extent.Width), int(p.extent.Height))
}

// errOutOfDate means the swapchain no longer matches the window and was
// made anew: draw the frame again at the new size.
var errOutOfDate = errors.New("window: swapchain out of date")

// present shows img, whose size must be size(). With capture, it also
// copies the image back from the swapchain image after writing it, and
// returns it as read from there (in RGBA order).
func (p *presenter) present(img *image.RGBA, capture bool, fw, fh int) (*image.RGBA, error) {
	fences := []vk.Fence{p.fence}
	if err := check(vk.WaitForFences(p.dev, 1, fences, vk.True, math.MaxUint64), "waiting for the last frame"); err != nil {
		return nil, err
	}
	var idx uint32
	r := vk.AcquireNextImage(p.dev, p.swap, math.MaxUint64, p.acquired, vk.NullFence, &idx)
	if r == vk.ErrorOutOfDate {
		return nil, p.recreate(fw, fh)
	}
	if r != vk.Success && r != vk.Suboptimal {
		return nil, check(r, "acquiring a swapchain image")
	}
	if err := check(vk.ResetFences(p.dev, 1, fences), "resetting the frame fence"); err != nil {
		return nil, err
	}
	toDevice(p.staging.bytes(), img.Pix, p.bgr)

	c := p.cmd
	vk.ResetCommandBuffer(c, 0)
	if err := check(vk.BeginCommandBuffer(c, &vk.CommandBufferBeginInfo{
		SType: vk.StructureTypeCommandBufferBeginInfo,
		Flags: vk.CommandBufferUsageFlags(vk.CommandBufferUsageOneTimeSubmitBit),
	}), "recording a frame"); err != nil {
		return nil, err
	}
	im := p.images[idx]
	// The acquire semaphore is waited for at the transfer stage; the image's
	// old contents are not needed.
	p.barrier(c, im, vk.ImageLayoutUndefined, vk.ImageLayoutTransferDstOptimal, 0, vk.AccessTransferWriteBit,
		vk.PipelineStageTransferBit, vk.PipelineStageTransferBit)
	region := []vk.BufferImageCopy{{
		ImageSubresource: vk.ImageSubresourceLayers{AspectMask: vk.ImageAspectFlags(vk.ImageAspectColorBit), LayerCount: 1},
		ImageExtent:      vk.Extent3D{Width: p.extent.Width, Height: p.extent.Height, Depth: 1},
	}}
	vk.CmdCopyBufferToImage(c, p.staging.buf, im, vk.ImageLayoutTransferDstOptimal, 1, region)
	last := vk.ImageLayoutTransferDstOptimal
	if capture {
		p.barrier(c, im, last, vk.ImageLayoutTransferSrcOptimal, vk.AccessTransferWriteBit, vk.AccessTransferReadBit,
			vk.PipelineStageTransferBit, vk.PipelineStageTransferBit)
		vk.CmdCopyImageToBuffer(c, im, vk.ImageLayoutTransferSrcOptimal, p.readback.buf, 1, region)
		vk.CmdPipelineBarrier(c, vk.PipelineStageFlags(vk.PipelineStageTransferBit), vk.PipelineStageFlags(vk.PipelineStageHostBit), 0,
			0, nil, 1, []vk.BufferMemoryBarrier{{
				SType:               vk.StructureTypeBufferMemoryBarrier,
				SrcAccessMask:       vk.AccessFlags(vk.AccessTransferWriteBit),
				DstAccessMask:       vk.AccessFlags(vk.AccessHostReadBit),
				SrcQueueFamilyIndex: vk.QueueFamilyIgnored,
				DstQueueFamilyIndex: vk.QueueFamilyIgnored,
				Buffer:              p.readback.buf,
				Size:                vk.DeviceSize(vk.WholeSize),
			}}, 0, nil)
		last = vk.ImageLayoutTransferSrcOptimal
	}
	// Presentation needs no access mask: the semaphore makes the writes
	// visible to the presentation engine.
	p.barrier(c, im, last, vk.ImageLayoutPresentSrc, vk.AccessTransferWriteBit|vk.AccessTransferReadBit, 0,
		vk.PipelineStageTransferBit, vk.PipelineStageBottomOfPipeBit)
	if err := check(vk.EndCommandBuffer(c), "recording a frame"); err != nil {
		return nil, err
	}
	r = vk.QueueSubmit(p.queue, 1, []vk.SubmitInfo{{
		SType:                vk.StructureTypeSubmitInfo,
		WaitSemaphoreCount:   1,
		PWaitSemaphores:      []vk.Semaphore{p.acquired},
		PWaitDstStageMask:    []vk.PipelineStageFlags{vk.PipelineStageFlags(vk.PipelineStageTransferBit)},
		CommandBufferCount:   1,
		PCommandBuffers:      []vk.CommandBuffer{c},
		SignalSemaphoreCount: 1,
		PSignalSemaphores:    []vk.Semaphore{p.rendered[idx]},
	}}, p.fence)
	if err := check(r, "submitting a frame"); err != nil {
		return nil, err
	}
	r = vk.QueuePresent(p.queue, &vk.PresentInfo{
		SType:              vk.StructureTypePresentInfo,
		WaitSemaphoreCount: 1,
		PWaitSemaphores:    []vk.Semaphore{p.rendered[idx]},
		SwapchainCount:     1,
		PSwapchains:        []vk.Swapchain{p.swap},
		PImageIndices:      []uint32{idx},
	})
	var shot *image.RGBA
	if capture {
		// The copy back ran in the submission; wait for it, whatever the
		// presentation's result.
		if err := check(vk.WaitForFences(p.dev, 1, fences, vk.True, math.MaxUint64), "waiting for the captured frame"); err != nil {
			return nil, err
		}
		shot = image.NewRGBA(image.Rect(0, 0, int(p.extent.Width), int(p.extent.Height)))
		toDevice(shot.Pix, p.readback.bytes(), p.bgr) // the same swap turns BGRA back into RGBA
	}
	switch r {
	case vk.Success:
		return shot, nil
	case vk.Suboptimal, vk.ErrorOutOfDate:
		if err := p.recreate(fw, fh); err != nil && err != errOutOfDate {
			return nil, err
		}
		return shot, nil
	}
	return nil, check(r, "presenting a frame")
}

func (p *presenter) barrier(c vk.CommandBuffer, im vk.Image, from, to vk.ImageLayout, src, dst vk.AccessFlagBits, srcStage, dstStage vk.PipelineStageFlagBits) {
	vk.CmdPipelineBarrier(c, vk.PipelineStageFlags(srcStage), vk.PipelineStageFlags(dstStage), 0, 0, nil, 0, nil, 1, []vk.ImageMemoryBarrier{{
		SType:               vk.StructureTypeImageMemoryBarrier,
		SrcAccessMask:       vk.AccessFlags(src),
		DstAccessMask:       vk.AccessFlags(dst),
		OldLayout:           from,
		NewLayout:           to,
		SrcQueueFamilyIndex: vk.QueueFamilyIgnored,
		DstQueueFamilyIndex: vk.QueueFamilyIgnored,
		Image:               im,
		SubresourceRange: vk.ImageSubresourceRange{
			AspectMask: vk.ImageAspectFlags(vk.ImageAspectColorBit), LevelCount: 1, LayerCount: 1,
		},
	}})
}

// recreate makes the swapchain anew for the window's current size.
func (p *presenter) recreate(fw, fh int) error {
	if err := check(vk.DeviceWaitIdle(p.dev), "waiting for the device"); err != nil {
		return err
	}
	if err := p.createSwapchain(fw, fh); err != nil {
		return err
	}
	return errOutOfDate
}

// toDevice copies RGBA pixels into dst, swapping red and blue when the
// swapchain is BGRA.
func toDevice(dst, src []byte, bgr bool) {
	if !bgr {
		copy(dst, src)
		return
	}
	n := min(len(dst), len(src)) &^ 3
	for i := 0; i < n; i += 4 {
		dst[i], dst[i+1], dst[i+2], dst[i+3] = src[i+2], src[i+1], src[i], src[i+3]
	}
}

// close destroys everything, in reverse order of creation.
func (p *presenter) close() {
	if p.dev != nil {
		vk.DeviceWaitIdle(p.dev)
		p.freeBuffer(&p.staging)
		p.freeBuffer(&p.readback)
		for _, s := range p.rendered {
			vk.DestroySemaphore(p.dev, s, nil)
		}
		if p.acquired != vk.NullSemaphore {
			vk.DestroySemaphore(p.dev, p.acquired, nil)
		}
		if p.fence != vk.NullFence {
			vk.DestroyFence(p.dev, p.fence, nil)
		}
		if p.pool != vk.NullCommandPool {
			vk.DestroyCommandPool(p.dev, p.pool, nil)
		}
		if p.swap != vk.NullSwapchain {
			vk.DestroySwapchain(p.dev, p.swap, nil)
		}
		vk.DestroyDevice(p.dev, nil)
		p.dev = nil
	}
	if p.inst != nil {
		if p.surf != vk.NullSurface {
			vk.DestroySurface(p.inst, p.surf, nil)
		}
		if p.validate {
			stopMessages(p.inst)
		}
		vk.DestroyInstance(p.inst, nil)
		p.inst = nil
	}
}
