package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cacheRun is one `generate --json` with its logits file and stderr.
type cacheRun struct {
	PromptIDs []int32 `json:"prompt_ids"`
	IDs       []int32 `json:"ids"`
	Timings   struct {
		PrefillTokens int `json:"prefill_tokens"`
		CachedTokens  int `json:"cached_tokens"`
	} `json:"timings"`
	logits []byte
	stderr string
}

// generateCached runs generate greedily on prompt, with --prompt-cache
// cache unless it is "".
func generateCached(t *testing.T, model, prompt, cache string, extra ...string) cacheRun {
	t.Helper()
	logits := filepath.Join(t.TempDir(), "logits.f32")
	args := append([]string{"generate", "--json", "-m", model, "-p", prompt, "-n", "24", "--temp", "0", "-c", "256",
		"--logits-out", logits}, extra...)
	if cache != "" {
		args = append(args, "--prompt-cache", cache)
	}
	stdout, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("generate %v: %v\n%s", args, err, stderr)
	}
	var r cacheRun
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if r.logits, err = os.ReadFile(logits); err != nil {
		t.Fatal(err)
	}
	if len(r.logits) == 0 {
		t.Fatal("empty logits file")
	}
	r.stderr = stderr
	return r
}

// TestPromptCache runs `generate --prompt-cache` as llama.cpp users do:
// the first run saves the prompt's KV, later runs with the same prompt or
// a longer one load it and prefill only the rest, and every run's logits
// equal those of the run without the cache byte for byte. A damaged file
// or another model's is reported and the prompt prefilled whole.
func TestPromptCache(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const prompt = "Lily and Tom went to the park to play with the big red ball"
	const longer = prompt + ". They ran and laughed all day"
	cache := filepath.Join(t.TempDir(), "prompt.kv")
	for _, extra := range [][]string{nil, {"--offload", "head", "--chunk", "5"}} {
		os.Remove(cache)
		plain := generateCached(t, model, prompt, "", extra...)
		plainLonger := generateCached(t, model, longer, "", extra...)
		n := len(plain.PromptIDs)

		same := func(what string, want, got cacheRun, cached int) {
			t.Helper()
			if !bytes.Equal(want.logits, got.logits) {
				t.Errorf("%v %s: the logits differ from the run without the cache", extra, what)
			}
			if got.Timings.CachedTokens != cached || got.Timings.PrefillTokens != len(got.PromptIDs)-cached {
				t.Errorf("%v %s: %d cached and %d prefilled of %d prompt tokens, want %d cached\n%s",
					extra, what, got.Timings.CachedTokens, got.Timings.PrefillTokens, len(got.PromptIDs), cached, got.stderr)
			}
		}
		same("first run", plain, generateCached(t, model, prompt, cache, extra...), 0)
		if _, err := os.Stat(cache); err != nil {
			t.Fatalf("no cache file after the first run: %v", err)
		}
		same("same prompt", plain, generateCached(t, model, prompt, cache, extra...), n-1)
		same("longer prompt", plainLonger, generateCached(t, model, longer, cache, extra...), n)
		// The cache now holds the longer prompt; the shorter one is its prefix.
		same("shorter prompt", plain, generateCached(t, model, prompt, cache, extra...), n-1)

		b, err := os.ReadFile(cache)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cache, b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		cut := generateCached(t, model, longer, cache, extra...)
		same("truncated cache", plainLonger, cut, 0)
		if !strings.Contains(cut.stderr, "--prompt-cache not used") || !strings.Contains(cut.stderr, "truncated") {
			t.Errorf("truncated cache: stderr %q", cut.stderr)
		}
		// That run saved a good cache again.
		same("after the truncated cache", plainLonger, generateCached(t, model, longer, cache, extra...), len(plainLonger.PromptIDs)-1)
	}

	tiny := filepath.Join(modelsDir(t), "llama-2-tiny-random.gguf")
	plainTiny := generateCached(t, tiny, prompt, "")
	other := generateCached(t, tiny, prompt, cache)
	if !bytes.Equal(plainTiny.logits, other.logits) || other.Timings.CachedTokens != 0 {
		t.Errorf("another model's cache: logits equal %v, %d cached tokens", bytes.Equal(plainTiny.logits, other.logits), other.Timings.CachedTokens)
	}
	if !strings.Contains(other.stderr, "another model") {
		t.Errorf("another model's cache: stderr %q", other.stderr)
	}
}

// TestPromptCacheLink points --prompt-cache at a symbolic link to another
// file: the run says the cache is not used without quoting the file, and
// its save replaces the link with a snapshot, leaving the file alone.
func TestPromptCacheLink(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const secretText = "SECRET-first-line: root:x:0:0:root\n"
	secret := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "prompt.kv")
	if err := os.Symlink(secret, cache); err != nil {
		t.Fatal(err)
	}
	r := generateCached(t, model, "Lily and Tom went to the park", cache)
	if !strings.Contains(r.stderr, "--prompt-cache not used") || !strings.Contains(r.stderr, "not a regular file") || r.Timings.CachedTokens != 0 {
		t.Errorf("a link as the cache: %d cached tokens, stderr %q", r.Timings.CachedTokens, r.stderr)
	}
	if strings.Contains(r.stderr, "SECRET") || strings.Contains(r.stderr, "root:") {
		t.Errorf("the message quotes the link's target: %q", r.stderr)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != secretText {
		t.Errorf("the save wrote through the link: %q %v", b, err)
	}
	if fi, err := os.Lstat(cache); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("after the save: %v %v, want the link replaced by a snapshot", fi, err)
	}
}
