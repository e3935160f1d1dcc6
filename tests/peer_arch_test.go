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

// peerDir is where llama.cpp's Node binding is installed
// (shared/peers/llamacpp_node/setup.sh): HEADINFER_PEER, else /tmp/peer.
func peerDir(t *testing.T) string {
	dir := os.Getenv("HEADINFER_PEER")
	if dir == "" {
		dir = "/tmp/peer"
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-llama-cpp")); err != nil {
		t.Skipf("llama.cpp's Node binding is not installed in %s (run shared/peers/llamacpp_node/setup.sh, or set HEADINFER_PEER)", dir)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	return dir
}

// TestArchitecturesMatchLlamaCpp writes a 2-layer Q8_0 model of each
// architecture's real geometry (vocabulary cut to 1000, windows to 16)
// and compares it with llama.cpp's CPU backend through bench/probs.mjs:
// 24 greedy steps after a prompt longer than the windows (at a context of
// 2048, where the windowed layers' slots are rings), llama.cpp fed
// headinfer's tokens so that both see the same text. At every step the
// probabilities of the 32 most likely tokens of either engine must agree
// within 5%, and the greedy tokens must be equal wherever llama.cpp's two
// best are further apart than that agreement (probs.mjs's "violations").
//
// gemma3 gets an output matrix of its own: with random tied embeddings a
// model echoes its input (the token's own embedding dominates its
// logits, probability 1) and the comparison would compare nothing.
// gemma2's soft-cap keeps its logits apart, and llama.cpp loads gemma2
// only tied.
func TestArchitecturesMatchLlamaCpp(t *testing.T) {
	peer := peerDir(t)
	dir := t.TempDir()
	var models []string
	for _, preset := range []string{"llama3-8b", "qwen2-7b", "qwen3-8b", "gemma2-9b", "gemma3-4b", "phi3-mini"} {
		path := filepath.Join(dir, preset+".gguf")
		args := []string{"synth", "--preset", preset, "--layers", "2", "--vocab", "1000", "--ctx", "2048", "--type", "q8_0",
			"--seed", "7", "--out", path}
		if strings.HasPrefix(preset, "gemma") {
			args = append(args, "--window", "16")
		}
		if preset == "gemma3-4b" {
			args = append(args, "--tied=false")
		}
		if _, stderr, err := run(t, args...); err != nil {
			t.Fatalf("synth %s: %v\n%s", preset, err, stderr)
		}
		models = append(models, path)
	}
	prompt := "Once upon a time, there was a little girl named Lily who loved to play outside in the park with her friends."
	results := runProbs(t, peer, append([]string{"--steps", "24", "--ctx", "2048", "--prompt", prompt}, models...)...)
	for _, r := range results {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Model, r.Error)
			continue
		}
		s := r.Summary
		t.Logf("%s: %d prompt ids, %d steps, greedy ids equal at %d, largest relative difference %.3g, %d steps decided, %d violations",
			r.Model, len(r.PromptIDs), s.Steps, s.Same, s.MaxRel, s.Decided, s.Violations)
		if len(r.PromptIDs) <= 16 || s.Steps != 24 {
			t.Errorf("%s: %d prompt ids and %d steps: the prompt must be longer than the window, and 24 steps run", r.Model, len(r.PromptIDs), s.Steps)
		}
		if s.MaxRel > 0.05 || s.Violations > 0 {
			t.Errorf("%s: probabilities differ by up to %.3g (limit 0.05), %d greedy ids differ where llama.cpp's margin exceeds that", r.Model, s.MaxRel, s.Violations)
		}
	}
	if len(results) != len(models) {
		t.Fatalf("probs.mjs reported %d models of %d", len(results), len(models))
	}
}

// probsResult is one line of bench/probs.mjs --json: a model against one
// llama.cpp backend.
type probsResult struct {
	Model     string
	Error     string
	PromptIDs []int `json:"promptIds"`
	Summary   probsSummary
}

type probsSummary struct {
	Steps, Same, Decided, Violations int
	MaxRel                           float64
}

// runProbs runs bench/probs.mjs --json with args in the peer's folder,
// against the built binary, and reads its lines.
func runProbs(t *testing.T, peer string, args ...string) []probsResult {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "bench", "probs.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", append([]string{script, "--json"}, args...)...)
	cmd.Dir = peer
	cmd.Env = append(os.Environ(), "HEADINFER="+binary)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probs.mjs: %v\n%s", err, out)
	}
	var results []probsResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r probsResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("probs.mjs printed %q: %v", sc.Text(), err)
		}
		results = append(results, r)
	}
	return results
}
