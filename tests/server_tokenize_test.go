package tests

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestServerTokenize checks /tokenize against the prompt ids `generate`
// makes of the same text, /detokenize against the text, and /props,
// on a model with Llama 2's real vocabulary (byte tokens included).
func TestServerTokenize(t *testing.T) {
	model := filepath.Join(modelsDir(t), "llama-2-tiny-random.gguf")
	const key = "k"
	srv := startServer(t, "-m", model, "-c", "256", "--parallel", "2", "--api-key", key)
	const text = "Hello world 😀</s> again"
	if status, body := srv.post(t, "/v1/embeddings", key, []byte(`{"input": "hi"}`)); status != 501 {
		t.Errorf("embeddings without --embeddings: %d %s, want 501", status, body)
	}

	promptIDs := func(extra ...string) []int32 {
		stdout, stderr, err := run(t, append([]string{"generate", "--json", "-m", model, "-p", text, "-n", "1", "--temp", "0"}, extra...)...)
		if err != nil {
			t.Fatalf("generate: %v\n%s", err, stderr)
		}
		var out struct {
			PromptIDs []int32 `json:"prompt_ids"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatal(err)
		}
		return out.PromptIDs
	}
	tokenize := func(body map[string]any) []int32 {
		t.Helper()
		status, b := srv.post(t, "/tokenize", key, mustJSON(body))
		var r struct{ Tokens []int32 }
		if err := json.Unmarshal(b, &r); err != nil || status != 200 {
			t.Fatalf("/tokenize %v: %d %s", body, status, b)
		}
		return r.Tokens
	}
	// generate adds BOS and reads control tokens, unless --no-special.
	special, plain := promptIDs(), promptIDs("--no-special")
	if got := tokenize(map[string]any{"content": text, "add_special": true}); !slices.Equal(got, special) {
		t.Errorf("/tokenize: %v, generate %v", got, special)
	}
	if got := tokenize(map[string]any{"content": text, "add_special": true, "parse_special": false}); !slices.Equal(got, plain) || slices.Equal(plain, special) {
		t.Errorf("/tokenize parse_special false: %v, generate --no-special %v", got, plain)
	}
	if got := tokenize(map[string]any{"content": text}); !slices.Equal(got, special[1:]) {
		t.Errorf("/tokenize without add_special: %v, want %v", got, special[1:])
	}

	// Pieces: the emoji is four byte tokens, each a byte array.
	status, b := srv.post(t, "/tokenize", key, mustJSON(map[string]any{"content": text, "with_pieces": true, "parse_special": false}))
	var pieces struct {
		Tokens []struct {
			ID    int32
			Piece json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &pieces); err != nil || status != 200 {
		t.Fatalf("/tokenize with_pieces: %d %s", status, b)
	}
	var joined []byte
	arrays := 0
	for i, p := range pieces.Tokens {
		if p.ID != plain[i+1] {
			t.Fatalf("with_pieces: ids %s, want %v", b, plain[1:])
		}
		var s string
		if json.Unmarshal(p.Piece, &s) == nil {
			joined = append(joined, s...)
			continue
		}
		var nums []byte
		if err := json.Unmarshal(p.Piece, &nums); err != nil {
			t.Fatalf("piece %s", p.Piece)
		}
		arrays++
		joined = append(joined, nums...)
	}
	if string(joined) != " "+text || arrays != 4 {
		t.Errorf("pieces join to %q with %d byte arrays: %s", joined, arrays, b)
	}

	// /detokenize undoes it.
	for _, ids := range [][]int32{plain, plain[1:]} {
		status, b := srv.post(t, "/detokenize", key, mustJSON(map[string]any{"tokens": ids}))
		var r struct{ Content string }
		if err := json.Unmarshal(b, &r); err != nil || status != 200 || r.Content != text {
			t.Errorf("/detokenize %v: %d %s, want %q", ids, status, b, text)
		}
	}
	status, b = srv.post(t, "/detokenize", key, []byte(`{"tokens": [1, 32000]}`))
	checkError(t, "/detokenize past the vocabulary", status, b, 400, "invalid_request_error", "invalid_value")
	if !strings.Contains(string(b), "32000") {
		t.Errorf("the error does not name the id: %s", b)
	}

	// /props.
	req, _ := http.NewRequest("GET", srv.url+"/props", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var props struct {
		Default struct {
			NCtx int `json:"n_ctx"`
		} `json:"default_generation_settings"`
		TotalSlots int    `json:"total_slots"`
		ModelAlias string `json:"model_alias"`
		ModelPath  string `json:"model_path"`
		BuildInfo  string `json:"build_info"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&props); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/props: %d %v", resp.StatusCode, err)
	}
	if props.Default.NCtx != 256 || props.TotalSlots != 2 || props.ModelAlias != "llama-2-tiny-random" || props.ModelPath != model || props.BuildInfo == "" {
		t.Errorf("/props: %+v", props)
	}
}
