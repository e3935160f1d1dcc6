package kernel

import (
	"fmt"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/shaders"
	"headinfer/vk"
)

// MatVec computes y = W x, or y += W x, for a weight matrix of one GGUF
// type: the projections of a decode step. W is rows × cols in GGUF layout
// (each row's cols elements contiguous, rows back to back); x and y are f32.
type MatVec struct {
	d     *vk.Device
	t     gguf.Type
	name  string
	spirv []byte
	wg    int                      // threads per workgroup
	rows  int                      // rows per workgroup
	batch int                      // vectors per workgroup in RecordBatch and RecordGLU
	kerns map[[5]uint32]*vk.Kernel // by load width, GLU, vectors per workgroup, layout and units
	limit uint64                   // when nonzero, a binding size below the device's, so tests can force splitting
	// cpu marks a CPU device, whose quantized matrices are packed (see
	// pack.go) where the type and row length allow.
	cpu bool
	// fine selects, for quantized types in the GGUF layout, the shader's
	// fine units (GPUs; see FINE in matvec.glsl) over its whole ones (CPU
	// devices, whose kernel for that layout is the fallback of packing).
	fine bool
	// pk is the packed layout of the type on this device (nil: GGUF's).
	pk *packing
	// cpuSPIRV, on CPU devices, is the kernel that reads the weights as
	// texels (matvec_<type>_cpu): packed quantized rows, or F16 and BF16
	// rows eight at a time; cpuxSPIRV reads x as texels too.
	cpuSPIRV, cpuxSPIRV []byte
}

// NewMatVec prepares the matrix-vector kernel for weights of type t.
func NewMatVec(d *vk.Device, t gguf.Type) (*MatVec, error) {
	name, err := kernelName("matvec", t)
	if err != nil {
		return nil, err
	}
	if err := mvCheckDevice(d, name); err != nil {
		return nil, err
	}
	code, err := shaders.SPIRV(name)
	if err != nil {
		return nil, err
	}
	k := &MatVec{d: d, t: t, name: name, spirv: code, kerns: map[[5]uint32]*vk.Kernel{}}
	k.wg, k.rows, k.batch = mvDefaultGeometry(d.Info(), t)
	k.cpu = d.Info().Type == vk.CPU
	k.fine = !k.cpu
	k.pk = packingFor(d.Info(), t)
	if k.cpu && (k.pk != nil || t == gguf.F16 || t == gguf.BF16) {
		if k.cpuSPIRV, err = shaders.SPIRV(name + "_cpu"); err != nil {
			return nil, err
		}
	}
	if k.cpuSPIRV != nil {
		if k.cpuxSPIRV, err = shaders.SPIRV(name + "_cpux"); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// runAsGPU makes k read the GGUF layout with wg threads, rows rows and
// batch vectors per workgroup, in fine units unless whole, as on a GPU,
// whatever the device: how the tests, the self-check and bench kernels
// --geometry run the GPU kernels on a CPU device or in other shapes.
func (k *MatVec) runAsGPU(wg, rows, batch int, whole bool) {
	k.wg, k.rows, k.batch, k.cpu, k.pk, k.fine = wg, rows, batch, false, nil, !whole
}

// packs reports whether Record reads rows of cols weights in the packed
// layout: CPU devices, quantized types, rows of whole lane units.
func (k *MatVec) packs(cols int) bool { return k.cpu && k.pk != nil && k.pk.fits(cols) }

// WeightBytes returns the bytes a rows × cols matrix takes in the layout
// Record reads: GGUF's, or packed (Pack) on CPU devices.
func (k *MatVec) WeightBytes(rows, cols int) uint64 {
	if k.packs(cols) {
		return k.pk.bytes(rows, cols)
	}
	return uint64(rows) * uint64(k.t.RowBytes(cols))
}

// Layout returns rows × cols weights (GGUF layout in raw) in the layout
// Record reads: raw itself, or its packed form on CPU devices.
func (k *MatVec) Layout(raw []byte, rows, cols int) ([]byte, error) {
	if !k.packs(cols) {
		return raw, nil
	}
	return k.pk.pack(raw, rows, cols)
}

// mvDefaultGeometry picks threads, rows and (batched) vectors per
// workgroup. A GPU wants many workgroups of a few rows to cover its memory
// latency; in a batched step each workgroup loads a unit of its rows once
// for all its vectors (matvec.glsl), so up to mvGPUBatch sequences read
// the weights once, the traffic that bounds a decode step. A CPU device
// runs a workgroup on one core, one subgroup-wide vector at a time: there
// one subgroup per workgroup and many rows sharing each load of x do best
// (measured on lavapipe); and several vectors per workgroup share its
// setup and weight loads. For quantized types the rows
// are also the packed layout's group (pack.go).
func mvDefaultGeometry(info vk.DeviceInfo, t gguf.Type) (wg, rows, batch int) {
	if info.Type != vk.CPU {
		return 128, 2, mvGPUBatch
	}
	wg = max(int(info.SubgroupSize), 8)
	if t.BlockSize() > 1 {
		return wg, cpuPackRows, 4
	}
	return wg, 16, 8
}

// mvGPUBatch is the vectors per workgroup on GPUs: a decode step of up to
// 8 sequences reads each weight once, and the partial sums (8 vectors × 4
// rows with GLU) stay in registers beside the weights of a unit.
const mvGPUBatch = 8

// cpuPackRows is the rows of a workgroup, and of a packed group, for
// quantized types on CPU devices.
const cpuPackRows = 32

// Record records y = W x (accumulate false) or y += W x (accumulate true).
// w holds rows × cols weights (at least rows × t.RowBytes(cols) bytes), x
// cols floats and y rows floats. Matrices bigger than the device's largest
// storage-buffer binding are split into several dispatches by rows.
func (k *MatVec) Record(c *vk.Commands, w vk.Range, rows, cols int, x, y vk.Range, accumulate bool) error {
	return k.RecordBatch(c, w, rows, cols, 1, x, y, accumulate)
}

// RecordBatch records Record's product for n vectors at once, each x and y
// vector contiguous and following the previous one, in as few dispatches
// as the bindings allow. A workgroup applies each unit of weights it loads
// to up to its batch of vectors (8 on GPUs), so a decode step of several
// sequences reads W once per batch rather than once per vector.
func (k *MatVec) RecordBatch(c *vk.Commands, w vk.Range, rows, cols, n int, x, y vk.Range, accumulate bool) error {
	if err := mvCheckArgs(k.name, k.t, w, rows, cols, n, x, y, k.WeightBytes(rows, cols)); err != nil {
		return err
	}
	return k.record(c, w, rows, cols, n, x, y, accumulate, false)
}

// RecordGLU records y = silu(G x) ⊙ (U x) for n vectors (as RecordBatch),
// where w holds the rows × cols matrices G and U back to back: a
// feed-forward's gate and up projections and its activation in one pass.
// It fails when G and one chunk of U do not fit one binding (see CanGLU).
func (k *MatVec) RecordGLU(c *vk.Commands, w vk.Range, rows, cols, n int, x, y vk.Range) error {
	if err := mvCheckArgs(k.name, k.t, w, rows, cols, n, x, y, k.WeightBytes(rows, cols)); err != nil {
		return err
	}
	if need := 2 * k.WeightBytes(rows, cols); w.Size < need {
		return fmt.Errorf("%s: weight range holds %d bytes; gate and up of %d×%d need %d", k.name, w.Size, rows, cols, need)
	}
	if !k.CanGLU(rows, cols) {
		return fmt.Errorf("%s: gate and up of %d×%d do not fit one storage-buffer binding", k.name, rows, cols)
	}
	return k.record(c, w, rows, cols, n, x, y, false, true)
}

// CanGLU reports whether RecordGLU can take matrices of rows × cols: one
// binding must reach from a chunk of G's rows to the same rows of U.
func (k *MatVec) CanGLU(rows, cols int) bool {
	lim, err := mvLimits(k.d.Info(), k.limit, k.name)
	if err != nil {
		return false
	}
	return k.WeightBytes(rows, cols)+k.WeightBytes(k.rows, cols) <= lim.span
}

func (k *MatVec) record(c *vk.Commands, w vk.Range, rows, cols, n int, x, y vk.Range, accumulate, glu bool) error {
	info := k.d.Info()
	packed := k.packs(cols)
	rb, xb, yb := uint64(k.t.RowBytes(cols)), 4*uint64(cols), 4*uint64(rows)
	lim, err := mvLimits(info, k.limit, k.name)
	if err != nil {
		return err
	}
	unit := 1 // rows per chunk must be a multiple of this
	if packed {
		rb, unit = k.pk.rowBytes(cols), k.rows
	}
	if uint64(unit)*rb > lim.span || xb > lim.span {
		return fmt.Errorf("%s: a %d-element row does not fit one storage-buffer binding (%d bytes on %s)",
			k.name, cols, lim.span+lim.align, info.Name)
	}
	per := lim.chunkRows(rb, 4)
	var upDelta uint64 // GLU: bytes from a gate row to its up row
	if glu {
		upDelta = k.WeightBytes(rows, cols)
		per = min(per, int((lim.span-upDelta)/rb))
	}
	if packed {
		per = max(per-per%unit, unit) // whole groups; unit·rb fits, checked above
	}
	// Vectors per workgroup: a workgroup computes all of its batch (those
	// past n repeat the last), so a few vectors (a decode step of a few
	// sequences) take a smaller power of two.
	batch := 1
	for batch < min(n, k.batch) {
		batch *= 2
	}
	batch = min(batch, k.batch)
	// A chunk of vectors binds their x and the y rows of all of W's rows,
	// so that y stays one strided array across chunks of W.
	nPer := min(int(lim.span/xb), int(lim.span/yb), int(info.MaxWorkgroupCount[2])*batch)
	if n > 1 && nPer == 0 {
		return fmt.Errorf("%s: %d outputs per vector do not fit one storage-buffer binding (%d bytes on %s)",
			k.name, rows, lim.span+lim.align, info.Name)
	}
	nPer = max(nPer, 1)
	acc := uint32(0)
	if accumulate {
		acc = 1
	}
	var yend uint64 // end of the previous dispatch's output binding
	for n0 := 0; n0 < n; n0 += nPer {
		nc := min(nPer, n-n0)
		xr, xoff := mvBind(info, x, uint64(n0)*xb, uint64(nc)*xb)
		for m0 := 0; m0 < rows; m0 += per {
			mc := min(per, rows-m0)
			wr, woff := mvBind(info, w, uint64(m0)*rb, upDelta+k.WeightBytes(mc, cols))
			yr, yoff := mvBind(info, y, uint64(n0)*yb+4*uint64(m0), uint64(nc-1)*yb+4*uint64(mc))
			if yr.Off < yend && (m0 > 0 || n0 > 0) {
				// Dispatches write disjoint elements, but their output
				// bindings overlap (unaligned chunks, or vectors
				// interleaved with other chunks' rows): order them.
				c.Barrier()
			}
			yend = yr.Off + yr.Size
			if packed && (woff%16 != 0 || wr.Size%16 != 0) {
				return fmt.Errorf("%s: packed weights at byte %d of their binding: they must start on a 16-byte texel", k.name, woff)
			}
			wide := k.wide(cols, woff, xoff)
			// F16 and BF16 rows read eight at a time are whole texels too;
			// x is where it starts on 16 bytes.
			var texels uint32
			if packed || k.cpu && k.cpuSPIRV != nil && wide == 2 && wr.Size%16 == 0 {
				texels = 1
				if xoff%16 == 0 && xr.Size%16 == 0 {
					texels = 3
				}
			}
			kern, err := k.kernel(wide, glu, batch, texels, k.units(packed, woff))
			if err != nil {
				return err
			}
			grid, err := mvGrid(info, groups(mc, k.rows), k.name)
			if err != nil {
				return err
			}
			grid[2] = uint32((nc + batch - 1) / batch)
			c.Dispatch(kern, grid, push(uint32(mc), uint32(cols), uint32(woff/2), uint32(xoff/4), uint32(yoff/4), acc,
				uint32(cols), uint32(rows), uint32(upDelta/2), uint32(nc)),
				wr, xr, yr)
		}
	}
	return nil
}

// wide picks the load width (the shader's WIDE constant) that the row
// length and the byte offsets of the first row and of x within their
// bindings allow.
func (k *MatVec) wide(cols int, woff, xoff uint64) uint32 {
	switch k.t {
	case gguf.F32:
		if cols%4 == 0 && woff%16 == 0 && xoff%16 == 0 {
			return 1
		}
	case gguf.F16, gguf.BF16:
		if cols%8 == 0 && woff%16 == 0 && xoff%16 == 0 {
			return 2
		}
		if cols%2 == 0 && woff%4 == 0 {
			return 1
		}
	default:
		if xoff%16 == 0 {
			return 1
		}
	}
	return 0
}

// units picks the shader's FINE constant for weights at byte woff of their
// binding: 0 whole units (F32, F16, BF16; packed rows; quantized rows on
// CPU devices), 1 fine units read in 16-bit words, 2 fine units read 8 and
// 16 bytes at a time, which Q4_K and Q5_K blocks (144 and 176 bytes) allow
// where the first row starts on 16 bytes.
func (k *MatVec) units(packed bool, woff uint64) uint32 {
	if !k.fine || packed || k.t.BlockSize() == 1 {
		return 0
	}
	if (k.t == gguf.Q4_K || k.t == gguf.Q5_K) && woff%16 == 0 {
		return 2
	}
	return 1
}

// kernel returns the pipeline for a load width, GLU or not, vectors per
// workgroup, which bindings are texels: none, the weights (1: the _cpu
// kernel) or the weights and x (3: _cpux), and the units (see units).
func (k *MatVec) kernel(wide uint32, glu bool, batch int, texels, fine uint32) (*vk.Kernel, error) {
	key := [5]uint32{wide, 0, uint32(batch), texels, fine}
	if glu {
		key[1] = 1
	}
	spec := vk.KernelSpec{Name: k.name, SPIRV: k.spirv, Buffers: 3, PushBytes: 40, Texels: texels}
	switch texels {
	case 1:
		spec.Name, spec.SPIRV = k.name+"_cpu", k.cpuSPIRV
	case 3:
		spec.Name, spec.SPIRV = k.name+"_cpux", k.cpuxSPIRV
	}
	if kern, ok := k.kerns[key]; ok {
		return kern, nil
	}
	spec.Spec = []uint32{uint32(k.wg), uint32(k.rows), key[0], key[1], key[2], key[4]}
	kern, err := k.d.Kernel(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.name, err)
	}
	k.kerns[key] = kern
	return kern, nil
}

// kernelName returns the shader OP_TYPE (matvec_q4_k, embed_f16, ...) for
// a weight type the engine loads; each has one for every such type.
func kernelName(op string, t gguf.Type) (string, error) {
	if !t.Supported() {
		return "", fmt.Errorf("%s: no kernel for weights of type %v (supported: %s)", op, t, gguf.SupportedNames())
	}
	return op + "_" + strings.ToLower(t.String()), nil
}

// mvCheckDevice reports device features the matrix kernels cannot do without.
func mvCheckDevice(d *vk.Device, name string) error {
	info := d.Info()
	if !info.Storage16 {
		return fmt.Errorf("%s: device %s lacks 16-bit storage buffer access, needed to read f16 and quantized weights",
			name, info.Name)
	}
	if !info.SubgroupArithmetic {
		return fmt.Errorf("%s: device %s lacks subgroup arithmetic in compute shaders", name, info.Name)
	}
	return nil
}

// mvCheckArgs validates the shape of W (rows × cols of type t, wbytes in
// the layout the kernel reads), X (n × cols f32) and Y (n × rows f32)
// against the ranges that hold them.
func mvCheckArgs(name string, t gguf.Type, w vk.Range, rows, cols, n int, x, y vk.Range, wbytes uint64) error {
	if rows <= 0 || cols <= 0 || n <= 0 {
		return fmt.Errorf("%s: %d rows, %d columns, %d vectors: every dimension must be positive", name, rows, cols, n)
	}
	if bs := t.BlockSize(); cols%bs != 0 {
		return fmt.Errorf("%s: %d columns is not a multiple of the %v block size %d", name, cols, t, bs)
	}
	if rows > 1<<31 || cols > 1<<31 || n > 1<<31 {
		return fmt.Errorf("%s: %d rows, %d columns, %d vectors: too large", name, rows, cols, n)
	}
	check := func(what string, r vk.Range, need uint64, align uint64) error {
		if r.Buf == nil {
			return fmt.Errorf("%s: %s range has no buffer", name, what)
		}
		if r.Size < need {
			return fmt.Errorf("%s: %s range holds %d bytes; %d rows, %d columns, %d vectors need %d",
				name, what, r.Size, rows, cols, n, need)
		}
		if r.Off%align != 0 {
			return fmt.Errorf("%s: %s range offset %d is not a multiple of %d bytes", name, what, r.Off, align)
		}
		return nil
	}
	walign := uint64(2)
	if t == gguf.F32 {
		walign = 4
	}
	if err := check("weight", w, wbytes, walign); err != nil {
		return err
	}
	if err := check("input", x, 4*uint64(n)*uint64(cols), 4); err != nil {
		return err
	}
	return check("output", y, 4*uint64(n)*uint64(rows), 4)
}

// mvLimit describes how much one binding may span on a device.
type mvLimit struct {
	span  uint64 // bytes a binding may cover after aligning its start down
	align uint64 // binding offset alignment
}

// mvLimits returns the device's binding limits, or smaller ones when limit
// is nonzero and below the device's.
func mvLimits(info vk.DeviceInfo, limit uint64, name string) (mvLimit, error) {
	align := max(info.MinStorageBufferOffsetAlignment, 1)
	size := info.MaxStorageBufferRange
	if limit != 0 && limit < size {
		size = limit
	}
	if size <= align {
		return mvLimit{}, fmt.Errorf("%s: device %s reports a storage-buffer range of %d bytes",
			name, info.Name, size)
	}
	return mvLimit{span: size - align, align: align}, nil
}

// chunkRows returns how many rows of rowBytes (and of outBytes of output)
// one dispatch may bind. When it can, it keeps both a multiple of the
// binding alignment, so that every chunk starts at the same offset within
// its bindings as the first (and so takes the same load width) and no two
// chunks' output bindings overlap.
func (l mvLimit) chunkRows(rowBytes, outBytes uint64) int {
	per := min(l.span/rowBytes, l.span/outBytes, 1<<30)
	a := l.align / mvGCD(rowBytes, l.align)
	b := l.align / mvGCD(outBytes, l.align)
	step := a / mvGCD(a, b) * b
	if per >= step {
		per -= per % step
	}
	return int(per)
}

func mvGCD(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// mvBind returns a binding covering bytes [off, off+size) of r that starts
// at an offset the device accepts, and where the data begins within it.
func mvBind(info vk.DeviceInfo, r vk.Range, off, size uint64) (vk.Range, uint64) {
	align := max(info.MinStorageBufferOffsetAlignment, 1)
	abs := r.Off + off
	start := abs - abs%align
	return r.Buf.Range(start, abs+size-start), abs - start
}

// mvGrid lays out n workgroups along x, continuing along y when x is
// full; the shader recovers the linear index from gl_WorkGroupID and
// gl_NumWorkGroups.
func mvGrid(info vk.DeviceInfo, n uint32, name string) ([3]uint32, error) {
	maxc := info.MaxWorkgroupCount
	gx, gy := n, uint32(1)
	if n > maxc[0] {
		gx = maxc[0]
		gy = (n + gx - 1) / gx
	}
	if gy > maxc[1] {
		return [3]uint32{}, fmt.Errorf("%s: %d workgroups exceed the device's limit %v", name, n, maxc)
	}
	return [3]uint32{gx, gy, 1}, nil
}
