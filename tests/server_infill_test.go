package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"headinfer/engine/gguf"
)

// TestServerInfill gives stories260K fill-in-the-middle tokens in its
// metadata (three of its byte tokens stand for them) and checks /infill:
// its prompt is PRE prefix SUF suffix MID prompt after the context files,
// as /completion with those ids shows, and a model without the tokens is
// answered 501.
func TestServerInfill(t *testing.T) {
	src := filepath.Join(modelsDir(t), "stories260K.gguf")
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	const pre, suf, mid, sep = 10, 11, 12, 13
	kv := append(f.KV, gguf.KV{Key: "tokenizer.ggml.fim_pre_token_id", Value: uint32(pre)},
		gguf.KV{Key: "tokenizer.ggml.fim_suf_token_id", Value: uint32(suf)},
		gguf.KV{Key: "tokenizer.ggml.fim_mid_token_id", Value: uint32(mid)},
		gguf.KV{Key: "tokenizer.ggml.fim_sep_token_id", Value: uint32(sep)})
	path := filepath.Join(t.TempDir(), "fim.gguf")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := gguf.Write(out, kv, f.AllTensorData()); err != nil {
		t.Fatal(err)
	}
	out.Close()
	f.Close()

	srv := startServer(t, "-m", path, "-c", "256")
	tokenize := func(text string) []int32 {
		t.Helper()
		status, b := srv.post(t, "/tokenize", "", mustJSON(map[string]any{"content": text, "parse_special": false}))
		var r struct{ Tokens []int32 }
		if err := json.Unmarshal(b, &r); err != nil || status != 200 {
			t.Fatalf("/tokenize: %d %s", status, b)
		}
		return r.Tokens
	}
	want := []int32{1, sep}
	want = append(want, tokenize("lib.txt\nThe cat sat.")...)
	want = append(append(want, pre), tokenize("Once upon a time")...)
	want = append(append(want, suf), tokenize("happily ever after.")...)
	want = append(append(want, mid), tokenize("there")...)

	type answer struct {
		Content         string  `json:"content"`
		Tokens          []int32 `json:"tokens"`
		TokensEvaluated int     `json:"tokens_evaluated"`
	}
	ask := func(path string, body any) answer {
		t.Helper()
		status, b := srv.post(t, path, "", mustJSON(body))
		var a answer
		if err := json.Unmarshal(b, &a); err != nil || status != 200 {
			t.Fatalf("%s: %d %s", path, status, b)
		}
		return a
	}
	infill := ask("/infill", map[string]any{"input_prefix": "Once upon a time", "input_suffix": "happily ever after.",
		"input_extra": []map[string]string{{"filename": "lib.txt", "text": "The cat sat."}}, "prompt": "there",
		"n_predict": 12, "temperature": 0, "return_tokens": true})
	plain := ask("/completion", map[string]any{"prompt": want, "n_predict": 12, "temperature": 0, "return_tokens": true})
	if infill.TokensEvaluated != len(want) || infill.Content != plain.Content || len(infill.Tokens) != 12 {
		t.Errorf("/infill evaluated %d tokens and wrote %q, /completion of the expected prompt (%d tokens) %q",
			infill.TokensEvaluated, infill.Content, len(want), plain.Content)
	}

	noFIM := startServer(t, "-m", src, "-c", "128")
	if status, b := noFIM.post(t, "/infill", "", []byte(`{"input_prefix": "a", "input_suffix": "b"}`)); status != 501 {
		t.Errorf("/infill on a model without FIM tokens: %d %s, want 501", status, b)
	}
}
