package engine

import (
	"math"
	"slices"
	"strings"
	"testing"

	"headinfer/engine/gguf"
)

// ringSpec is a small Gemma 3 whose layers 0–4 have a window of 16 and
// layer 5 none; at ringCtx with chunks of ringChunk the windowed layers'
// slots are rings of offload.RingRows(16, 64) = 512 positions, which the
// test prompts wrap.
var ringSpec = SynthSpec{Arch: "gemma3", Dim: 64, Layers: 6, Heads: 4, KVHeads: 2, HeadDim: 32, FFN: 96,
	Vocab: 300, Ctx: 2048, RopeBase: 1e6, Type: gguf.F32, Seed: 9, Tied: true, Window: 16}

const ringCtx, ringChunk, ringRows = 1024, 64, 512

// TestRingsMatchFullSlots checks the sliding-window rings end to end: a
// prompt that wraps them and greedy decode steps give the logits of
// --swa-full (every position kept) bit for bit, with the global layer's
// KV resident or streamed (device decode attention), and within rounding
// with CPU decode attention; the plan and the memory report the rings.
func TestRingsMatchFullSlots(t *testing.T) {
	path := writeSynth(t, ringSpec)
	prompt := offloadPrompt(700, ringSpec.Vocab)
	const gen = 24
	opt := Options{CtxSize: ringCtx, Chunk: ringChunk, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}

	opt.Offload = OffloadNone
	rings := generateAll(t, path, opt, prompt, gen)
	p := rings.plan
	if want := []int{ringRows, ringRows, ringRows, ringRows, ringRows, 0}; !slices.Equal(p.Rings, want) {
		t.Fatalf("rings %v, want %v", p.Rings, want)
	}
	if !slices.Equal(p.Windows, []int{16, 16, 16, 16, 16, 0}) || p.RingKV != 5*2*2*ringRows*32*2 {
		t.Fatalf("windows %v, ring bytes %d", p.Windows, p.RingKV)
	}
	report := p.String()
	for _, s := range []string{"layers 0-4", "ring of 512 positions, resident", "layer 5", "1024 positions, resident"} {
		if !strings.Contains(report, s) {
			t.Errorf("the plan report lacks %q:\n%s", s, report)
		}
	}

	opt.SWAFull = true
	full := generateAll(t, path, opt, prompt, gen)
	if full.plan.Rings != nil || full.plan.ResidentKV-rings.plan.ResidentKV != 5*2*2*(ringCtx-ringRows)*32*2 {
		t.Fatalf("--swa-full: rings %v, resident KV %d against %d with rings", full.plan.Rings, full.plan.ResidentKV, rings.plan.ResidentKV)
	}
	if d := firstDiff(full.logits, rings.logits); d != "" {
		t.Fatalf("rings and --swa-full differ: %s", d)
	}

	opt.SWAFull, opt.Offload = false, OffloadHead
	head := generateAll(t, path, opt, prompt, gen)
	if head.plan.Streamed != 2 || head.plan.HostKV != 2*2*ringCtx*32*2 || head.mem.HostKVBytes != head.plan.HostKV {
		t.Fatalf("--offload head: %d slots streamed, host KV %d planned, %d allocated", head.plan.Streamed, head.plan.HostKV, head.mem.HostKVBytes)
	}
	if d := firstDiff(rings.logits, head.logits); d != "" {
		t.Fatalf("rings with the global layer streamed differ: %s", d)
	}

	opt.DecodeAttn = DecodeAttnCPU
	cpu := generateAll(t, path, opt, prompt, gen)
	if cpu.stats.HostWaits == 0 {
		t.Fatal("no decode step attended on the CPU")
	}
	for i := range rings.logits {
		worst, scale := 0.0, 0.0
		for j, x := range rings.logits[i] {
			worst = max(worst, math.Abs(float64(x-cpu.logits[i][j])))
			scale = max(scale, math.Abs(float64(x)))
		}
		if worst > 1e-4*scale {
			t.Fatalf("token %d: CPU decode attention is %g off (largest logit %g)", i, worst, scale)
		}
	}
}

// TestRingsKeepAndRestore checks what rings allow after a sequence ran
// past them: reusing a prefix near its end gives a fresh session's logits
// bit for bit, one too far back is dropped whole (and then recomputed
// exactly), and a snapshot (holding the windowed layers' last window
// only) restores into a session that continues bit for bit, but not into
// one that keeps every position.
func TestRingsKeepAndRestore(t *testing.T) {
	path := writeSynth(t, ringSpec)
	m := loadModel(t, path, Options{CtxSize: ringCtx, Chunk: ringChunk})
	a := offloadPrompt(700, ringSpec.Vocab)
	b := offloadPrompt(760, ringSpec.Vocab)[700:]
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	const n = 8
	logitsOf(t, se, a, n) // holds 700 + 8 − 1 positions, 707 written
	if !se.CanKeep(690) || se.CanKeep(100) || !se.CanKeep(0) {
		t.Fatalf("CanKeep after 707 positions: 690 %v, 100 %v", se.CanKeep(690), se.CanKeep(100))
	}
	if err := se.ExportKV(100, func([]byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "--swa-full") {
		t.Fatalf("an export of positions the rings lost: %v", err)
	}
	fresh := func(prompt []int32) [][]float32 {
		f, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return logitsOf(t, f, prompt, n)
	}
	for _, tc := range []struct {
		prompt []int32
		kept   int
	}{
		{append(slices.Clone(a[:690]), b...), 690}, // the rings still hold the window before 690
		{append(slices.Clone(a[:100]), b...), 0},   // they do not before 100: prefilled whole
	} {
		if got := se.ReusePrefix(tc.prompt); got != tc.kept || len(se.Tokens()) != tc.kept {
			t.Fatalf("reuse of a %d-token prefix kept %d (session holds %d), want %d", PrefixLen(se.Tokens(), tc.prompt), got, len(se.Tokens()), tc.kept)
		}
		if d := firstDiff(fresh(tc.prompt), logitsOf(t, se, tc.prompt[tc.kept:], n)); d != "" {
			t.Fatalf("after keeping %d positions: %s", tc.kept, d)
		}
	}

	// A snapshot of the whole sequence, restored, continues as the
	// sequence does.
	var slots [][]byte
	held := slices.Clone(se.Tokens())
	if err := se.ExportKV(len(held), func(s []byte) error { slots = append(slots, slices.Clone(s)); return nil }); err != nil {
		t.Fatal(err)
	}
	g := se.KVLayout()
	if len(slots) != g.Slots() || len(slots[0]) != g.SlotBytes(16, false) || len(slots[len(slots)-1]) != g.SlotBytes(len(held), true) {
		t.Fatalf("%d slots of %d and %d bytes: want %d, a window's %d and every position's %d",
			len(slots), len(slots[0]), len(slots[len(slots)-1]), g.Slots(), g.SlotBytes(16, false), g.SlotBytes(len(held), true))
	}
	re, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	i := 0
	if err := re.ImportKV(held, func(s []byte) error { copy(s, slots[i]); i++; return nil }); err != nil {
		t.Fatal(err)
	}
	next := b[:5]
	if d := firstDiff(logitsOf(t, se, next, n), logitsOf(t, re, next, n)); d != "" {
		t.Fatalf("the restored session differs: %s", d)
	}

	// A session that keeps every position cannot take the rings' slots.
	other := loadModel(t, path, Options{CtxSize: ringCtx, Chunk: ringChunk, SWAFull: true})
	fs, err := other.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if fs.KVLayout().Same(g) {
		t.Fatal("the layouts with and without rings are the same")
	}
}
