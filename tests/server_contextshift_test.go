package tests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// shiftAnswer is what the context-shift test reads of a /completion
// answer.
type shiftAnswer struct {
	Tokens          []int32 `json:"tokens"`
	TokensPredicted int     `json:"tokens_predicted"`
	TokensEvaluated int     `json:"tokens_evaluated"`
	Truncated       bool    `json:"truncated"`
	StopType        string  `json:"stop_type"`
	Settings        struct {
		NKeep int `json:"n_keep"`
	} `json:"generation_settings"`
}

func (p *serverProc) shiftCompletion(t *testing.T, body string) (int, shiftAnswer, string) {
	t.Helper()
	status, b := p.post(t, "/completion", "", []byte(body))
	var a shiftAnswer
	if status == 200 {
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	return status, a, string(b)
}

// TestServerContextShift runs llama-server's --context-shift: generation
// past the end of the context, whose first tokens are those of a server
// without it; a prompt longer than the context cut as llama-server cuts
// it (and refused without the flag); truncated: true whenever the context
// ran out; and the flag refused for a model whose sliding-window layers
// keep only their latest positions.
func TestServerContextShift(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const ctx = 64
	shift := startServer(t, "-m", model, "-c", fmt.Sprint(ctx), "-np", "2", "--context-shift", "--offload", "head")
	plain := startServer(t, "-m", model, "-c", fmt.Sprint(ctx), "-np", "2")

	prompt := `[1, 403, 143, 263, 91]`
	const req = `{"prompt": %s, "n_predict": %d, "n_keep": 3, "temperature": 0, "ignore_eos": true, "return_tokens": true}`
	status, long, body := shift.shiftCompletion(t, fmt.Sprintf(req, prompt, 150))
	if status != 200 || long.TokensPredicted != 150 || len(long.Tokens) != 150 || !long.Truncated || long.StopType != "limit" || long.Settings.NKeep != 3 {
		t.Fatalf("150 tokens from a context of %d with --context-shift: %d %s", ctx, status, body)
	}
	status, short, body := plain.shiftCompletion(t, fmt.Sprintf(req, prompt, 150))
	if room := ctx - 5; status != 200 || short.TokensPredicted != room || !short.Truncated || short.StopType != "limit" {
		t.Fatalf("150 tokens without --context-shift: %d %s, want the %d that fit, truncated", status, body, room)
	}
	// Until the context is full the two servers compute the same steps.
	if !slices.Equal(long.Tokens[:len(short.Tokens)], short.Tokens) {
		t.Errorf("before the first shift the tokens differ:\n%v\n%v", long.Tokens[:len(short.Tokens)], short.Tokens)
	}
	// A request that fits is not truncated.
	if status, a, body := plain.shiftCompletion(t, fmt.Sprintf(req, prompt, 8)); status != 200 || a.Truncated || a.StopType != "limit" {
		t.Errorf("8 tokens: %d %s, want truncated false", status, body)
	}

	// A prompt of 150 ids: llama-server keeps n_keep, then drops whole
	// blocks of (ctx − n_keep)/2 until it fits.
	ids := make([]string, 150)
	for i := range ids {
		ids[i] = fmt.Sprint(300 + i%200)
	}
	longPrompt := "[" + strings.Join(ids, ",") + "]"
	keep, block := 3, (ctx-3)/2
	kept := 150 - (150-keep-block)/block*block
	status, cut, body := shift.shiftCompletion(t, fmt.Sprintf(req, longPrompt, 3))
	if status != 200 || cut.TokensEvaluated != kept || !cut.Truncated || cut.TokensPredicted != 3 {
		t.Fatalf("a prompt of 150 tokens with --context-shift: %d %s, want %d tokens evaluated", status, body, kept)
	}
	cutPrompt := "[" + strings.Join(append(ids[:keep:keep], ids[150-(kept-keep):]...), ",") + "]"
	status, same, body := shift.shiftCompletion(t, fmt.Sprintf(req, cutPrompt, 3))
	if status != 200 || !slices.Equal(same.Tokens, cut.Tokens) || same.Truncated {
		t.Errorf("the cut prompt sent whole: %d %s, want the tokens %v, not truncated", status, body, cut.Tokens)
	}
	status, b := plain.post(t, "/completion", "", []byte(fmt.Sprintf(req, longPrompt, 4)))
	if status != 400 || !strings.Contains(string(b), `"code":"context_length_exceeded"`) {
		t.Errorf("a prompt of 150 tokens without --context-shift: %d %s, want 400", status, b)
	}
	for _, bad := range []string{
		fmt.Sprintf(`{"prompt": %s, "n_keep": -2}`, prompt),
		fmt.Sprintf(`{"prompt": %s, "n_keep": -1}`, longPrompt), // keeps all 150: nothing can go
	} {
		if status, b := shift.post(t, "/completion", "", []byte(bad)); status != 400 {
			t.Errorf("%s: %d %s, want 400", bad, status, b)
		}
	}

	// OpenAI routes: max_tokens past the context is allowed with the
	// flag, refused without.
	chat := `{"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0}`
	if status, b := shift.post(t, "/v1/completions", "", []byte(chat)); status != 200 || !strings.Contains(string(b), `"completion_tokens":100`) {
		t.Errorf("/v1/completions of 100 tokens with --context-shift: %d %s", status, b)
	}
	if status, _ := plain.post(t, "/v1/completions", "", []byte(chat)); status != 400 {
		t.Errorf("/v1/completions of 100 tokens in a context of %d: %d, want 400", ctx, status)
	}

	// A sliding-window model keeps rings: the flag needs --swa-full.
	gemma := filepath.Join(t.TempDir(), "gemma.gguf")
	if _, stderr, err := run(t, "synth", "--preset", "gemma2-9b", "--layers", "2", "--dim", "256", "--heads", "4", "--kv-heads", "2",
		"--head-dim", "64", "--ffn", "512", "--vocab", "512", "--window", "64", "--out", gemma); err != nil {
		t.Fatalf("synth: %v\n%s", err, stderr)
	}
	_, stderr, err := run(t, "serve", "-m", gemma, "-c", "4096", "--chunk", "64", "--port", "0", "--context-shift")
	if err == nil || !strings.Contains(stderr, "--swa-full") {
		t.Errorf("--context-shift on a sliding-window model: %v\n%s\nwant an error naming --swa-full", err, stderr)
	}
}
