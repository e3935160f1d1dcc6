package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"headinfer/engine/gguf"
)

// writeWithArch copies a model, renaming its architecture.
func writeWithArch(t *testing.T, src, dst, arch string) {
	rewriteModel(t, src, dst, func(kv []gguf.KV) []gguf.KV {
		for i := range kv {
			if kv[i].Key == "general.architecture" {
				kv[i].Value = arch
			}
		}
		return kv
	})
}

// TestBadInput checks that each kind of bad input gives a clear error,
// exit status 1, and no panic.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(modelsDir(t), "stories260K.gguf")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.gguf")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	notGGUF := filepath.Join(dir, "notgguf.gguf")
	os.WriteFile(notGGUF, []byte("this is not a model file at all"), 0o644)
	unknownArch := filepath.Join(dir, "arch.gguf")
	writeWithArch(t, good, unknownArch, "gptjx")

	long := strings.Repeat("once upon a time there was a dog. ", 40)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing model", []string{"generate", "-m", filepath.Join(dir, "none.gguf"), "-p", "hi"}, "no such file"},
		{"truncated model", []string{"generate", "-m", truncated, "-p", "hi"}, "malformed GGUF"},
		{"not a model", []string{"generate", "-m", notGGUF, "-p", "hi"}, "malformed GGUF"},
		{"unknown architecture", []string{"generate", "-m", unknownArch, "-p", "hi"}, `architecture "gptjx" is not supported`},
		{"prompt longer than context", []string{"generate", "-m", good, "-c", "64", "-p", long}, "context"},
		{"no prompt", []string{"generate", "-m", good}, "no prompt"},
		{"bad kv type", []string{"generate", "-m", good, "-p", "hi", "--kv-type", "q3"}, "KV cache type"},
		{"quantized KV of 8-value heads", []string{"generate", "-m", good, "-p", "hi", "--kv-type", "q8_0"}, "head size that is a multiple of 32; this model's is 8"},
		{"f32 keys with f16 values", []string{"plan", "-m", good, "--ctk", "f32", "--ctv", "f16"}, "f32 goes with f32 only"},
		{"host KV beyond --host-mem", []string{"plan", "-m", good, "--offload", "head", "--host-mem", "1KiB"}, "--host-mem allows 1.0 KiB"},
		{"negative temperature", []string{"generate", "-m", good, "-p", "hi", "--temp", "-1"}, "temperature"},
		{"zero tokens", []string{"generate", "-m", good, "-p", "hi", "-n", "0"}, "-n must be positive"},
		{"no such device", []string{"generate", "-m", good, "-p", "hi", "--device", "no-such-gpu"}, "no-such-gpu"},
		{"info on a truncated model", []string{"info", truncated}, "malformed GGUF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := run(t, c.args...)
			if err == nil {
				t.Fatalf("succeeded; want an error mentioning %q", c.want)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("panicked:\n%s", stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Fatalf("error %q does not mention %q", stderr, c.want)
			}
		})
	}
}
