package engine

import (
	"fmt"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk/vktest"
)

// TestGemmaMatchesReference runs small Gemma 2 and Gemma 3 models against
// the float64 forward pass: sandwich norms, GELU, the embedding scale,
// q/k norms (gemma3), soft-caps (gemma2), and windows shorter than the
// 18 positions checked, so that windowed layers see only part of the
// sequence (and a prefill chunk straddles the window's edge).
func TestGemmaMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		arch   string
		window int
		typ    gguf.Type
	}{
		{"gemma3", 0, gguf.F32},
		{"gemma3", 7, gguf.F32},
		{"gemma3", 7, gguf.Q8_0},
		{"gemma2", 5, gguf.F32},
		{"gemma2", 5, gguf.F16},
	} {
		t.Run(fmt.Sprintf("%s/window%d/%v", tc.arch, tc.window, tc.typ), func(t *testing.T) {
			spec := SynthSpec{Arch: tc.arch, Dim: 128, Layers: 6, Heads: 4, KVHeads: 2, HeadDim: 64, FFN: 96,
				Vocab: 300, Ctx: 512, RopeBase: 1e6, Type: tc.typ, Seed: 5, Tied: true, Window: tc.window, RopeScale: 2}
			if tc.typ == gguf.Q8_0 {
				spec.FFN = 128
			}
			path := writeSynth(t, spec)
			m := loadModel(t, path, Options{CtxSize: 300, Chunk: 5, KVType: "f32"})
			c := m.Config
			if c.EmbedScale == 0 || (tc.arch == "gemma2") != (c.AttnSoftCap == 50 && c.FinalSoftCap == 30) || c.SlidingWindow != tc.window {
				t.Fatalf("config %+v", c)
			}
			checkReference(t, m, loadRef(t, path))
		})
	}
}

// TestGemmaBadWindow checks that a window the kernels cannot take is
// refused at load, naming the key.
func TestGemmaBadWindow(t *testing.T) {
	spec := SynthSpec{Arch: "gemma3", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FFN: 96,
		Vocab: 300, Ctx: 64, RopeBase: 1e6, Type: gguf.F32, Tied: true, Window: 8}
	path := rewriteSynth(t, spec, func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
		for i := range kv {
			if kv[i].Key == "gemma3.attention.sliding_window" {
				kv[i].Value = uint32(1 << 31)
			}
		}
		return kv, ts
	})
	m, err := Load(path, Options{dev: vktest.Device(t), CtxSize: 64})
	if err == nil {
		m.Close()
		t.Fatal("loaded")
	}
	if !strings.Contains(err.Error(), "gemma3.attention.sliding_window") {
		t.Errorf("error %q does not name the key", err)
	}
}
