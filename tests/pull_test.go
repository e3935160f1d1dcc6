package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"headinfer/hub/hubtest"
)

// runEnv runs the binary with extra environment variables.
func runEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestPullAndGenerate pulls a model from a stand-in hub, then runs
// generate, plan and info on OWNER/REPO:QUANT references.
func TestPullAndGenerate(t *testing.T) {
	local := filepath.Join(modelsDir(t), "stories260K.gguf")
	data, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	srv := hubtest.NewServer()
	defer srv.Close()
	srv.Add("acme/stories-GGUF", &hubtest.Repo{Files: map[string][]byte{
		"README.md": []byte("# stories"), "stories260K-F32.gguf": data, "stories260K-Q8_0.gguf": []byte("not pulled"),
	}})
	dir := t.TempDir()
	env := []string{"HF_ENDPOINT=" + srv.URL, "HEADINFER_MODELS=" + dir, "HF_TOKEN="}

	stdout, stderr, err := runEnv(t, env, "pull", "acme/stories-GGUF:f32")
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, stderr)
	}
	path := strings.TrimSpace(stdout)
	if want := filepath.Join(dir, "acme", "stories-GGUF", "stories260K-F32.gguf"); path != want {
		t.Errorf("pull printed %q, want %q", path, want)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pulled file differs from the served one (%v)", err)
	}

	args := []string{"-p", "Tom had a red", "-n", "16", "--temp", "0"}
	want := generateJSON(t, append([]string{"-m", local}, args...)...)
	stdout, stderr, err = runEnv(t, env, append([]string{"generate", "--json", "-m", "acme/stories-GGUF:F32"}, args...)...)
	if err != nil {
		t.Fatalf("generate -m OWNER/REPO:QUANT: %v\n%s", err, stderr)
	}
	var got offloadOutput
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if len(got.IDs) == 0 || !slices.Equal(got.IDs, want.IDs) {
		t.Errorf("generate on the pulled model gave %v, on the local file %v", got.IDs, want.IDs)
	}
	if _, stderr, err := runEnv(t, env, "plan", "-m", "acme/stories-GGUF:F32"); err != nil {
		t.Errorf("plan -m OWNER/REPO:QUANT: %v\n%s", err, stderr)
	}
	if r := srv.Ranges(); len(r) != 1 {
		t.Errorf("the file was downloaded %d times, want once: %q", len(r), r)
	}

	_, stderr, err = runEnv(t, env, "info", "acme/stories-GGUF:Q4_K_M")
	if err == nil || !strings.Contains(stderr, "no GGUF file for Q4_K_M") || !strings.Contains(stderr, "F32, Q8_0") {
		t.Errorf("info on a missing quant: %v, stderr %q; want an error listing F32, Q8_0", err, stderr)
	}
	_, stderr, err = runEnv(t, env, "pull", "nobody/nothing")
	if err == nil || !strings.Contains(stderr, "not found, or is private") {
		t.Errorf("pull of an unknown repository: %v, stderr %q", err, stderr)
	}
}

// TestNoProgressOffTerminal runs the work that draws progress bars on a
// terminal (a prefill of several chunks, a bench context sweep) with
// stderr on a pipe: nothing but the usual lines may appear there.
func TestNoProgressOffTerminal(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	prompt := strings.Repeat("Lily and Tom went to the park. ", 8)
	_, stderr, err := run(t, "generate", "-m", model, "-p", prompt, "-n", "4", "--temp", "0", "--chunk", "8", "-c", "256")
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, stderr)
	}
	check := func(what, stderr string) {
		for _, bar := range []string{"\r", "prefill chunk", "loading weights", "runs", "%|"} {
			if strings.Contains(stderr, bar) {
				t.Errorf("%s wrote %q to a non-terminal stderr: %q", what, bar, stderr)
			}
		}
	}
	check("generate", stderr)
	stdout, stderr, err := run(t, "bench", "context", "-m", model, "--ctx", "128,256", "--offload", "none", "--decode", "2", "--chunk", "32")
	if err != nil {
		t.Fatalf("bench context: %v\n%s", err, stderr)
	}
	check("bench context", stderr)
	if !strings.Contains(stderr, "ctx 256, offload none: prefill") || !strings.Contains(stdout, "| 256 | none |") {
		t.Errorf("bench context output changed: stdout %q, stderr %q", stdout, stderr)
	}
}
