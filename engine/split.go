package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"headinfer/bytesize"
	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/offload"
	"headinfer/engine/tokenizer"
	"headinfer/vk"
)

// A model split over several devices (Options.Devices) runs as one part
// per device: a Model of its own that holds the weights of its run of
// layers and plans its own KV cache (resident heads, streamed heads,
// streaming buffers, host store), and a state per sequence on it. A step
// runs the parts in turn; between two, the residual stream of the step's
// rows crosses once through host memory (each part's hand-off buffers),
// since devices share no memory. Each part computes its layers exactly as
// one device computes them, so the split changes no bit of the logits.

// part is the layers one device runs, [lo, hi) of total, and the tensors
// outside the blocks that they need: the first part embeds the tokens,
// the last one computes the logits.
type part struct {
	lo, hi, total int
	// tied says that the output projection is the token embeddings (the
	// file has no output tensor): the last part holds them too.
	tied bool
}

// wholeOf is every layer of a model, on one device.
func wholeOf(c Config) part { return part{0, c.Layers, c.Layers, false} }

func (p part) layers() int { return p.hi - p.lo }
func (p part) first() bool { return p.lo == 0 }
func (p part) last() bool  { return p.hi == p.total }

// keeps says whether the device that runs p holds the named tensor.
func (p part) keeps(name string) bool {
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		n, _, _ := strings.Cut(rest, ".")
		l, err := strconv.Atoi(n)
		return err != nil || l >= p.lo && l < p.hi
	}
	switch {
	case p.first() && p.last():
		return true
	case strings.HasPrefix(name, "output"):
		return p.last()
	case strings.HasPrefix(name, "token_embd."):
		return p.first() || p.last() && p.tied
	}
	return p.first()
}

// String names the part's layers.
func (p part) String() string {
	if p.layers() == 1 {
		return fmt.Sprintf("layer %d", p.lo)
	}
	return fmt.Sprintf("layers %d-%d", p.lo, p.hi-1)
}

// splitLayers divides total layers into runs in proportion to shares, one
// per device, each at least one layer. what names the shares in errors
// ("" for --split).
func splitLayers(total int, shares []float64, what string) ([]part, error) {
	sum := 0.0
	for i, s := range shares {
		if !(s > 0) || math.IsInf(s, 0) {
			return nil, fmt.Errorf("--split: the share of device %d is %v: each device takes a positive share of the layers", i, s)
		}
		sum += s
	}
	parts := make([]part, len(shares))
	at, cum := 0, 0.0
	for i, s := range shares {
		cum += s
		hi := int(math.Round(float64(total) * cum / sum))
		if i == len(shares)-1 {
			hi = total
		}
		if hi <= at {
			if what != "" {
				return nil, fmt.Errorf("%s leave device %d with none of the model's %d layers: pass --split, or list fewer devices", what, i, total)
			}
			return nil, fmt.Errorf("--split %s leaves device %d with none of the model's %d layers: give it a larger share, or list fewer devices",
				formatShares(shares), i, total)
		}
		parts[i] = part{lo: at, hi: hi, total: total}
		at = hi
	}
	return parts, nil
}

func formatShares(shares []float64) string {
	s := make([]string, len(shares))
	for i, v := range shares {
		s[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strings.Join(s, ",")
}

// splitting says whether opt splits the model over several devices.
func (opt Options) splitting() bool { return len(opt.Devices) > 1 }

// checkDevices checks the per-device options against the device list.
func (opt Options) checkDevices() error {
	n := len(opt.Devices)
	switch {
	case n < 2 && (opt.Split != nil || opt.GPUMems != nil):
		return errors.New("--split and per-device --gpu-mem need two or more --devices")
	case opt.Split != nil && len(opt.Split) != n:
		return fmt.Errorf("--split has %d shares for %d devices", len(opt.Split), n)
	case opt.GPUMems != nil && len(opt.GPUMems) != n:
		return fmt.Errorf("--gpu-mem has %d sizes for %d devices: give one size, or one per device", len(opt.GPUMems), n)
	}
	return nil
}

// gpuMem is device i's budget option (0: what it has).
func (opt Options) gpuMem(i int) uint64 {
	if opt.GPUMems != nil {
		return opt.GPUMems[i]
	}
	return opt.GPUMem
}

// planSplit divides the layers over the devices described by infos and
// plans each part on its device. The parts share the prefill chunk, the
// smallest of those they would choose alone. rates measures device i's
// rates (nil: not measured).
func planSplit(f *gguf.File, c Config, opt Options, kvType kvTypes, infos []vk.DeviceInfo, rates func(i int) func() (Rates, error)) ([]part, []Plan, error) {
	shares, what := opt.Split, ""
	if shares == nil {
		var budgets []string
		for i, info := range infos {
			b, _ := deviceBudget(info, opt.gpuMem(i))
			shares = append(shares, float64(b))
			budgets = append(budgets, bytesize.Format(b))
		}
		what = fmt.Sprintf("shares in proportion to the devices' budgets (%s)", strings.Join(budgets, ", "))
	}
	parts, err := splitLayers(c.Layers, shares, what)
	if err != nil {
		return nil, nil, err
	}
	_, hasOutput := f.Tensor("output.weight")
	plan := func(opt Options) ([]Plan, error) {
		plans := make([]Plan, len(parts))
		for i := range parts {
			parts[i].tied = !hasOutput
			var r func() (Rates, error)
			if rates != nil {
				r = rates(i)
			}
			p, err := newPlan(f, c, parts[i], opt, kvType, infos[i], opt.gpuMem(i), r)
			if err != nil {
				return nil, fmt.Errorf("device %d (%s, %v): %w", i, infos[i].Name, parts[i], err)
			}
			plans[i] = p
		}
		return plans, nil
	}
	plans, err := plan(opt)
	if err != nil || opt.Chunk > 0 {
		return parts, plans, err
	}
	least := 0
	for i, p := range plans {
		if p.Chunk < plans[least].Chunk {
			least = i
		}
	}
	fixed := opt
	fixed.Chunk = plans[least].Chunk
	why := fmt.Sprintf("the smallest of the devices' choices, device %d's: %s", least, plans[least].ChunkWhy)
	if plans, err = plan(fixed); err != nil {
		return parts, nil, err
	}
	for i := range plans {
		plans[i].ChunkAuto, plans[i].ChunkWhy = true, why
	}
	return parts, plans, nil
}

// DevicePlan is one device's share of a split model's plan.
type DevicePlan struct {
	Device     string `json:"device"`
	FirstLayer int    `json:"first_layer"`
	Layers     int    `json:"layers"`
	// HandOff is the bytes per token that cross to the next device
	// through host memory (0 for the last).
	HandOff uint64 `json:"hand_off_bytes_per_token"`
	Plan    Plan   `json:"plan"`
}

// mergePlans is the plan of a split model: the parts' bytes and slots
// summed, their per-layer fields joined in layer order, and each part's
// own plan in Devices.
func mergePlans(c Config, parts []part, plans []Plan, names []string) Plan {
	m := plans[0]
	m.Devices = nil
	m.Budget, m.Weights, m.Activations, m.Streaming, m.ResidentKV = 0, 0, 0, 0, 0
	m.Slots, m.Resident, m.Streamed, m.HostKV, m.RingKV = 0, 0, 0, 0, 0
	m.ResidentHeads, m.Windows, m.Rings, m.HostContexts = nil, nil, nil, nil
	m.BudgetFrom = "the devices' budgets summed"
	// Decode attention is placed per device: the model's is the streaming
	// devices' placement, or "mixed" where they differ.
	attn := map[string]bool{}
	for _, p := range plans {
		if p.Streamed > 0 {
			if len(attn) == 0 {
				m.DecodeAttn, m.DecodeAttnWhy = p.DecodeAttn, p.DecodeAttnWhy
			}
			attn[p.DecodeAttn] = true
		}
	}
	if len(attn) > 1 {
		m.DecodeAttn, m.DecodeAttnWhy = "mixed", "the devices place it apart: see each device's plan"
	}
	rings := false
	for i, p := range plans {
		m.Budget += p.Budget
		m.Weights += p.Weights
		m.Activations += p.Activations
		m.Streaming += p.Streaming
		m.ResidentKV += p.ResidentKV
		m.RingKV += p.RingKV
		m.Slots += p.Slots
		m.Resident += p.Resident
		m.Streamed += p.Streamed
		m.HostKV += p.HostKV
		m.ResidentHeads = append(m.ResidentHeads, p.ResidentHeads...)
		rings = rings || p.Rings != nil
		if m.RingsWhy == "" {
			m.RingsWhy = p.RingsWhy
		}
		handOff := uint64(0)
		if !parts[i].last() {
			handOff = uint64(4 * c.Dim)
		}
		m.Devices = append(m.Devices, DevicePlan{Device: names[i], FirstLayer: parts[i].lo, Layers: parts[i].layers(), HandOff: handOff, Plan: p})
	}
	if plans[0].Windows != nil {
		for _, p := range plans {
			m.Windows = append(m.Windows, p.Windows...)
		}
	}
	if rings {
		for i, p := range plans {
			r := p.Rings
			if r == nil {
				r = make([]int, parts[i].layers())
			}
			m.Rings = append(m.Rings, r...)
		}
	}
	if m.Streamed > 0 {
		// Host contexts are per KV type: the longest context every
		// part's host store fits is the shortest of theirs.
		for _, p := range plans {
			for _, h := range p.HostContexts {
				j := slices.IndexFunc(m.HostContexts, func(g HostContext) bool { return g.KVType == h.KVType })
				if j < 0 {
					m.HostContexts = append(m.HostContexts, h)
				} else if m.HostBudget > 0 {
					m.HostContexts[j].Positions = min(m.HostContexts[j].Positions, h.Positions)
				} else {
					// Positions per GiB: the parts' stores add up.
					m.HostContexts[j].Positions = int(1 / (1/float64(m.HostContexts[j].Positions) + 1/float64(h.Positions)))
				}
			}
		}
	}
	return m
}

// writeDevices writes a split plan's devices, one section each.
func (p Plan) writeDevices(b *strings.Builder) {
	for i, d := range p.Devices {
		q := d.Plan
		fmt.Fprintf(b, "device %d: %s, %s\n", i, d.Device, part{lo: d.FirstLayer, hi: d.FirstLayer + d.Layers}.String())
		fmt.Fprintf(b, "  budget %s (%s), weights %s, activations %s, device KV %s (streaming buffers %s, resident %s)\n",
			bytesize.Format(q.Budget), q.BudgetFrom, bytesize.Format(q.Weights), bytesize.Format(q.Activations),
			bytesize.Format(q.DeviceKVBytes()), bytesize.Format(q.Streaming), bytesize.Format(q.ResidentKV))
		fmt.Fprintf(b, "  KV heads: %d resident, %d streamed; host KV store %s", q.Resident, q.Streamed, bytesize.Format(q.HostKV))
		if q.Streamed > 0 {
			fmt.Fprintf(b, "; decode attention of streamed heads: %s", q.DecodeAttn)
		}
		b.WriteString("\n")
		perToken := uint64(0)
		if q.Streamed > 0 && q.Sequences > 0 {
			perToken = q.HostKV / uint64(q.Sequences) // a decode step at full context reads each streamed row once
		}
		fmt.Fprintf(b, "  per decode token at full context: %s of streamed KV", bytesize.Format(perToken))
		if d.HandOff > 0 {
			fmt.Fprintf(b, ", %s of hidden state to device %d", bytesize.Format(d.HandOff), i+1)
		}
		b.WriteString("\n")
	}
}

// loadSplit loads the model of file f over the devices opt.Devices names,
// one part each (see part).
func loadSplit(path string, f *gguf.File, c Config, tok tokenizer.Tokenizer, kvType kvTypes, opt Options) (m *Model, err error) {
	m = &Model{Config: c, Tokenizer: tok, file: f, opt: opt, kvType: kvType, part: wholeOf(c), arch: architectures[c.Arch]}
	m.fim = sync.OnceValue(m.findFIM)
	whole := m // m is nil by the time an error return runs the defer
	defer func() {
		if err != nil {
			whole.file = nil // the caller closes it
			whole.Close()
		}
	}()
	infos := make([]vk.DeviceInfo, len(opt.Devices))
	names := make([]string, len(opt.Devices))
	for i, sel := range opt.Devices {
		p := &Model{Config: c, Tokenizer: tok, opt: opt, kvType: kvType, arch: m.arch}
		if i < len(opt.devs) {
			p.dev = opt.devs[i]
		} else if p.dev, err = vk.Open(vk.Options{Select: sel, Validation: opt.Validation, Log: opt.Log, InlineCPU: inlineCPU(f, c)}); err != nil {
			return nil, fmt.Errorf("device %d of --devices %s: %w", i, strings.Join(opt.Devices, ","), err)
		} else {
			p.ownDev = true
		}
		m.parts = append(m.parts, p)
		infos[i] = p.dev.Info()
		names[i] = infos[i].Name
	}
	rates := func(i int) func() (Rates, error) {
		return func() (Rates, error) { return measureRates(m.parts[i].dev, c, kvType.K) }
	}
	parts, plans, err := planSplit(f, c, opt, kvType, infos, rates)
	if err != nil {
		return nil, err
	}
	m.plan = mergePlans(c, parts, plans, names)
	if m.freqs, err = ropeFreqs(f, c, opt.CtxSize); err != nil {
		return nil, err
	}
	if c.LocalRopeBase > 0 {
		m.localFreqs = kernel.RopeFreqs(c.RopeDim, c.LocalRopeBase, nil)
	}
	var done uint64
	total := int64(0)
	for _, pt := range parts {
		total += int64(weightBytes(f, pt))
	}
	for i, p := range m.parts {
		p.part, p.plan, p.freqs, p.localFreqs = parts[i], plans[i], m.freqs, m.localFreqs
		p.loaded = &loader{f: f, d: p.dev, keeps: p.part.keeps}
		if report := opt.Progress; report != nil {
			base := done
			p.loaded.progress = func(n uint64) { report(Progress{Work: ProgressLoad, Done: int64(base + n), Total: total}) }
		}
		if p.w, err = m.arch.load(p.loaded, c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		p.weights = p.loaded.bytes
		done += p.weights
		m.weights += p.weights
		if p.ops, err = newOps(p.dev, c, p.w, kvType); err != nil {
			return nil, fmt.Errorf("device %d: %w", i, err)
		}
	}
	m.dev = m.parts[0].dev
	return m, nil
}

// splitKV is a split model's KV cache as a session sees it: each layer's
// in the cache of the part that runs it. The parts' own passes store and
// attend; this view reads and writes positions (snapshots, prefix reuse,
// context shift) and sums the sizes.
type splitKV struct{ parts []*state }

// of is the cache that holds layer l, and l's index in it.
func (k splitKV) of(l int) (kvCache, int) {
	for _, s := range k.parts {
		if l >= s.m.part.lo && l < s.m.part.hi {
			return s.kv, l - s.m.part.lo
		}
	}
	return nil, -1
}

func (k splitKV) Store(*vk.Commands, int, vk.Range, vk.Range, vk.Range, int) error {
	return errors.New("engine: a split model's passes store KV in their own parts")
}

func (k splitKV) Attend(*offload.Program, int, offload.Step) error {
	return errors.New("engine: a split model's passes attend in their own parts")
}

func (k splitKV) Write(l, h int, isV bool, row int, data []byte) error {
	kc, i := k.of(l)
	if kc == nil {
		return fmt.Errorf("engine: no layer %d", l)
	}
	return kc.Write(i, h, isV, row, data)
}

func (k splitKV) Read(l, h int, isV bool, row int, out []byte) error {
	kc, i := k.of(l)
	if kc == nil {
		return fmt.Errorf("engine: no layer %d", l)
	}
	return kc.Read(i, h, isV, row, out)
}

func (k splitKV) Streams() bool {
	for _, s := range k.parts {
		if s.kv.Streams() {
			return true
		}
	}
	return false
}

func (k splitKV) DeviceBytes() (n uint64) {
	for _, s := range k.parts {
		n += s.kv.DeviceBytes()
	}
	return n
}

func (k splitKV) HostBytes() (n uint64) {
	for _, s := range k.parts {
		n += s.kv.HostBytes()
	}
	return n
}

func (k splitKV) Buffers() (bs []*vk.Buffer) {
	for _, s := range k.parts {
		bs = append(bs, s.kv.Buffers()...)
	}
	return bs
}

// Free frees nothing: the parts' states own their caches.
func (k splitKV) Free() {}

// newSplitState is a split model's sequence: a state on each part.
func newSplitState(m *Model) (*state, error) {
	s := &state{id: stateIDs.Add(1), m: m, chunk: m.plan.Chunk, ctx: m.opt.CtxSize}
	for _, p := range m.parts {
		ps, err := newState(p)
		if err != nil {
			s.free()
			return nil, err
		}
		s.split = append(s.split, ps)
	}
	last := s.split[len(s.split)-1]
	s.next, s.logitsHost = last.next, last.logitsHost
	s.kv = splitKV{s.split}
	s.deviceTime = make([]time.Duration, len(s.split))
	return s, nil
}

// runParts is run for a split model: each part's step in turn, the
// residual stream carried from one part's out to the next one's in.
func (s *state) runParts(ids []int32, start int, withLogits, decode, hidden bool) error {
	rows := uint64(4 * len(ids) * s.m.Config.Dim)
	for i, p := range s.split {
		last := i == len(s.split)-1
		p.deadline = s.deadline
		before := p.stepTotals
		t0 := time.Now()
		err := p.run(ids, start, withLogits && last, decode, hidden && last)
		s.deviceTime[i] += time.Since(t0)
		s.stepTotals.add(before, p.stepTotals)
		if err != nil {
			return err
		}
		if !last {
			copy(s.split[i+1].in.Bytes()[:rows], p.out.Bytes()[:rows])
			s.handOffs += rows
		}
	}
	return nil
}

// hidden is the buffer that holds the last step's final hidden states
// (a step run with hidden).
func (s *state) hidden() *vk.Buffer {
	if s.split != nil {
		return s.split[len(s.split)-1].hiddenHost
	}
	return s.hiddenHost
}

// activations are the buffers the state's passes work in.
func (s *state) activations() activations {
	return activations{ids: s.ids, x: s.x, xb: s.xb, att: s.att, gate: s.gate, up: s.up, in: s.in, out: s.out}
}

// newSplitBatchStep is a split model's batched decode step: one on each
// part.
func newSplitBatchStep(m *Model, rows int) (*batchStep, error) {
	b := &batchStep{m: m, rows: rows}
	for _, p := range m.parts {
		pb, err := newBatchStep(p, rows)
		if err != nil {
			b.free()
			return nil, err
		}
		b.parts = append(b.parts, pb)
	}
	return b, nil
}

// runParts is run for a split model: each part's batched step over the
// sequences' states on that part, in turn, the rows' residual stream
// carried between them.
func (b *batchStep) runParts(seqs []*state, ids []int32, starts []int, withLogits bool, deadline time.Time) (offload.RunStats, error) {
	var total offload.RunStats
	rows := uint64(4 * len(seqs) * b.m.Config.Dim)
	for i, pb := range b.parts {
		last := i == len(b.parts)-1
		on := make([]*state, len(seqs))
		before := make([]stepTotals, len(seqs))
		for j, s := range seqs {
			if s.split == nil || len(s.split) != len(b.parts) {
				return total, errors.New("engine: a batched step of a split model over a sequence of another model")
			}
			on[j], before[j] = s.split[i], s.split[i].stepTotals
		}
		t0 := time.Now()
		st, err := pb.run(on, ids, starts, withLogits && last, deadline)
		took := time.Since(t0)
		total.Submissions += st.Submissions
		total.Dispatches += st.Dispatches
		total.Barriers += st.Barriers
		total.Commands += st.Commands
		total.H2D += st.H2D
		total.CopyWait += st.CopyWait
		total.HostWaits += st.HostWaits
		total.HostTasks += st.HostTasks
		for j, s := range seqs {
			s.stepTotals.add(before[j], on[j].stepTotals)
			s.deviceTime[i] += took
		}
		if err != nil {
			return total, err
		}
		if !last {
			copy(b.parts[i+1].in.Bytes()[:rows], pb.out.Bytes()[:rows])
			for _, s := range seqs {
				s.handOffs += rows / uint64(len(seqs))
			}
		}
	}
	return total, nil
}
