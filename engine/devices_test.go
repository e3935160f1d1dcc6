package engine

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// splitOptions splits a model over two logical devices opened on the
// test device (as --devices 0,0 does), layers in the proportions shares.
// Three shares put the third part on the first device again.
func splitOptions(t *testing.T, opt Options, shares ...float64) Options {
	devs := []*vk.Device{vktest.Device(t), vktest.Second(t)}
	opt.Devices, opt.Split, opt.devs = nil, shares, nil
	for i := range shares {
		opt.Devices = append(opt.Devices, "0")
		opt.devs = append(opt.devs, devs[i%2])
	}
	return opt
}

// loadSplit loads path split as splitOptions says.
func loadSplitModel(t *testing.T, path string, opt Options, shares ...float64) *Model {
	t.Helper()
	m, err := Load(path, splitOptions(t, opt, shares...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// splitRun prefills prompt and greedily generates n tokens on m, keeping
// the logits before each one, with the KV memory poisoned first.
func splitRun(t *testing.T, m *Model, prompt []int32, n int) offloadRun {
	t.Helper()
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	poisonSession(t, se)
	return sessionRun(t, m, se, prompt, n)
}

// TestSplitBitIdentical splits a 4-layer model over two devices at every
// layer boundary, and over three: the logits before every generated
// token are the bits one device computes, with the KV cache resident and
// streamed (device attention, and CPU decode attention), solo and in
// batches, where prefix reuse, snapshots and context shifts cross the
// devices' caches too.
func TestSplitBitIdentical(t *testing.T) {
	const ctx, chunk = 512, 48
	spec := SynthSpec{Arch: "llama", Dim: 128, Layers: 4, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300, Ctx: ctx,
		RopeBase: 10000, Type: gguf.Q8_0, Seed: 7}
	path := writeSynth(t, spec)
	prompt := offloadPrompt(300, spec.Vocab)
	for _, mode := range []struct {
		name string
		opt  Options
	}{
		{"none", Options{CtxSize: ctx, Chunk: chunk, Offload: OffloadNone}},
		{"head", Options{CtxSize: ctx, Chunk: chunk, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}},
		{"head-cpu", Options{CtxSize: ctx, Chunk: chunk, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnCPU}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			one := splitRun(t, loadModel(t, path, mode.opt), prompt, 12)
			for _, shares := range [][]float64{{1, 3}, {2, 2}, {3, 1}, {1, 1, 2}} {
				m := loadSplitModel(t, path, mode.opt, shares...)
				p := m.Plan()
				if len(p.Devices) != len(shares) || p.Devices[0].Layers != int(shares[0]) {
					t.Fatalf("split %v: plan's devices %+v", shares, p.Devices)
				}
				if mode.opt.Offload == OffloadHead && p.Streamed != one.plan.Streamed {
					t.Fatalf("split %v: %d streamed slots, one device streams %d", shares, p.Streamed, one.plan.Streamed)
				}
				got := splitRun(t, m, prompt, 12)
				if d := firstDiff(one.logits, got.logits); d != "" || !slices.Equal(one.ids, got.ids) {
					t.Fatalf("split %v: logits differ from one device's: %s (ids %v, want %v)", shares, d, got.ids, one.ids)
				}
				if st := got.stats; len(st.DeviceTime) != len(shares) || st.HandOffBytes == 0 {
					t.Errorf("split %v: stats report device times %v, %d hand-off bytes", shares, st.DeviceTime, st.HandOffBytes)
				}
			}
		})
	}

	t.Run("batch", func(t *testing.T) {
		for _, opt := range []Options{
			{CtxSize: ctx, Chunk: chunk, Parallel: 3},
			{CtxSize: ctx, Chunk: chunk, Parallel: 3, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnCPU},
		} {
			solo := batchCases(spec.Vocab)
			soloRuns(t, loadModel(t, path, opt), solo)
			for _, shares := range [][]float64{{1, 3}, {3, 1}} {
				m := loadSplitModel(t, path, opt, shares...)
				b, err := m.NewBatch(3)
				if err != nil {
					t.Fatal(err)
				}
				cases := batchCases(spec.Vocab)
				batchRuns(t, b, cases, true)
				b.Close()
				for i, c := range cases {
					if d := firstDiff(solo[i].logits, c.logits); d != "" || !slices.Equal(solo[i].ids, c.ids) {
						t.Fatalf("offload %q, split %v: case %d in a batch differs from one device alone: %s", opt.Offload, shares, i, d)
					}
				}
			}
		}
	})

	t.Run("snapshot-shift", func(t *testing.T) {
		// A snapshot taken on one device restores onto a split model
		// (and back), and a context shift moves KV in both parts.
		opt := Options{CtxSize: 128, Chunk: 32, Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}
		one := loadModel(t, path, opt)
		two := loadSplitModel(t, path, opt, 2, 2)
		short := prompt[:40]
		export := func(m *Model) [][]byte {
			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer se.Close()
			if err := se.Prefill(context.Background(), short, false); err != nil {
				t.Fatal(err)
			}
			var slots [][]byte
			if err := se.ExportKV(len(short), func(s []byte) error { slots = append(slots, slices.Clone(s)); return nil }); err != nil {
				t.Fatal(err)
			}
			return slots
		}
		a, b := export(one), export(two)
		if len(a) != len(b) || len(a) == 0 {
			t.Fatalf("%d slots exported from one device, %d from two", len(a), len(b))
		}
		for i := range a {
			if !slices.Equal(a[i], b[i]) {
				t.Fatalf("exported slot %d differs between one device and two", i)
			}
		}
		shifted := func(m *Model) [][]float32 {
			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer se.Close()
			var logits [][]float32
			_, err = se.Generate(context.Background(), short, GenerateParams{MaxTokens: 150, Shift: true, Keep: 4,
				Logits: func(_ int, l []float32) { logits = append(logits, slices.Clone(l)) }}, func(int32) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			if se.Stats().Shifts == 0 {
				t.Fatal("no context shift in 190 positions of a 128-position context")
			}
			return logits
		}
		if d := firstDiff(shifted(one), shifted(two)); d != "" {
			t.Fatalf("through context shifts, a split model's logits differ from one device's: %s", d)
		}
	})
}

// TestSplitBadInput checks the refusals of a split that cannot run.
func TestSplitBadInput(t *testing.T) {
	spec := SynthSpec{Arch: "llama", Dim: 128, Layers: 4, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300, Ctx: 256,
		RopeBase: 10000, Type: gguf.F16, Seed: 7}
	path := writeSynth(t, spec)
	base := Options{CtxSize: 256, Validation: vktest.Validation()}
	for _, tc := range []struct {
		name string
		opt  func() Options
		want []string
	}{
		{"no such device", func() Options { o := base; o.Devices = []string{"0", "17"}; return o }, []string{"no device with index 17", "devices:"}},
		{"zero share", func() Options { o := splitOptions(t, base, 1, 0); return o }, []string{"device 1", "positive share"}},
		{"device left without layers", func() Options {
			o := splitOptions(t, base, 1, 1, 1, 1)
			o.Split = []float64{1, 1, 1, 1, 1}
			o.Devices = append(o.Devices, "0")
			o.devs = nil
			return o
		}, []string{"leaves device", "4 layers"}},
		{"shares for other devices", func() Options { o := splitOptions(t, base, 1, 1); o.Split = []float64{1, 2, 3}; return o }, []string{"3 shares for 2 devices"}},
		{"budgets for other devices", func() Options { o := splitOptions(t, base, 1, 1); o.GPUMems = []uint64{1 << 30}; return o }, []string{"1 sizes for 2 devices"}},
		{"split on one device", func() Options { o := base; o.Split = []float64{1}; return o }, []string{"two or more --devices"}},
		{"budget too small", func() Options { o := splitOptions(t, base, 1, 1); o.GPUMems = []uint64{64 << 20, 100 << 10}; return o }, []string{"device 1", "layers 2-3", "device memory", "budget is"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			m, err := Load(path, tc.opt())
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// The plan says the same without loading, and shows each device.
	p, err := PlanModel(path, Options{CtxSize: 256, Devices: []string{"0", "0"}, Split: []float64{1, 3}})
	if err != nil {
		t.Fatal(err)
	}
	s := p.String()
	for _, w := range []string{"device 0:", "layer 0\n", "device 1:", "layers 1-3", "to device 1"} {
		if !strings.Contains(s, w) {
			t.Errorf("plan does not say %q:\n%s", w, s)
		}
	}
	if p.Devices[0].Plan.Weights+p.Devices[1].Plan.Weights != p.Weights || p.Devices[1].Plan.Slots != 3*spec.KVHeads {
		t.Errorf("plan's devices do not add up: %+v", p)
	}
	if _, err := PlanModel(path, Options{CtxSize: 256, Devices: []string{"0", "nosuchgpu"}}); err == nil || !strings.Contains(err.Error(), "nosuchgpu") {
		t.Errorf("plan on an unknown device: %v", err)
	}
}

// TestSplitDeviceFailure fails the second device of a split in the
// middle of generation: the request fails as a device failure, the model
// says so, and closing it gives back the first device's memory.
func TestSplitDeviceFailure(t *testing.T) {
	first, err := vk.Open(vk.Options{Validation: vktest.Validation()})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := vk.Open(vk.Options{FaultSubmit: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	before := first.Memory().Live[vk.DeviceLocal]
	opt := Options{Devices: []string{"0", "0"}, Split: []float64{2, 3}, devs: []*vk.Device{first, second}}
	m, err := Load(filepath.Join(modelsDir(t), "stories260K.gguf"), opt)
	if err != nil {
		t.Fatal(err)
	}
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	emitted := 0
	_, err = se.Generate(context.Background(), m.Tokenizer.Encode("Once upon a time", true), GenerateParams{MaxTokens: 20}, func(int32) bool {
		emitted++
		return true
	})
	if !errors.Is(err, ErrDeviceFailed) || emitted != 3 {
		t.Fatalf("generation whose second device fails at its fourth step: %v after %d tokens, want a device failure after 3", err, emitted)
	}
	if m.Failed() == nil || se.Failed() == nil {
		t.Fatalf("after the failure: model %v, session %v; want both failed", m.Failed(), se.Failed())
	}
	if first.Memory().Live[vk.DeviceLocal] == before {
		t.Fatal("the first device holds nothing while the model is loaded")
	}
	se.Close()
	m.Close()
	if live := first.Memory().Live[vk.DeviceLocal]; live != before {
		t.Errorf("after Close the first device holds %d bytes, %d before Load", live, before)
	}
	if msgs := first.ValidationMessages(); len(msgs) > 0 {
		t.Errorf("validation: %v", msgs)
	}
}
