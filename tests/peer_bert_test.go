package tests

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// peerEmbed runs bench/embed.mjs in the peer's folder: llama.cpp's
// tokenization of texts and its embeddings of inputs (token ids).
func peerEmbed(t *testing.T, peer, model string, texts []string, inputs [][]int32) (tokens [][]int32, bos, sep int32, embeddings [][]float64) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "bench", "embed.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script, "--ctx", "64", model)
	cmd.Dir = peer
	cmd.Stdin = strings.NewReader(string(mustJSON(map[string]any{"texts": texts, "inputs": inputs})))
	cmd.Env = os.Environ()
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("embed.mjs: %v\n%s%s", err, out, stderr)
	}
	var r struct {
		Tokens     [][]int32
		Bos, Sep   *int32
		Embeddings [][]float64
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Bos == nil || r.Sep == nil {
		t.Fatalf("embed.mjs printed %q: %v", out, err)
	}
	return r.Tokens, *r.Bos, *r.Sep, r.Embeddings
}

// cosine is the cosine of the angle between a and b.
func cosine(a []float32, b []float64) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * b[i]
		aa += float64(a[i]) * float64(a[i])
		bb += b[i] * b[i]
	}
	return ab / math.Sqrt(aa*bb)
}

// TestBertMatchesLlamaCpp serves a synthetic BERT model (bert-tiny's
// geometry, f16 weights) with each pooling its file can name, and a
// nomic-bert model of that size with mean pooling, and compares with llama.cpp's CPU backend through node-llama-cpp:
// tokenization of the same texts (WordPiece: case, accents, punctuation,
// CJK, unknown words), and each text's embedding from llama.cpp for the
// ids headinfer gave it. The default pooling is the file's; with pooling
// none llama.cpp answers the last token's vector, which is compared with
// the last of headinfer's per-token vectors. Every vector must have a
// cosine of at least 0.999 with llama.cpp's.
func TestBertMatchesLlamaCpp(t *testing.T) {
	peer := peerDir(t)
	dir := t.TempDir()
	texts := []string{
		"Once upon a time, there was a little girl named Lily.",
		"The cat sat on the mat! She loved to play outside.",
		"café naïve Cafe\u0301 日本 $x [CLS] hello-world",
		"  spaces\tand\nnew lines ; (the) end...",
		"zebra",
	}
	for _, tc := range []struct{ preset, pooling string }{
		{"bert-tiny", "mean"}, {"bert-tiny", "cls"}, {"bert-tiny", "last"}, {"bert-tiny", "none"}, {"nomic-embed", "mean"},
	} {
		pooling := tc.pooling
		model := synthEmbedder(t, dir, tc.preset, pooling)
		srv := startServer(t, "-m", model, "-c", "64", "--embeddings")
		var ids [][]int32
		var ours [][]float32
		for _, text := range texts {
			in := srv.tokenizeSpecial(t, text)
			ids = append(ids, in)
			vecs := srv.nativeEmbeddings(t, text)
			if pooling == "none" && len(vecs) != len(in) {
				t.Fatalf("%s: %d vectors for %d tokens", pooling, len(vecs), len(in))
			}
			ours = append(ours, vecs[len(vecs)-1])
		}
		tokens, bos, sep, theirs := peerEmbed(t, peer, model, texts, ids)
		if len(tokens) != len(texts) || len(theirs) != len(texts) {
			t.Fatalf("embed.mjs answered %d tokenizations and %d embeddings for %d texts", len(tokens), len(theirs), len(texts))
		}
		for i, text := range texts {
			if tc.preset == "bert-tiny" && pooling == "mean" {
				want := append(append([]int32{bos}, tokens[i]...), sep)
				if !slices.Equal(ids[i], want) {
					t.Errorf("%q: headinfer's ids %v, llama.cpp's %v", text, ids[i], want)
				}
			}
			c := cosine(ours[i], theirs[i])
			t.Logf("%s, %s pooling, %d tokens: cosine %.7f", tc.preset, pooling, len(ids[i]), c)
			if !(c >= 0.999) {
				t.Errorf("%s, %s pooling, %q: cosine %.6f with llama.cpp's, want ≥ 0.999", tc.preset, pooling, text, c)
			}
		}
	}
}
