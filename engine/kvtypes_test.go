package engine

import (
	"strings"
	"testing"

	"headinfer/engine/gguf"
)

// TestKVTypesOf checks the KV type options: names, keys and values apart,
// and the errors for unknown names, heads that blocks do not tile and f32
// mixed with another type.
func TestKVTypesOf(t *testing.T) {
	for _, tc := range []struct {
		opt     Options
		headDim int
		want    kvTypes
		err     string
	}{
		{Options{}, 8, kvTypes{gguf.F16, gguf.F16}, ""},
		{Options{KVType: "F32"}, 8, kvTypes{gguf.F32, gguf.F32}, ""},
		{Options{KVType: "q8_0"}, 64, kvTypes{gguf.Q8_0, gguf.Q8_0}, ""},
		{Options{KVType: "q8_0", KVTypeV: "q4_0"}, 128, kvTypes{gguf.Q8_0, gguf.Q4_0}, ""},
		{Options{KVTypeK: "f16", KVTypeV: "q8_0"}, 32, kvTypes{gguf.F16, gguf.Q8_0}, ""},
		{Options{KVType: "q5_1"}, 64, kvTypes{}, `KV cache type "q5_1" is not supported (use one of f16, f32, q8_0, q4_0)`},
		{Options{KVTypeV: "bf16"}, 64, kvTypes{}, `values: KV cache type "bf16"`},
		{Options{KVType: "q4_0"}, 8, kvTypes{}, "KV cache keys: a Q4_0 KV cache needs a head size that is a multiple of 32; this model's is 8"},
		{Options{KVTypeV: "q8_0"}, 48, kvTypes{}, "KV cache values: a Q8_0 KV cache needs a head size that is a multiple of 32; this model's is 48"},
		{Options{KVType: "f32", KVTypeV: "q8_0"}, 64, kvTypes{}, "f32 goes with f32 only"},
	} {
		got, err := kvTypesOf(tc.opt, tc.headDim)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%+v, head %d: %v, %v; want %v", tc.opt, tc.headDim, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v, head %d: error %v, want one saying %q", tc.opt, tc.headDim, err, tc.err)
		}
	}
	if s := (kvTypes{gguf.Q8_0, gguf.Q4_0}).String(); s != "q8_0/q4_0" {
		t.Errorf("String: %q", s)
	}
	// Bytes per position of a 128-wide head, K and V: 512 in f16, 272 in
	// Q8_0 (0.53×), 144 in Q4_0 (0.28×).
	for _, c := range []struct {
		t    kvTypes
		want uint64
	}{{kvTypes{gguf.F16, gguf.F16}, 512}, {kvTypes{gguf.Q8_0, gguf.Q8_0}, 272}, {kvTypes{gguf.Q4_0, gguf.Q4_0}, 144}, {kvTypes{gguf.Q8_0, gguf.Q4_0}, 208}} {
		if got := c.t.rowBytes(128); got != c.want {
			t.Errorf("%v: %d bytes per position, want %d", c.t, got, c.want)
		}
	}
}

// TestPlanHostMem checks --host-mem: a plan whose streamed heads need
// more host memory fails, naming both and the longest context each KV
// type fits; a plan that fits says the same, and f16's is the context
// when the bound is exactly the host KV.
func TestPlanHostMem(t *testing.T) {
	path := writeSynth(t, SynthSpec{Arch: "llama", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 128, Vocab: 300,
		Ctx: 4096, RopeBase: 10000, Type: gguf.F16, Seed: 3})
	opt := Options{CtxSize: 2048, Offload: OffloadHead, DecodeAttn: DecodeAttnGPU}
	p, err := PlanModel(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	opt.HostMem = p.HostKV
	fits, err := PlanModel(path, opt)
	if err != nil {
		t.Fatalf("a bound of exactly the host KV: %v", err)
	}
	want := map[string]int{"f16": 2048, "q8_0": 2048 * 256 / 136, "q4_0": 2048 * 256 / 72} // bytes per row of 64 values: 128+128, 68+68, 36+36
	if len(fits.HostContexts) != 3 {
		t.Fatalf("host contexts %+v", fits.HostContexts)
	}
	for _, h := range fits.HostContexts {
		if h.Positions != want[h.KVType] {
			t.Errorf("the longest %s context in %d bytes: %d, want %d", h.KVType, opt.HostMem, h.Positions, want[h.KVType])
		}
	}
	opt.HostMem = p.HostKV - 1
	if _, err := PlanModel(path, opt); err == nil || !strings.Contains(err.Error(), "--host-mem allows") ||
		!strings.Contains(err.Error(), "f16 2047") || !strings.Contains(err.Error(), "q4_0 ") {
		t.Errorf("a bound one byte short: %v", err)
	}
}
