package tests

import (
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// synthBert writes a small synthetic BERT model (bert-tiny's geometry, a
// vocabulary of 1000) whose file names pooling, and returns its path.
func synthBert(t *testing.T, dir, pooling string) string {
	t.Helper()
	return synthEmbedder(t, dir, "bert-tiny", pooling)
}

// synthEmbedder writes a small synthetic embedding model of preset
// (bert-tiny's width and depth, f16 weights, a vocabulary of 1000) whose
// file names pooling, and returns its path.
func synthEmbedder(t *testing.T, dir, preset, pooling string) string {
	t.Helper()
	path := filepath.Join(dir, preset+"-"+pooling+".gguf")
	if _, stderr, err := run(t, "synth", "--preset", preset, "--vocab", "1000", "--type", "f16", "--seed", "5",
		"--dim", "128", "--layers", "2", "--heads", "2", "--ffn", "512", "--ctx", "512",
		"--pooling", pooling, "--out", path); err != nil {
		t.Fatalf("synth: %v\n%s", err, stderr)
	}
	return path
}

// tokenizeSpecial is /tokenize with the model's special tokens added and
// control tokens in the text read as text, as embeddings read it.
func (p *serverProc) tokenizeSpecial(t *testing.T, text string) []int32 {
	t.Helper()
	status, body := p.post(t, "/tokenize", "", mustJSON(map[string]any{"content": text, "add_special": true, "parse_special": false}))
	var tok struct{ Tokens []int32 }
	if err := json.Unmarshal(body, &tok); err != nil || status != 200 {
		t.Fatalf("/tokenize: %d %s", status, body)
	}
	return tok.Tokens
}

// nativeEmbeddings posts content to /embedding and reads its vectors.
func (p *serverProc) nativeEmbeddings(t *testing.T, content any) [][]float32 {
	t.Helper()
	status, body := p.post(t, "/embedding", "", mustJSON(map[string]any{"content": content}))
	var out []struct {
		Index     int
		Embedding [][]float32
	}
	if err := json.Unmarshal(body, &out); err != nil || status != 200 || len(out) != 1 || out[0].Index != 0 {
		t.Fatalf("/embedding: %d %s", status, body)
	}
	return out[0].Embedding
}

// TestServerBertEmbeddings serves a BERT model: /v1/embeddings gives unit
// vectors of its width pooled as the file says, the same for an input
// alone and in a batch; --pooling none, or a file that names none, gives
// /embedding one vector per token of [CLS] text [SEP]; an input longer than the context, or than
// the chunk, is 400; generation routes are 501; and without --embeddings
// the server refuses to start, saying why.
func TestServerBertEmbeddings(t *testing.T) {
	model := synthBert(t, t.TempDir(), "cls")
	srv := startServer(t, "-m", model, "-c", "64", "--parallel", "2", "--embeddings")
	texts := []string{"Once upon a time, there was a little girl.", "The cat sat on the mat!", "hello"}
	status, body := srv.post(t, "/v1/embeddings", "", mustJSON(map[string]any{"input": texts}))
	var batch struct {
		Data []struct {
			Index     int
			Embedding []float32
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	if err := json.Unmarshal(body, &batch); err != nil || status != 200 || len(batch.Data) != len(texts) {
		t.Fatalf("/v1/embeddings: %d %s", status, body)
	}
	tokens := 0
	for i, text := range texts {
		d := batch.Data[i]
		var norm float64
		for _, v := range d.Embedding {
			norm += float64(v) * float64(v)
		}
		if d.Index != i || len(d.Embedding) != 128 || math.Abs(math.Sqrt(norm)-1) > 1e-5 {
			t.Errorf("input %d: index %d, %d dimensions, norm %v; want %d, 128, 1", i, d.Index, len(d.Embedding), math.Sqrt(norm), i)
		}
		alone := srv.nativeEmbeddings(t, text)
		if len(alone) != 1 || !slices.Equal(alone[0], d.Embedding) {
			t.Errorf("input %d: /embedding alone differs from its place in a /v1/embeddings batch", i)
		}
		ids := srv.tokenizeSpecial(t, text)
		if len(ids) < 3 || ids[0] != 2 || ids[len(ids)-1] != 3 {
			t.Errorf("input %d tokenizes as %v: want [CLS]=2 … [SEP]=3", i, ids)
		}
		tokens += len(ids)
	}
	if batch.Usage.PromptTokens != tokens {
		t.Errorf("usage counts %d prompt tokens, want %d", batch.Usage.PromptTokens, tokens)
	}
	if slices.Equal(batch.Data[0].Embedding, batch.Data[1].Embedding) {
		t.Error("two texts have the same embedding")
	}
	// CLS pooling is the first token's vector: the same first token with
	// a different rest must give another vector (attention both ways).
	a, b := srv.nativeEmbeddings(t, "the cat"), srv.nativeEmbeddings(t, "the dog")
	if slices.Equal(a[0], b[0]) {
		t.Error("the [CLS] vector does not depend on the text after it")
	}

	long := strings.Repeat("cat ", 70)
	status, body = srv.post(t, "/v1/embeddings", "", mustJSON(map[string]any{"input": long}))
	checkError(t, "an input longer than the context", status, body, 400, "invalid_request_error", "context_length_exceeded")
	for _, path := range []string{"/completion", "/v1/completions", "/v1/chat/completions"} {
		req := map[string]any{"prompt": "hi", "max_tokens": 2}
		if strings.Contains(path, "chat") {
			req = map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 2}
		}
		status, body := srv.post(t, path, "", mustJSON(req))
		checkError(t, path+" on an embedding model", status, body, 501, "not_supported_error", "generation_unsupported")
	}

	// --pooling none: a vector per token on /embedding, as they are.
	none := startServer(t, "-m", model, "-c", "64", "--chunk", "16", "--embeddings", "--pooling", "none")
	text := "the little cat sat"
	ids := none.tokenizeSpecial(t, text)
	vecs := none.nativeEmbeddings(t, text)
	if len(vecs) != len(ids) {
		t.Fatalf("--pooling none: %d vectors for %d tokens", len(vecs), len(ids))
	}
	for i, v := range vecs {
		if len(v) != 128 {
			t.Fatalf("--pooling none: vector %d has %d values", i, len(v))
		}
	}
	if byIDs := none.nativeEmbeddings(t, ids); !slices.EqualFunc(byIDs, vecs, slices.Equal[[]float32]) {
		t.Error("--pooling none: the token ids of the text embed differently from the text")
	}
	// The CLS-pooled vector is the first token's, normalised.
	cls := srv.nativeEmbeddings(t, text)[0]
	var n float64
	for _, v := range vecs[0] {
		n += float64(v) * float64(v)
	}
	for j, v := range vecs[0] {
		if d := math.Abs(float64(v)/math.Sqrt(n) - float64(cls[j])); d > 1e-6 {
			t.Fatalf("--pooling none's first vector, normalised, differs from cls pooling by %g at %d", d, j)
		}
	}
	status, body = none.post(t, "/embedding", "", mustJSON(map[string]any{"content": strings.Repeat("cat ", 20)}))
	checkError(t, "an input longer than the chunk", status, body, 400, "invalid_request_error", "input_too_long")
	status, body = none.post(t, "/v1/embeddings", "", mustJSON(map[string]any{"input": "hi"}))
	checkError(t, "/v1/embeddings with --pooling none", status, body, 400, "invalid_request_error", "unsupported")

	// A file that names no pooling gets a vector per token too.
	fileNone := startServer(t, "-m", synthBert(t, t.TempDir(), "none"), "-c", "64", "--embeddings")
	if got := fileNone.nativeEmbeddings(t, text); !slices.EqualFunc(got, vecs, slices.Equal[[]float32]) {
		t.Errorf("a file with pooling_type none: %d vectors, want the %d of --pooling none", len(got), len(vecs))
	}

	if _, stderr, err := run(t, "serve", "-m", model, "--port", "0"); err == nil || !strings.Contains(stderr, "--embeddings") {
		t.Errorf("serve without --embeddings: %v, %q: want a refusal that names --embeddings", err, stderr)
	}
	if _, stderr, err := run(t, "generate", "-m", model, "-p", "hi", "-n", "1"); err == nil || !strings.Contains(stderr, "cannot generate") {
		t.Errorf("generate: %v, %q: want a refusal", err, stderr)
	}
}
