package tests

import (
	"path/filepath"
	"testing"
)

// TestKVQuantMatchesLlamaCpp compares next-token probabilities with
// llama.cpp's CPU backend when both keep a Q8_0 KV cache (bench/probs.mjs
// --kv-type q8_0: llama.cpp then runs flash attention, which its
// quantized cache needs), on a 2-layer Llama-3-8B-geometry synth model.
// With F16 weights the engines differ only in the attention: the greedy
// ids must agree and the 32 likeliest probabilities within 5 %. With
// Q4_K_M weights llama.cpp also rounds the activations of its quantized
// products to 8 bits, and the engines differ by a few percent with an
// F16 cache already: Q8_0 may add at most 2 points to that.
func TestKVQuantMatchesLlamaCpp(t *testing.T) {
	peer := peerDir(t)
	dir := t.TempDir()
	synth := func(typ string) string {
		path := filepath.Join(dir, typ+".gguf")
		if _, stderr, err := run(t, "synth", "--preset", "llama3-8b", "--layers", "2", "--vocab", "1000", "--ctx", "2048",
			"--type", typ, "--seed", "7", "--out", path); err != nil {
			t.Fatalf("synth %s: %v\n%s", typ, err, stderr)
		}
		return path
	}
	compare := func(model, kv string) probsSummary {
		t.Helper()
		args := []string{"--steps", "24", "--ctx", "512",
			"--prompt", "Once upon a time, there was a little girl named Lily who loved to play outside.", model}
		label := "f16"
		if kv != "" {
			args, label = append(args, "--kv-type", kv), kv
		}
		results := runProbs(t, peer, args...)
		if len(results) != 1 || results[0].Error != "" {
			t.Fatalf("probs.mjs: %+v", results)
		}
		s := results[0].Summary
		t.Logf("%s, KV %s: greedy ids equal at %d of %d steps, largest relative difference %.3g, %d steps decided, %d violations",
			filepath.Base(model), label, s.Same, s.Steps, s.MaxRel, s.Decided, s.Violations)
		return s
	}
	f16 := compare(synth("f16"), "q8_0")
	if f16.Same != f16.Steps || f16.MaxRel > 0.05 || f16.Violations > 0 {
		t.Errorf("F16 weights, Q8_0 KV: %+v; want every greedy id equal and probabilities within 5 %%", f16)
	}
	q4km := synth("q4_k_m")
	base, q8 := compare(q4km, ""), compare(q4km, "q8_0")
	if q8.Same != q8.Steps || q8.Violations > 0 || q8.MaxRel > base.MaxRel+0.02 {
		t.Errorf("Q4_K_M weights, Q8_0 KV: %+v against %+v with an F16 cache; want every greedy id equal and at most 2 points more", q8, base)
	}
}
