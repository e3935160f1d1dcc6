package tests

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	script, err := filepath.Abs(filepath.Join("..", "bench", "probs.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	synth := func(typ string) string {
		path := filepath.Join(dir, typ+".gguf")
		if _, stderr, err := run(t, "synth", "--preset", "llama3-8b", "--layers", "2", "--vocab", "1000", "--ctx", "2048",
			"--type", typ, "--seed", "7", "--out", path); err != nil {
			t.Fatalf("synth %s: %v\n%s", typ, err, stderr)
		}
		return path
	}
	type summary struct {
		Steps, Same, Decided, Violations int
		MaxRel                           float64
	}
	compare := func(model, kv string) summary {
		t.Helper()
		args := []string{script, "--json", "--steps", "24", "--ctx", "512",
			"--prompt", "Once upon a time, there was a little girl named Lily who loved to play outside.", model}
		if kv != "" {
			args = append(args, "--kv-type", kv)
		}
		cmd := exec.Command("node", args...)
		cmd.Dir = peer
		cmd.Env = append(os.Environ(), "HEADINFER="+binary)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("probs.mjs: %v\n%s", err, out)
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var r struct {
				Error   string
				Summary summary
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Error != "" {
				t.Fatalf("probs.mjs: %q %v %s", sc.Text(), err, r.Error)
			}
			s := r.Summary
			t.Logf("%s, KV %s: greedy ids equal at %d of %d steps, largest relative difference %.3g, %d steps decided, %d violations",
				filepath.Base(model), map[bool]string{true: kv, false: "f16"}[kv != ""], s.Same, s.Steps, s.MaxRel, s.Decided, s.Violations)
			return s
		}
		t.Fatalf("probs.mjs printed nothing:\n%s", out)
		return summary{}
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
