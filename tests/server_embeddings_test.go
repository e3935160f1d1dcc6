package tests

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// TestServerEmbeddings asks `serve --embeddings` for embeddings through
// the go-openai client and llama-server's /embedding: floats and base64
// carry the same vectors, a batch of inputs gives each input's own vector,
// the vectors are unit length and of the model's width, and the usage
// counts the inputs' tokens.
func TestServerEmbeddings(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const key = "k"
	srv := startServer(t, "-m", model, "-c", "256", "--parallel", "2", "--embeddings", "--api-key", key)
	c := srv.client(key, nil)
	ctx := context.Background()
	texts := []string{"Once upon a time", "The cat sat on the mat.", "Lily loved to play outside in the park with her friends."}

	batch, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequest{Input: texts})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch.Data) != len(texts) {
		t.Fatalf("%d embeddings for %d inputs", len(batch.Data), len(texts))
	}
	tokens := 0
	for i, text := range texts {
		d := batch.Data[i]
		if d.Index != i || len(d.Embedding) != 64 {
			t.Fatalf("input %d: index %d, %d dimensions, want %d and 64", i, d.Index, len(d.Embedding), i)
		}
		var norm float64
		for _, v := range d.Embedding {
			norm += float64(v) * float64(v)
		}
		if math.Abs(math.Sqrt(norm)-1) > 1e-5 {
			t.Errorf("input %d: norm %v, want 1", i, math.Sqrt(norm))
		}
		one, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequest{Input: text})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(one.Data[0].Embedding, d.Embedding) {
			t.Errorf("input %d alone differs from its place in a batch", i)
		}
		b64, err := c.CreateEmbeddings(ctx, openai.EmbeddingRequest{Input: text, EncodingFormat: openai.EmbeddingEncodingFormatBase64})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(b64.Data[0].Embedding, d.Embedding) {
			t.Errorf("input %d: base64 differs from floats", i)
		}
		status, body := srv.post(t, "/embedding", key, mustJSON(map[string]any{"content": text}))
		var native []struct {
			Index     int
			Embedding [][]float32
		}
		if err := json.Unmarshal(body, &native); err != nil || status != 200 || len(native) != 1 || len(native[0].Embedding) != 1 {
			t.Fatalf("/embedding: %d %s", status, body)
		}
		if !slices.Equal(native[0].Embedding[0], d.Embedding) {
			t.Errorf("input %d: /embedding differs from /v1/embeddings", i)
		}
		status, body = srv.post(t, "/tokenize", key, mustJSON(map[string]any{"content": text, "add_special": true, "parse_special": false}))
		var tok struct{ Tokens []int32 }
		if err := json.Unmarshal(body, &tok); err != nil || status != 200 {
			t.Fatalf("/tokenize: %d %s", status, body)
		}
		tokens += len(tok.Tokens)
	}
	if batch.Usage.PromptTokens != tokens || batch.Usage.TotalTokens != tokens {
		t.Errorf("usage %+v, want %d prompt tokens", batch.Usage, tokens)
	}
	if slices.Equal(batch.Data[0].Embedding, batch.Data[1].Embedding) {
		t.Error("two texts have the same embedding")
	}

	// --pooling none: /embedding gives each token's vector; /v1 refuses.
	none := startServer(t, "-m", model, "-c", "256", "--embeddings", "--pooling", "none")
	status, body := none.post(t, "/embedding", "", mustJSON(map[string]any{"content": texts[0]}))
	var perToken []struct{ Embedding [][]float32 }
	if err := json.Unmarshal(body, &perToken); err != nil || status != 200 || len(perToken) != 1 {
		t.Fatalf("/embedding with --pooling none: %d %s", status, body)
	}
	status, body = none.post(t, "/tokenize", "", mustJSON(map[string]any{"content": texts[0], "add_special": true, "parse_special": false}))
	var tok struct{ Tokens []int32 }
	if err := json.Unmarshal(body, &tok); err != nil || status != 200 {
		t.Fatalf("/tokenize: %d %s", status, body)
	}
	if got := perToken[0].Embedding; len(got) != len(tok.Tokens) || len(got[0]) != 64 {
		t.Errorf("--pooling none: %d vectors for %d tokens", len(got), len(tok.Tokens))
	}
	if status, _ := none.post(t, "/v1/embeddings", "", []byte(`{"input": "hi"}`)); status != 400 {
		t.Errorf("/v1/embeddings with --pooling none: %d, want 400", status)
	}

	for _, tc := range []struct{ body, param string }{
		{`{"input": ""}`, "input"},
		{`{"input": []}`, "input"},
		{`{"input": [1, 99999]}`, "input"},
		{`{"input": {"a": 1}}`, "input"},
		{`{"input": "x", "encoding_format": "int8"}`, "encoding_format"},
		{`{"input": "x", "dimensions": 32}`, "dimensions"},
	} {
		status, body := srv.post(t, "/v1/embeddings", key, []byte(tc.body))
		var e struct{ Error struct{ Param string } }
		if err := json.Unmarshal(body, &e); err != nil || status != 400 || e.Error.Param != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, status, body, tc.param)
		}
	}
}
