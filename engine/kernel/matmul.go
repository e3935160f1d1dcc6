package kernel

import (
	"fmt"

	"headinfer/engine/gguf"
	"headinfer/shaders"
	"headinfer/vk"
)

// The output tile of one matmul workgroup (matmul.glsl's BM and BN).
const mmTileM, mmTileN = 64, 64

// MatMul computes Y = X Wᵀ, or Y += X Wᵀ, for a weight matrix of one GGUF
// type: the projections of a prefill chunk. W is rows × cols in GGUF
// layout; X holds n vectors of cols floats and Y n vectors of rows floats,
// each vector contiguous.
type MatMul struct {
	d     *vk.Device
	t     gguf.Type
	name  string
	kern  *vk.Kernel
	limit uint64 // when nonzero, a binding size below the device's, so tests can force splitting
	// batched, on CPU devices, does the product as n matrix-vector
	// products in one dispatch: there every shared-memory access is a loop
	// over a subgroup's lanes, and the tiled kernel, which lives on shared
	// memory, runs several times slower (see BENCHMARKS.md).
	batched *MatVec
}

// NewMatMul prepares the matrix-matrix kernel for weights of type t.
func NewMatMul(d *vk.Device, t gguf.Type) (*MatMul, error) {
	name, err := kernelName("matmul", t)
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
	kern, err := d.Kernel(vk.KernelSpec{Name: name, SPIRV: code, Buffers: 3, PushBytes: 32})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	k := &MatMul{d: d, t: t, name: name, kern: kern}
	if d.Info().Type == vk.CPU {
		if k.batched, err = NewMatVec(d, t); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Batched reports whether the product runs as batched matrix-vector
// products (CPU devices), which MatVec.RecordGLU can then fuse.
func (k *MatMul) Batched() bool { return k.batched != nil }

// Record records Y = X Wᵀ (accumulate false) or Y += X Wᵀ (accumulate
// true) for n tokens: Y[j][m] = Σ_k W[m][k] X[j][k]. w holds rows × cols
// weights, x at least n × cols floats and y n × rows floats. Operands
// bigger than the device's largest storage-buffer binding are split into
// several dispatches, by rows of W and by tokens.
func (k *MatMul) Record(c *vk.Commands, w vk.Range, rows, cols, n int, x, y vk.Range, accumulate bool) error {
	if k.batched != nil {
		return k.batched.RecordBatch(c, w, rows, cols, n, x, y, accumulate)
	}
	if err := mvCheckArgs(k.name, k.t, w, rows, cols, n, x, y, uint64(rows)*uint64(k.t.RowBytes(cols))); err != nil {
		return err
	}
	info := k.d.Info()
	lim, err := mvLimits(info, k.limit, k.name)
	if err != nil {
		return err
	}
	rb := uint64(k.t.RowBytes(cols))
	xb, yb := 4*uint64(cols), 4*uint64(rows)
	if rb > lim.span || xb > lim.span || yb > lim.span {
		return fmt.Errorf("%s: a %d×%d matrix has rows too long for one storage-buffer binding (%d bytes on %s)",
			k.name, rows, cols, lim.span+lim.align, info.Name)
	}
	// Each chunk of W binds its own rows; each chunk of tokens binds its X
	// rows and the Y rows of all of W's rows, which is what lets Y stay
	// one strided array across W chunks.
	mPer := min(lim.chunkRows(rb, 4), int(info.MaxWorkgroupCount[0])*mmTileM)
	nPer := min(int(lim.span/xb), int(lim.span/yb), int(info.MaxWorkgroupCount[1])*mmTileN)
	acc := uint32(0)
	if accumulate {
		acc = 1
	}
	first := true
	for n0 := 0; n0 < n; n0 += nPer {
		nc := min(nPer, n-n0)
		xr, xoff := mvBind(info, x, uint64(n0)*xb, uint64(nc)*xb)
		for m0 := 0; m0 < rows; m0 += mPer {
			mc := min(mPer, rows-m0)
			wr, woff := mvBind(info, w, uint64(m0)*rb, uint64(mc)*rb)
			ystart := (uint64(n0)*uint64(rows) + uint64(m0)) * 4
			yr, yoff := mvBind(info, y, ystart, (uint64(nc-1)*uint64(rows)+uint64(mc))*4)
			if !first {
				// Chunks write disjoint elements, but their Y bindings
				// interleave; the barrier keeps the ordering explicit.
				c.Barrier()
			}
			first = false
			c.Dispatch(k.kern, [3]uint32{groups(mc, mmTileM), groups(nc, mmTileN), 1},
				push(uint32(mc), uint32(cols), uint32(nc), uint32(woff/2), uint32(xoff/4), uint32(yoff/4),
					uint32(rows), acc),
				wr, xr, yr)
		}
	}
	return nil
}
