package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerLlamaServerCommandLine starts the server with a command line
// as llama-server users write it and checks what the flags promise: the
// alias as the model's name, keys from a file, routes without /v1, the
// sampling defaults of requests that leave them out, GET /slots and
// erase, and a log line for each flag that does not apply.
func TestServerLlamaServerCommandLine(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("# keys\nkey-one\n\nkey-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "-m", model, "-c", "256", "-np", "2", "-ngl", "99", "-t", "4", "-fa", "--jinja", "--metrics",
		"--alias", "tiny-stories", "--api-key-file", keys, "--slot-save-path", dir, "--temp", "0", "-n", "8", "--no-webui", "--chat-template", "chatml")
	const key = "key-two"

	if status, _ := srv.get(t, "/", ""); status != 404 {
		t.Errorf("GET / with --no-webui: %d, want 404", status)
	}
	status, body := srv.get(t, "/models", key)
	if status != 200 || !strings.Contains(string(body), `"id":"tiny-stories"`) {
		t.Errorf("/models: %d %s, want the alias", status, body)
	}
	if status, _ := srv.get(t, "/models", "key-three"); status != 401 {
		t.Errorf("a key not in the file: %d, want 401", status)
	}
	if status, _ := srv.get(t, "/models", "key-one"); status != 200 {
		t.Errorf("the file's first key: %d, want 200", status)
	}

	completion := func(path, body string) (text string, tokens int) {
		t.Helper()
		status, b := srv.post(t, path, key, []byte(body))
		var r struct {
			Model   string
			Choices []struct {
				Text    string
				Message struct{ Content string }
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal(b, &r); err != nil || status != 200 || len(r.Choices) != 1 || r.Model != "tiny-stories" {
			t.Fatalf("%s: %d %s", path, status, b)
		}
		return r.Choices[0].Text + r.Choices[0].Message.Content, r.Usage.CompletionTokens
	}
	// -n 8 and --temp 0: greedy, 8 tokens, the same as asking for them.
	plain, n := completion("/completions", `{"prompt": "Once upon a time"}`)
	asked, _ := completion("/v1/completions", `{"prompt": "Once upon a time", "temperature": 0, "max_tokens": 8}`)
	if n != 8 || plain != asked {
		t.Errorf("/completions with the server's defaults: %d tokens %q, asked for explicitly %q", n, plain, asked)
	}
	if _, n := completion("/chat/completions", `{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}`); n != 3 {
		t.Errorf("/chat/completions: %d tokens, want 3", n)
	}

	// Several prompts in one /completion: an array of answers, each the
	// prompt's own.
	type native struct {
		Index   int    `json:"index"`
		Content string `json:"content"`
	}
	status, body = srv.post(t, "/completion", key, []byte(`{"prompt": ["Once upon a time", [1, 450, 263]], "n_predict": 6, "temperature": 0}`))
	var many []native
	if err := json.Unmarshal(body, &many); err != nil || status != 200 || len(many) != 2 {
		t.Fatalf("/completion of two prompts: %d %s", status, body)
	}
	for i, p := range []string{`"Once upon a time"`, `[1, 450, 263]`} {
		status, b := srv.post(t, "/completion", key, []byte(`{"prompt": `+p+`, "n_predict": 6, "temperature": 0}`))
		var one native
		if err := json.Unmarshal(b, &one); err != nil || status != 200 || many[i].Index != i || many[i].Content != one.Content {
			t.Errorf("prompt %d: in the array %+v, alone %d %s", i, many[i], status, b)
		}
	}

	// id_slot: the request runs in the slot it names.
	for _, slot := range []int{1, 0, 1} {
		status, b := srv.post(t, "/completion", key, []byte(fmt.Sprintf(`{"prompt": "Hi", "n_predict": 2, "id_slot": %d}`, slot)))
		var r struct {
			IDSlot int `json:"id_slot"`
		}
		if err := json.Unmarshal(b, &r); err != nil || status != 200 || r.IDSlot != slot {
			t.Errorf("id_slot %d: %d %s", slot, status, b)
		}
	}
	if status, _ := srv.post(t, "/completion", key, []byte(`{"prompt": "Hi", "id_slot": 2}`)); status != 400 {
		t.Errorf("id_slot 2 of 2 slots: %d, want 400", status)
	}

	// --chat-template chatml: /apply-template shows the prompt.
	status, body = srv.post(t, "/apply-template", key, []byte(`{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|>"}]}`))
	var applied struct{ Prompt string }
	const wantPrompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|><|im_end|>\n<|im_start|>assistant\n"
	if err := json.Unmarshal(body, &applied); err != nil || status != 200 || applied.Prompt != wantPrompt {
		t.Errorf("/apply-template: %d %s, want the prompt %q", status, body, wantPrompt)
	}

	status, body = srv.get(t, "/slots", key)
	var slots []struct {
		ID           int  `json:"id"`
		NCtx         int  `json:"n_ctx"`
		IsProcessing bool `json:"is_processing"`
		NTokens      int  `json:"n_tokens"`
	}
	if err := json.Unmarshal(body, &slots); err != nil || status != 200 || len(slots) != 2 || slots[0].NCtx != 256 {
		t.Fatalf("/slots: %d %s", status, body)
	}
	held := -1
	for _, s := range slots {
		if s.IsProcessing {
			t.Errorf("slot %d is processing with no request running", s.ID)
		}
		if s.NTokens > 0 {
			held = s.ID
		}
	}
	if held < 0 {
		t.Fatalf("no slot holds the requests' tokens: %s", body)
	}
	status, body = srv.post(t, fmt.Sprintf("/slots/%d?action=erase", held), key, nil)
	var erased struct {
		NErased int `json:"n_erased"`
	}
	if json.Unmarshal(body, &erased) != nil || status != 200 || erased.NErased == 0 {
		t.Errorf("erase slot %d: %d %s", held, status, body)
	}
	if status, body := srv.post(t, "/slots/0?action=save", key, []byte(`{"filename": "s.bin"}`)); status != 200 {
		t.Errorf("save into --slot-save-path: %d %s", status, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "s.bin")); err != nil {
		t.Errorf("--slot-save-path holds no saved slot: %v", err)
	}
	log := srv.log.String()
	for _, flag := range []string{"--n-gpu-layers", "--threads", "--flash-attn", "--jinja", "--metrics"} {
		if !strings.Contains(log, "flag="+flag) {
			t.Errorf("no log line says why %s is ignored", flag)
		}
	}

	if status, _ := srv.post(t, "/props", key, []byte(`{}`)); status != 403 {
		t.Errorf("POST /props without --props: %d, want 403", status)
	}

	noSlots := startServer(t, "-m", model, "-c", "128", "--no-slots", "--props")
	if status, _ := noSlots.get(t, "/slots", ""); status != 501 {
		t.Errorf("/slots with --no-slots: %d, want 501", status)
	}
	if status, body := noSlots.post(t, "/props", "", []byte(`{"n_ctx": 5}`)); status != 200 || string(body) != `{"success":true}`+"\n" && string(body) != `{"success":true}` {
		t.Errorf("POST /props with --props: %d %s", status, body)
	}
}
