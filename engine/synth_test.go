package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"headinfer/engine/gguf"
	"headinfer/vk"
	"headinfer/vk/vktest"
)

// writeSynth writes a small synthetic model into the test's temp dir.
func writeSynth(t testing.TB, s SynthSpec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Synth(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSyntheticModelsMatchReference runs every weight type and both
// architectures against the float64 forward pass, over a prompt that spans
// several prefill chunks and then decodes, with the fused projections
// (Q, K and V as one; gate, up and SwiGLU as one; one RoPE pass) and
// without.
func TestSyntheticModelsMatchReference(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2"} {
		for i, typ := range []struct{ typ, mix gguf.Type }{
			{gguf.F32, 0}, {gguf.F16, 0}, {gguf.BF16, 0}, {gguf.Q8_0, 0}, {gguf.Q4_0, 0},
			{gguf.Q4_K, 0}, {gguf.Q5_K, 0}, {gguf.Q6_K, 0}, {gguf.Q4_K, gguf.Q6_K}, {gguf.Q5_K, gguf.Q6_K},
			{gguf.Q4_0, 0}, // tied output: CPU devices read a packed copy of the embeddings
		} {
			separate := i%2 == 1
			tied := i == 10
			name := typ.typ.String()
			if typ.mix != 0 {
				name += "_M"
			}
			if tied {
				name += "_tied"
			}
			t.Run(fmt.Sprintf("%s/%s/separate=%v", arch, name, separate), func(t *testing.T) {
				spec := SynthSpec{Arch: arch, Dim: 128, Layers: 2, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 300,
					Ctx: 512, RopeBase: 10000, Type: typ.typ, Mix: typ.mix, Seed: 7, Tied: tied}
				if typ.typ.BlockSize() > 1 {
					// Whole super-blocks, and rows that CPU devices read
					// packed (whole 256-weight units).
					spec.Dim, spec.FFN = 256, 512
				}
				path := writeSynth(t, spec)
				ref := loadRef(t, path)
				m := loadModel(t, path, Options{CtxSize: 300, Chunk: 5, KVType: "f32", separate: separate})
				w := m.w.(*llamaWeights)
				if cpu := m.dev.Info().Type == vk.CPU; typ.typ.BlockSize() > 1 && w.Blocks[0].Attn.Q.Packed != cpu ||
					tied && cpu && (!w.Output.Packed || w.Output == w.Embed) {
					t.Fatalf("on a %v device: Q packed %v, output packed %v", m.dev.Info().Type, w.Blocks[0].Attn.Q.Packed, w.Output.Packed)
				}
				checkReference(t, m, ref)
			})
		}
	}
}

// checkReference generates from a prompt with m and fails the test unless
// the logits at every position are those of the float64 reference ref
// within 1e-5 of the largest logit.
func checkReference(t *testing.T, m *Model, ref *refModel) {
	t.Helper()
	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	prompt := []int32{1, 17, 250, 3, 99, 42, 7, 8, 280, 11, 12, 13}
	var want []float64
	for _, id := range prompt {
		want = ref.forward(id)
	}
	worst, steps := 0.0, 0
	check := func(pos int, logits []float32) {
		if pos > len(prompt) {
			want = ref.forward(se.Tokens()[pos-1])
		}
		scale := 0.0
		for _, w := range want {
			scale = max(scale, math.Abs(w))
		}
		for i, w := range want {
			worst = max(worst, math.Abs(float64(logits[i])-w)/scale)
		}
		steps++
	}
	_, err = se.Generate(context.Background(), prompt, GenerateParams{MaxTokens: 6, Logits: check}, func(int32) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if steps != 6 {
		t.Fatalf("checked %d positions, want 6", steps)
	}
	if worst > 1e-5 {
		t.Fatalf("logits differ from the float64 reference by %.3g of the largest logit", worst)
	}
	t.Logf("worst error %.3g of the largest logit", worst)
}

// TestQwen3MatchesReference runs qwen3 models, whose q and k heads are
// RMS-normalised before RoPE, against the float64 forward pass: heads
// twice as wide as dim/heads (so that q is wider than the embedding, as
// in Qwen3-0.6B) with F16 and Q8_0 weights, fused and separate, tied and
// not, and one of the usual width.
func TestQwen3MatchesReference(t *testing.T) {
	for _, tc := range []struct {
		typ            gguf.Type
		headDim        int
		separate, tied bool
	}{{gguf.F16, 64, false, false}, {gguf.Q8_0, 64, true, true}, {gguf.Q8_0, 0, false, false}} {
		t.Run(fmt.Sprintf("%v/head%d/separate=%v/tied=%v", tc.typ, tc.headDim, tc.separate, tc.tied), func(t *testing.T) {
			spec := SynthSpec{Arch: "qwen3", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: tc.headDim, FFN: 96,
				Vocab: 300, Ctx: 512, RopeBase: 1e6, Type: tc.typ, Seed: 11, Tied: tc.tied}
			path := writeSynth(t, spec)
			m := loadModel(t, path, Options{CtxSize: 300, Chunk: 5, KVType: "f32", separate: tc.separate})
			c := m.Config
			_, untied := m.file.Tensor("output.weight")
			a := &m.w.(*llamaWeights).Blocks[1].Attn
			if wantHD := max(tc.headDim, spec.Dim/spec.Heads); !c.QKNorm || c.HeadDim != wantHD || a.Q.Rows != spec.Heads*wantHD ||
				a.Out.Cols != spec.Heads*wantHD || a.KNorm.Cols != wantHD || tc.tied == untied {
				t.Fatalf("config %+v: q rows %d, out cols %d", c, a.Q.Rows, a.Out.Cols)
			}
			checkReference(t, m, loadRef(t, path))
		})
	}
}

// TestSynthMixture checks where the _M mixtures put Q6_K: the output
// matrix, and attn_v and ffn_down of the layers llama.cpp's use_more_bits
// picks, which for 8 layers are the first (below 8/8), the last (from
// 7·8/8) and those with (layer − 1) % 3 == 2: 0, 3, 6 and 7.
func TestSynthMixture(t *testing.T) {
	spec := SynthSpec{Arch: "llama", Dim: 256, Layers: 8, Heads: 4, KVHeads: 2, FFN: 256, Vocab: 300,
		Ctx: 64, RopeBase: 10000, Type: gguf.Q4_K, Mix: gguf.Q6_K, Seed: 3}
	f, err := gguf.Open(writeSynth(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	more := map[int]bool{0: true, 3: true, 6: true, 7: true}
	counts := map[gguf.Type]int{}
	for _, ti := range f.Tensors {
		counts[ti.Type]++
		want := gguf.Q4_K
		var l int
		var kind string
		switch {
		case len(ti.Dims) == 1:
			want = gguf.F32
		case ti.Name == "output.weight":
			want = gguf.Q6_K
		default:
			if n, _ := fmt.Sscanf(ti.Name, "blk.%d.%s", &l, &kind); n == 2 && more[l] &&
				(kind == "attn_v.weight" || kind == "ffn_down.weight") {
				want = gguf.Q6_K
			}
		}
		if ti.Type != want {
			t.Errorf("%s is %v, want %v", ti.Name, ti.Type, want)
		}
	}
	if counts[gguf.Q6_K] != 1+2*len(more) {
		t.Errorf("%d Q6_K tensors, want %d", counts[gguf.Q6_K], 1+2*len(more))
	}
	for i, want := range []bool{true, false, false, true, false, false, true, true} {
		if got := useMoreBits(i, 8); got != want {
			t.Errorf("useMoreBits(%d, 8) = %v, want %v", i, got, want)
		}
	}
}

// rewriteSynth writes a synthetic model, lets edit change its metadata and
// tensors, and writes the result beside it.
func rewriteSynth(t *testing.T, s SynthSpec, edit func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData)) string {
	t.Helper()
	f, err := gguf.Open(writeSynth(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := make([]gguf.TensorData, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		ts[i] = gguf.TensorData{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: f.Data(ti)}
	}
	kv, ts := edit(slices.Clone(f.KV), ts)
	path := filepath.Join(t.TempDir(), "edited.gguf")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := gguf.Write(out, kv, ts); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestQwen3LoadErrors checks that a qwen3 file whose head norms or head
// geometry are not what the architecture needs fails to load, saying which
// tensor or key and what shapes.
func TestQwen3LoadErrors(t *testing.T) {
	spec := SynthSpec{Arch: "qwen3", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, FFN: 96,
		Vocab: 300, Ctx: 64, RopeBase: 1e6, Type: gguf.F16, Seed: 1}
	drop := func(name string) func([]gguf.KV, []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
		return func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
			return kv, slices.DeleteFunc(ts, func(t gguf.TensorData) bool { return t.Name == name })
		}
	}
	setKV := func(key string, v any) func([]gguf.KV, []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
		return func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
			kv = slices.DeleteFunc(kv, func(e gguf.KV) bool { return e.Key == key })
			if v != nil {
				kv = append(kv, gguf.KV{Key: key, Value: v})
			}
			return kv, ts
		}
	}
	for _, tc := range []struct {
		name string
		spec SynthSpec
		edit func([]gguf.KV, []gguf.TensorData) ([]gguf.KV, []gguf.TensorData)
		want []string
	}{
		{"missing k norm", spec, drop("blk.1.attn_k_norm.weight"), []string{"blk.1.attn_k_norm.weight", "[64]"}},
		{"short q norm", spec, func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
			for i, t := range ts {
				if t.Name == "blk.0.attn_q_norm.weight" {
					ts[i].Dims, ts[i].Data = []uint64{32}, t.Data[:4*32]
				}
			}
			return kv, ts
		}, []string{"blk.0.attn_q_norm.weight", "[32]", "[64, 1]"}},
		{"values of another size", spec, setKV("qwen3.attention.value_length", uint32(32)), []string{"keys of 64", "values of 32"}},
		{"keys of another size", spec, setKV("qwen3.attention.key_length", uint32(32)), []string{"keys of 32", "values of 64"}},
		{"no head size", spec, func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
			// Heads of dim/heads: the matrices are then too wide.
			for _, k := range []string{"attention.key_length", "attention.value_length", "rope.dimension_count"} {
				kv, ts = setKV("qwen3."+k, nil)(kv, ts)
			}
			return kv, ts
		}, []string{"attn_q.weight", "[128 256]", "[128, 128]"}},
		{"heads that do not divide dim", SynthSpec{Arch: "qwen3", Dim: 96, Layers: 1, Heads: 5, KVHeads: 1, HeadDim: 16, FFN: 64,
			Vocab: 300, Ctx: 64, RopeBase: 1e6, Type: gguf.F16}, setKV("qwen3.attention.key_length", nil), []string{"dim 96, 5 heads of 0"}},
		{"llama with a q norm", SynthSpec{Arch: "llama", Dim: 128, Layers: 1, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 300, Ctx: 64, RopeBase: 1e4, Type: gguf.F16},
			func(kv []gguf.KV, ts []gguf.TensorData) ([]gguf.KV, []gguf.TensorData) {
				norm := make([]byte, 4*32)
				return kv, append(ts, gguf.TensorData{Name: "blk.0.attn_q_norm.weight", Dims: []uint64{32}, Type: gguf.F32, Data: norm})
			}, []string{"blk.0.attn_q_norm.weight", "does not use"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := rewriteSynth(t, tc.spec, tc.edit)
			m, err := Load(path, Options{dev: vktest.Device(t), CtxSize: 64})
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
}

// TestQwen3GreedyMatchesLlamaCpp generates from a 2-layer qwen3 synth model
// (Q8_0, heads of 128 on a dim of 256) and compares with the ids that
// llama.cpp (v0.4.0 through node-llama-cpp 3.21.1, CPU backend) produced
// from the same file, written by `headinfer synth --preset qwen3-8b
// --layers 2 --dim 256 --heads 4 --kv-heads 2 --head-dim 128 --ffn 512
// --vocab 1000 --ctx 512 --type q8_0 --seed 3`: without the head norms the
// ids part from the 14th on.
func TestQwen3GreedyMatchesLlamaCpp(t *testing.T) {
	spec := SynthSpec{Arch: "qwen3", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 128, FFN: 512,
		Vocab: 1000, Ctx: 512, RopeBase: 1e6, Type: gguf.Q8_0, Seed: 3}
	path := writeSynth(t, spec)
	promptIDs := []int32{1, 659, 264, 618, 642, 277, 415, 632, 733, 272, 259}
	greedy := []int32{209, 770, 141, 788, 492, 336, 47, 399, 660, 92, 459, 419, 405, 995, 265, 57, 957, 120, 782, 825,
		16, 862, 492, 673, 535, 212, 279, 366, 75, 814, 469, 914, 342, 505, 979, 813, 804, 325, 53, 594, 372, 802, 351,
		369, 511, 91, 275, 868, 318, 376, 672, 917, 39, 413, 7, 41, 68, 215, 275, 868, 318, 376, 672, 469}
	for _, chunk := range []int{512, 3} {
		t.Run(fmt.Sprintf("chunk%d", chunk), func(t *testing.T) {
			m := loadModel(t, path, Options{CtxSize: 512, Chunk: chunk})
			if ids := m.Tokenizer.Encode("Once upon a time", true); !slices.Equal(ids, promptIDs) {
				t.Fatalf("prompt ids %v, want %v", ids, promptIDs)
			}
			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer se.Close()
			var got []int32
			_, err = se.Generate(context.Background(), promptIDs, GenerateParams{MaxTokens: len(greedy)}, func(id int32) bool {
				got = append(got, id)
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, greedy) {
				t.Fatalf("greedy ids\n got %v\nwant %v", got, greedy)
			}
		})
	}
}
