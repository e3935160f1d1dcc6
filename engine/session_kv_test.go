package engine

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"headinfer/engine/gguf"
)

// logitsOf generates n greedy tokens after prompt from what se holds and
// returns the logits before each.
func logitsOf(t *testing.T, se *Session, prompt []int32, n int) [][]float32 {
	t.Helper()
	var rows [][]float32
	gp := GenerateParams{MaxTokens: n, Logits: func(_ int, l []float32) { rows = append(rows, slices.Clone(l)) }}
	if _, err := se.Generate(context.Background(), prompt, gp, func(int32) bool { return true }); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestReusePrefixExact runs a sequence of requests on one session, each
// reusing the KV of the longest prefix the session holds, and checks that
// every one's logits equal a fresh session's bit for bit and that the
// reused length is the common prefix: on stories260K and on a synthetic
// Q8_0 model, with the KV resident and streamed (Q8_0 keys and Q4_0
// values streamed too), and with prefill chunks
// that split the reused prefix and the rest differently.
func TestReusePrefixExact(t *testing.T) {
	synth := writeSynth(t, SynthSpec{Arch: "llama", Dim: 128, Layers: 2, Heads: 4, KVHeads: 2, FFN: 256, Vocab: 512, Ctx: 512, RopeBase: 10000, Type: gguf.Q8_0, Seed: 3})
	for _, tc := range []struct {
		path string
		opt  Options
	}{
		{filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 512}},
		{filepath.Join(modelsDir(t), "stories260K.gguf"), Options{CtxSize: 512, Chunk: 5, Offload: OffloadHead, StreamBlock: 256}},
		{synth, Options{CtxSize: 512, Chunk: 16}},
		{synth, Options{CtxSize: 512, Chunk: 7, KVTypeK: "q8_0", KVTypeV: "q4_0", Offload: OffloadHead, StreamBlock: 256, DecodeAttn: DecodeAttnGPU}},
	} {
		t.Run(filepath.Base(tc.path)+"-"+tc.opt.Offload+tc.opt.KVTypeK+tc.opt.KVTypeV, func(t *testing.T) {
			m := loadModel(t, tc.path, tc.opt)
			a := offloadPrompt(40, m.Config.Vocab)
			b := offloadPrompt(70, m.Config.Vocab)[40:]
			requests := [][]int32{
				a,
				a,                             // the same prompt: all but its last token reused
				append(slices.Clone(a), b...), // a longer one
				b,                             // nothing in common
				append(slices.Clone(a[:25]), b[:9]...),
				append(slices.Clone(a[:25]), b[:20]...),
			}
			se, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer se.Close()
			const n = 12
			for i, prompt := range requests {
				held := slices.Clone(se.Tokens())
				kept := se.ReusePrefix(prompt)
				if want := PrefixLen(held, prompt); kept != want || len(se.Tokens()) != kept {
					t.Fatalf("request %d: kept %d (session holds %d), want %d", i, kept, len(se.Tokens()), want)
				}
				got := logitsOf(t, se, prompt[kept:], n)

				fresh, err := m.NewSession()
				if err != nil {
					t.Fatal(err)
				}
				want := logitsOf(t, fresh, prompt, n)
				fresh.Close()
				for r := range want {
					for j := range want[r] {
						if math.Float32bits(want[r][j]) != math.Float32bits(got[r][j]) {
							t.Fatalf("request %d (%d tokens reused): logit %d of token %d is %v, want %v", i, kept, j, r, got[r][j], want[r][j])
						}
					}
				}
			}
		})
	}
	// The lengths the cases above rely on.
	if PrefixLen([]int32{1, 2, 3}, []int32{1, 2, 3}) != 2 || PrefixLen([]int32{1, 2, 3, 4}, []int32{1, 2, 5}) != 2 ||
		PrefixLen(nil, []int32{1}) != 0 || PrefixLen([]int32{1, 2}, []int32{1, 2, 3, 4}) != 2 {
		t.Fatal("PrefixLen")
	}
}
