package offload

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// cpuDevInputs holds a problem's inputs in mapped host memory laid out as
// the host KV store lays out a run of heads (slot after slot, stride
// elements apart), which both the device kernels and the CPU read.
type cpuDevInputs struct {
	q, k, v, pos *vk.Buffer
	stride       int // elements from one head's rows to the next's
}

func cpuHostBuffer(t *testing.T, d *vk.Device, size int, label string) *vk.Buffer {
	t.Helper()
	b, err := d.Alloc(vk.Upload, uint64(size), label)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Free)
	return b
}

func (p *cpuProblem) toHost(t *testing.T, d *vk.Device) cpuDevInputs {
	in := cpuDevInputs{stride: (p.rows/64 + 2) * 64 * p.hd}
	el := p.kv.BlockBytes()
	in.q = cpuHostBuffer(t, d, 4*len(p.q), "Q")
	copy(in.q.Bytes(), cpuF32Bytes(p.q))
	in.pos = cpuHostBuffer(t, d, 4*p.nTok, "positions")
	for i, x := range p.pos {
		binary.LittleEndian.PutUint32(in.pos.Bytes()[4*i:], x)
	}
	in.k = cpuHostBuffer(t, d, p.nKV*in.stride*el, "host K")
	in.v = cpuHostBuffer(t, d, p.nKV*in.stride*el, "host V")
	for z := range p.nKV {
		copy(in.k.Bytes()[z*in.stride*el:], p.kRaw[z])
		copy(in.v.Bytes()[z*in.stride*el:], p.vRaw[z])
	}
	return in
}

// hostHeads are the heads' rows [from, to) in the host buffers, as the
// CPU reads them.
func (in cpuDevInputs) hostHeads(p *cpuProblem, from, to int) []CPUHeadKV {
	el, rb := p.kv.BlockBytes(), p.hd*p.kv.BlockBytes()
	var hs []CPUHeadKV
	for z := range p.nKV {
		o := z * in.stride * el
		hs = append(hs, CPUHeadKV{K: in.k.Bytes()[o+from*rb : o+to*rb], V: in.v.Bytes()[o+from*rb : o+to*rb]})
	}
	return hs
}

// devicePartial records the device's partial of every head over rows
// [from, to) as one block, written to part part.
func (in cpuDevInputs) devicePartial(c *vk.Commands, a *kernel.Attention, p *cpuProblem, parts *vk.Buffer, from, to, part int) error {
	el := uint64(p.kv.BlockBytes())
	off := el * uint64(from*p.hd)
	size := el * uint64((p.nKV-1)*in.stride+(to-from)*p.hd)
	return a.RecordPartial(c, in.q.All(), in.k.Range(off, size), in.v.Range(off, size), in.pos.All(), parts.All(),
		kernel.AttnParams{NTokens: p.nTok, QHeads: p.qHeads, KVStart: p.start + from, KVRows: to - from,
			Block: to - from, PartBase: part, SlotStride: in.stride, KVHeads: p.nKV, Scale: p.scale})
}

// The device's attn_merge folds a CPU partial into the attention output
// the float64 reference gives, alone and between device partials of the
// other positions, reading it from host memory the CPU wrote.
func TestCPUAttentionDeviceMerge(t *testing.T) {
	d := vktest.Device(t)
	r := cpuNewRand(t)
	for _, c := range []struct {
		kv        gguf.Type
		hd, group int
	}{{gguf.F16, 128, 4}, {gguf.F32, 64, 8}} {
		t.Run(fmt.Sprintf("%v/hd%d/g%d", c.kv, c.hd, c.group), func(t *testing.T) {
			const rows, a1, a2 = 2777, 640, 2000 // device [0, a1), CPU [a1, a2), device [a2, rows)
			p := newCPUProblem(r, c.kv, c.hd, c.group, 2, 1, rows, 5, 4)
			in := p.toHost(t, d)
			att, err := kernel.NewAttention(d, c.kv, c.hd, c.group)
			if err != nil {
				t.Fatal(err)
			}
			cpu := NewCPUAttention(0)
			defer cpu.Close()
			heads := p.nKV * p.group
			parts := cpuHostBuffer(t, d, kernel.PartsBytes(1, heads, p.hd, 3), "parts")
			partsF, err := FloatsOf(parts.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			q, err := FloatsOf(in.q.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			acc := cpuHostBuffer(t, d, kernel.PartsBytes(1, heads, p.hd, 1), "acc")
			out := cpuHostBuffer(t, d, 4*p.qHeads*p.hd, "out")
			check := func(what string) {
				t.Helper()
				got, err := FloatsOf(out.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for z := range p.nKV {
					for j := range p.group {
						want, mag := p.reference(z, j, 0, 0, rows)
						for i := range p.hd {
							g := float64(got[(z*p.group+j)*p.hd+i])
							e := math.Abs(g-want[i]) / (cpuRtol * mag[i])
							if math.IsNaN(g) || e > 1 {
								t.Fatalf("%s: head %d.%d element %d: got %v, want %v", what, z, j, i, g, want[i])
							}
							worst = max(worst, e)
						}
					}
				}
				t.Logf("%s: worst error %.3g× the tolerance", what, worst)
			}
			merge := func(n int) func(cmd *vk.Commands) error {
				return func(cmd *vk.Commands) error {
					return att.RecordMerge(cmd, parts.All(), acc.All(), out.All(), kernel.MergeParams{NTokens: 1, Heads: heads,
						NParts: n, Init: true, Finalize: true, OutHeads: p.qHeads})
				}
			}

			// The CPU partial of every position, alone.
			cpuPoison(parts, acc, out)
			if err := cpu.Partial(q, p.pos, in.hostHeads(p, 0, rows), partsF, p.params(0, 0, rows, 0)); err != nil {
				t.Fatal(err)
			}
			cpuRun(t, d, merge(1))
			check("CPU partial alone")

			// Positions [a1, a2) on the CPU between device partials of the rest.
			cpuPoison(parts, acc, out)
			if err := cpu.Partial(q, p.pos, in.hostHeads(p, a1, a2), partsF, p.params(0, a1, a2, 1)); err != nil {
				t.Fatal(err)
			}
			cpuRun(t, d, func(cmd *vk.Commands) error {
				if err := in.devicePartial(cmd, att, p, parts, 0, a1, 0); err != nil {
					return err
				}
				if err := in.devicePartial(cmd, att, p, parts, a2, rows, 2); err != nil {
					return err
				}
				cmd.Barrier()
				return merge(3)(cmd)
			})
			check("device, CPU, device partials")
		})
	}
}

// cpuPoison fills host buffers with NaN bits.
func cpuPoison(bufs ...*vk.Buffer) {
	for _, b := range bufs {
		for i := range b.Bytes() {
			b.Bytes()[i] = 0xff
		}
	}
}

// cpuRun records fn and runs it to completion.
func cpuRun(t *testing.T, d *vk.Device, fn func(c *vk.Commands) error) {
	t.Helper()
	c, err := d.NewCommands()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	if err := fn(c); err != nil {
		t.Fatal(err)
	}
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(c); err != nil {
		t.Fatal(err)
	}
}

// Partial reads the host store's slots through StoreHeads, whether the
// streamed heads of a layer share a buffer or have one each.
func TestCPUAttentionOverStore(t *testing.T) {
	d := vktest.Device(t)
	r := cpuNewRand(t)
	const rows = 1200
	p := newCPUProblem(r, gguf.F16, 128, 4, 2, 1, rows, 0, 4)
	g := Geometry{Layers: 2, KVHeads: 4, HeadDim: 128, Ctx: 1500, K: gguf.F16, V: gguf.F16}
	for _, maxBuffer := range []uint64{g.SlotBytes(false), 4 * g.SlotBytes(false)} {
		s, err := NewStore(d, g, []int{1, 2}, maxBuffer) // layer 1 streams heads 2 and 3
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Free)
		heads, err := StoreHeads(nil, s, 1, 2, 2, 0, rows)
		if err != nil {
			t.Fatal(err)
		}
		for z, h := range heads {
			copy(h.K, p.kRaw[z])
			copy(h.V, p.vRaw[z])
		}
		cpu := NewCPUAttention(0)
		parts := poisonedFloats(kernel.PartsBytes(1, 2*p.group, p.hd, 1) / 4)
		// Rows 100.. of the same heads, read again through the store.
		sub, err := StoreHeads(heads[:0:0], s, 1, 2, 2, 100, rows-100)
		if err != nil {
			t.Fatal(err)
		}
		if err := cpu.Partial(p.q, p.pos, sub, parts, p.params(0, 100, rows, 0)); err != nil {
			t.Fatal(err)
		}
		cpu.Close()
		p.checkPartial(t, parts, 0, 0, 2, 100, rows)
		if _, err := StoreHeads(nil, s, 1, 1, 1, 0, rows); err == nil {
			t.Fatalf("a resident head: no error")
		}
		if _, err := StoreHeads(nil, s, 1, 2, 1, 0, g.Ctx+1); err == nil {
			t.Fatalf("rows beyond the slot: no error")
		}
	}
}
