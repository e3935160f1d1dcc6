package tests

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
)

// TestGenerateSpecialTokens checks that `generate -p` reads control tokens
// written in the prompt (the operator means them) and that --no-special
// reads them as text.
func TestGenerateSpecialTokens(t *testing.T) {
	model := filepath.Join(modelsDir(t), "llama-2-tiny-random.gguf")
	for _, c := range []struct {
		flag string
		eos  bool
	}{{"", true}, {"--no-special", false}} {
		args := []string{"generate", "-m", model, "-p", "Hello</s>", "-n", "1", "--temp", "0", "--json"}
		if c.flag != "" {
			args = append(args, c.flag)
		}
		stdout, stderr, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		var out generateOutput
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, stdout)
		}
		// Llama 2: BOS 1, "▁Hello" 15043, "</s>" 2.
		if got := slices.Contains(out.PromptIDs, 2); got != c.eos || out.PromptIDs[1] != 15043 {
			t.Errorf("generate %s: prompt ids %v, want </s> (2) read as a token: %v", c.flag, out.PromptIDs, c.eos)
		}
	}
}
