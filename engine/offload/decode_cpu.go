package offload

import (
	"fmt"

	"headinfer/engine/kernel"
	"headinfer/vk"
)

// cpuDecode is what decode attention on the CPU needs besides the host
// store: the step's queries of the streamed heads, copied to host memory
// by the device, and the CPU's partials, which the device's merge reads.
// One of each serves every layer: the host reads the queries of layer l
// before it submits the work that copies those of layer l+1, and writes
// the partials of layer l+1 only after the device has merged those of
// layer l (the same submission, earlier).
type cpuDecode struct {
	attn     *CPUAttention
	q, parts *vk.Buffer
	qf, pf   []float32   // their mapped floats
	heads    []CPUHeadKV // reused per call
	pos      [1]uint32
}

func newCPUDecode(d *vk.Device, lay Layout, a *CPUAttention) (cd *cpuDecode, err error) {
	cd = &cpuDecode{attn: a}
	defer func() {
		if err != nil {
			cd.free()
		}
	}()
	if cd.q, err = d.Alloc(vk.Readback, uint64(4*lay.Heads*lay.HeadDim), "decode queries (host)"); err != nil {
		return nil, err
	}
	if cd.parts, err = d.Alloc(vk.Upload, uint64(kernel.PartsBytes(1, lay.Heads, lay.HeadDim, 1)), "CPU attention partials"); err != nil {
		return nil, err
	}
	if cd.qf, err = FloatsOf(cd.q.Bytes()); err != nil {
		return nil, err
	}
	if cd.pf, err = FloatsOf(cd.parts.Bytes()); err != nil {
		return nil, err
	}
	if cd.qf == nil || cd.pf == nil {
		return nil, fmt.Errorf("offload: the device maps no host memory for CPU decode attention")
	}
	return cd, nil
}

func (cd *cpuDecode) free() {
	cd.q.Free()
	cd.parts.Free()
}

// attendCPU records the attention of layer l in a decode step whose
// streamed heads attend on the CPU. In recording order:
//
//   - the new rows of the streamed heads go to their host slots and their
//     queries to host memory; the segment ends and signals (Program.Host);
//   - the host then reads those slots up to the step's length and writes
//     the heads' partials, while the device computes the resident heads'
//     attention;
//   - in the next submission the device's merge folds the CPU partials
//     into the output, as it folds device partials.
//
// Nothing of the streamed heads is copied to the device.
func (kc *Cache) attendCPU(p *Program, l int, st Step) error {
	lay := kc.lay
	group, first := lay.Group(), kc.res[l].heads
	n := lay.KVHeads - first
	c, err := p.Compute()
	if err != nil {
		return err
	}
	p.D2H += uint64(n) * lay.RowBytesKV()
	if err := kc.storeHost(c, l, st.K, st.V, st.Pos, 1); err != nil {
		return err
	}
	qBytes := uint64(4 * n * group * lay.HeadDim)
	c.Copy(kc.cpu.q.Range(0, qBytes), vk.Range{Buf: st.Q.Buf, Off: st.Q.Off + uint64(4*first*group*lay.HeadDim), Size: qBytes})
	if err := p.Host(func(length int) error { return kc.cpuPartials(l, length) }); err != nil {
		return err
	}
	if err := kc.attendResident(p, l, st); err != nil {
		return err
	}
	if err := p.Join(); err != nil {
		return err
	}
	if c, err = p.Compute(); err != nil {
		return err
	}
	err = kc.ops.Attn.RecordMerge(c, kc.cpu.parts.All(), kc.scratch.Acc.All(), st.Att, kernel.MergeParams{
		NTokens: 1, Heads: n * group, NParts: 1, Init: true, Finalize: true,
		OutHeads: lay.Heads, OutHead0: first * group,
	})
	if err != nil {
		return err
	}
	c.Barrier()
	return nil
}

// cpuPartials computes, on the host, the partials of layer l's streamed
// heads for a decode step over length positions, whose query is at
// position length−1: one part per head, over every row up to it that the
// layer's window reaches (only those rows are read).
func (kc *Cache) cpuPartials(l, length int) error {
	lay := kc.lay
	at := lay.attnOf(l)
	first := kc.res[l].heads
	n := lay.KVHeads - first
	row := kernel.WindowStart(length-1, at.Window)
	heads, err := StoreHeads(kc.cpu.heads[:0], kc.host, l, first, n, row, length-row)
	kc.cpu.heads = heads
	if err != nil {
		return err
	}
	kc.cpu.pos[0] = uint32(length - 1)
	return kc.cpu.attn.Partial(kc.cpu.qf, kc.cpu.pos[:], heads, kc.cpu.pf, CPUAttnParams{
		K: lay.K, V: lay.V, HeadDim: lay.HeadDim, Group: lay.Group(), NTokens: 1, QHeads: n * lay.Group(),
		KVStart: row, KVRows: length - row, Scale: at.Scale, Window: at.Window, SoftCap: at.SoftCap,
	})
}
