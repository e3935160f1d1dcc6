package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type generateOutput struct {
	PromptIDs []int32 `json:"prompt_ids"`
	IDs       []int32 `json:"ids"`
	Text      string  `json:"text"`
	Timings   struct {
		PrefillTokens int     `json:"prefill_tokens"`
		PrefillMS     float64 `json:"prefill_ms"`
		DecodeTokens  int     `json:"decode_tokens"`
		DecodeMS      float64 `json:"decode_ms"`
	} `json:"timings"`
	Memory struct {
		DeviceBytesPeak uint64 `json:"device_bytes_peak"`
	} `json:"memory"`
}

// TestGreedyMatchesReference checks `generate --temp 0 --json` against the
// ids llama.cpp produced for the same prompt.
func TestGreedyMatchesReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(modelsDir(t), "reference_greedy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var refs map[string]json.RawMessage
	if err := json.Unmarshal(b, &refs); err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		t.Run(model, func(t *testing.T) {
			var ref struct {
				Prompt    string  `json:"prompt"`
				PromptIDs []int32 `json:"prompt_ids"`
				Greedy    []int32 `json:"greedy_ids"`
				Text      string  `json:"text"`
			}
			if err := json.Unmarshal(refs[model], &ref); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := run(t, "generate", "-m", filepath.Join(modelsDir(t), model),
				"-p", ref.Prompt, "-n", "64", "--temp", "0", "--json")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			var out generateOutput
			if err := json.Unmarshal([]byte(stdout), &out); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, stdout)
			}
			if !slices.Equal(out.PromptIDs, ref.PromptIDs) {
				t.Errorf("prompt ids %v, want %v", out.PromptIDs, ref.PromptIDs)
			}
			if !slices.Equal(out.IDs, ref.Greedy) {
				t.Errorf("generated ids\n got %v\nwant %v", out.IDs, ref.Greedy)
			}
			if model == "stories260K.gguf" && ref.Prompt+out.Text != ref.Text {
				t.Errorf("text %q, want %q", ref.Prompt+out.Text, ref.Text)
			}
			if out.Timings.PrefillTokens != len(ref.PromptIDs) || out.Timings.DecodeTokens != len(ref.Greedy)-1 {
				t.Errorf("timings count %d prefill and %d decode tokens", out.Timings.PrefillTokens, out.Timings.DecodeTokens)
			}
			if out.Memory.DeviceBytesPeak == 0 {
				t.Errorf("no device memory reported")
			}
		})
	}
}

// TestStreamedTextMatchesJSON checks that the text streamed to stdout is the
// text of --json.
func TestStreamedTextMatchesJSON(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	args := []string{"generate", "-m", model, "-p", "Tom had a red", "-n", "40", "--temp", "0"}
	stream, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "tok/s") {
		t.Errorf("no stats line on stderr: %q", stderr)
	}
	js, _, err := run(t, append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var out generateOutput
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatal(err)
	}
	if stream != out.Text+"\n" {
		t.Errorf("streamed %q, JSON text %q", stream, out.Text)
	}
}

// TestSeededSamplingIsRepeatable checks that a seed fixes the sample.
func TestSeededSamplingIsRepeatable(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	args := []string{"generate", "-m", model, "-p", "Once upon a time", "-n", "30", "--temp", "1.0", "--seed", "42", "--json"}
	a, stderr, err := run(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	b, _, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var oa, ob generateOutput
	json.Unmarshal([]byte(a), &oa)
	json.Unmarshal([]byte(b), &ob)
	if len(oa.IDs) == 0 || !slices.Equal(oa.IDs, ob.IDs) {
		t.Errorf("same seed gave %v and %v", oa.IDs, ob.IDs)
	}
}
