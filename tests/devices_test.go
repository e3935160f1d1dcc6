package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestGenerateSplitDevices runs generate with the model split over the
// test device opened twice (--devices 0,0): its logits are those of one
// device byte for byte, resident and streamed, and a prompt cache saved
// by one loads into the other. Bad device lists are refused, naming the
// devices there are.
func TestGenerateSplitDevices(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	const prompt = "Lily and Tom went to the park to play with the big red ball"
	for _, extra := range [][]string{nil, {"--offload", "head", "--chunk", "5", "--decode-attn", "gpu"}} {
		one := generateCached(t, model, prompt, "", extra...)
		split := generateCached(t, model, prompt, "", append([]string{"--devices", "0,0", "--split", "2,3"}, extra...)...)
		if !bytes.Equal(one.logits, split.logits) || !slices.Equal(one.IDs, split.IDs) {
			t.Errorf("%v: split over two devices, the logits differ from one device's", extra)
		}
		cache := filepath.Join(t.TempDir(), "prompt.kv")
		generateCached(t, model, prompt, cache, append([]string{"--devices", "0,0"}, extra...)...)
		loaded := generateCached(t, model, prompt, cache, extra...)
		if !bytes.Equal(one.logits, loaded.logits) || loaded.Timings.CachedTokens == 0 {
			t.Errorf("%v: a prompt cache saved split and loaded on one device: %d tokens cached, logits equal %v",
				extra, loaded.Timings.CachedTokens, bytes.Equal(one.logits, loaded.logits))
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--devices", "0,9"}, []string{"no device with index 9", "devices: 0:"}},
		{[]string{"--devices", "0,0", "--split", "1,0"}, []string{"device 1", "positive share"}},
		{[]string{"--devices", "0,0", "--split", "1,1,1"}, []string{"3 shares for 2 devices"}},
		{[]string{"--devices", "0,0", "--split", "a,b"}, []string{"--split"}},
		{[]string{"--devices", "0,0", "--gpu-mem", "1GiB,1KiB"}, []string{"device 1", "none of the model's 5 layers", "--split"}},
		{[]string{"--devices", "0,0", "--split", "2,3", "--gpu-mem", "1GiB,1KiB"}, []string{"device 1", "budget"}},
	} {
		args := append([]string{"generate", "-m", model, "-p", "Hi", "-n", "2", "-c", "128"}, tc.args...)
		_, stderr, err := run(t, args...)
		if err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) || strings.Contains(stderr, "panic") {
				t.Errorf("%v: stderr does not say %q:\n%s", tc.args, w, stderr)
			}
		}
	}
}

// TestServerSplitDevices serves a model split over two devices: requests
// running at once (batched decode steps across both devices) get the
// tokens a one-device server gives, and a slot saved and restored keeps
// its tokens.
func TestServerSplitDevices(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	dir := t.TempDir()
	common := []string{"-m", model, "-c", "256", "-np", "3", "--offload", "head", "--decode-attn", "cpu"}
	one := startServer(t, common...)
	split := startServer(t, append(common, "--devices", "0,0", "--split", "3,2", "--slot-save-path", dir)...)

	prompts := []string{"Once upon a time", "The little dog", "Lily saw a big red ball and"}
	complete := func(p *serverProc) [][]int32 {
		out := make([][]int32, len(prompts))
		var wg sync.WaitGroup
		for i, prompt := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"prompt": %q, "n_predict": 24, "temperature": 0, "ignore_eos": true, "return_tokens": true}`, prompt)
				status, b := p.post(t, "/completion", "", []byte(body))
				var a struct {
					Tokens []int32 `json:"tokens"`
				}
				if status != 200 || json.Unmarshal(b, &a) != nil {
					t.Errorf("completion: %d %s", status, b)
				}
				out[i] = a.Tokens
			}()
		}
		wg.Wait()
		return out
	}
	want, got := complete(one), complete(split)
	for i := range prompts {
		if len(want[i]) != 24 || !slices.Equal(want[i], got[i]) {
			t.Errorf("prompt %d: split server gave %v, one device %v", i, got[i], want[i])
		}
	}

	status, body := split.get(t, "/slots", "")
	var slots []struct {
		ID      int `json:"id"`
		NTokens int `json:"n_tokens"`
	}
	if status != 200 || json.Unmarshal(body, &slots) != nil || len(slots) != 3 {
		t.Fatalf("/slots: %d %s", status, body)
	}
	held := -1
	for _, s := range slots {
		if s.NTokens > 0 {
			held = s.ID
		}
	}
	if held < 0 {
		t.Fatalf("no slot holds tokens: %s", body)
	}
	var saved, restored struct {
		NSaved    int `json:"n_saved"`
		NRestored int `json:"n_restored"`
	}
	status, body = split.post(t, fmt.Sprintf("/slots/%d?action=save", held), "", []byte(`{"filename": "s.bin"}`))
	if status != 200 || json.Unmarshal(body, &saved) != nil || saved.NSaved == 0 {
		t.Fatalf("save slot %d: %d %s", held, status, body)
	}
	other := (held + 1) % 3
	status, body = split.post(t, fmt.Sprintf("/slots/%d?action=restore", other), "", []byte(`{"filename": "s.bin"}`))
	if status != 200 || json.Unmarshal(body, &restored) != nil || restored.NRestored != saved.NSaved {
		t.Fatalf("restore into slot %d: %d %s, want %d tokens", other, status, body, saved.NSaved)
	}
}
