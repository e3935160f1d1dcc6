package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"headinfer/vk"
)

// faultAt is the submission the device fails at in these tests. A step is
// one submission on lavapipe and loading submits nothing, so a request
// gets through its prefill and some 18 decode steps first.
const faultAt = "20"

// health reads GET /health.
func (p *serverProc) health(t *testing.T) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(p.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	return resp.StatusCode, body
}

// checkFailed checks what a server whose device failed for good answers:
// 503 model_unavailable, /health 503 with the reason, the gauge.
func checkFailed(t *testing.T, srv *serverProc) {
	t.Helper()
	status, body := srv.post(t, "/v1/completions", "", []byte(`{"prompt": "Once", "max_tokens": 4}`))
	checkError(t, "completion after the failure", status, body, http.StatusServiceUnavailable, "server_error", "model_unavailable")
	status, body = srv.post(t, "/v1/chat/completions", "", []byte(`{"messages": [{"role": "user", "content": "hi"}]}`))
	checkError(t, "chat after the failure", status, body, http.StatusServiceUnavailable, "server_error", "model_unavailable")
	code, h := srv.health(t)
	if code != http.StatusServiceUnavailable || h["status"] != "failed" || !strings.Contains(h["reason"], "VK_ERROR_DEVICE_LOST") {
		t.Errorf("GET /health after the failure: %d %v", code, h)
	}
	if f, r := srv.metric(t, "headinfer_device_failed"), srv.metric(t, "headinfer_model_ready"); f != 1 || r != 0 {
		t.Errorf("metrics after the failure: headinfer_device_failed %v, headinfer_model_ready %v", f, r)
	}
	if !strings.Contains(srv.log.String(), "the device failed") {
		t.Errorf("the log does not say that the device failed:\n%s", srv.log.String())
	}
}

// TestServerDeviceFailure makes the device fail in the middle of a
// stream (vk's fault injection) and checks that the stream ends with an
// error event, that the server then answers 503 with the reason, and that
// it says so in /health, /metrics and its log.
func TestServerDeviceFailure(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	full, _ := expected(t, model, "Once", 100)
	srv := startServerEnv(t, []string{vk.FaultSubmitEnv + "=" + faultAt}, "-m", model)
	s, err := srv.client("", nil).CreateCompletionStream(context.Background(),
		openai.CompletionRequest{Prompt: "Once", MaxTokens: 100, Temperature: greedy, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readStream(s)
	s.Close()
	if err == nil || !strings.Contains(err.Error(), "device failed") {
		t.Fatalf("a stream whose device fails ended with %v", err)
	}
	if got.text == "" || !strings.HasPrefix(full, got.text) || got.finish != "" {
		t.Errorf("the stream before the failure: %q (finish %q), want a prefix of %q", got.text, got.finish, full)
	}
	checkFailed(t, srv)
}

// TestServerReloadOnFailure checks --reload-on-failure: after the first
// failure (a whole answer, 500) the model is loaded again and serves
// correctly; after the second the server gives up.
func TestServerReloadOnFailure(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	want, _ := expected(t, model, "The cat", 8)
	srv := startServerEnv(t, []string{vk.FaultSubmitEnv + "=" + faultAt}, "-m", model, "--reload-on-failure")
	long := []byte(`{"prompt": "Once", "max_tokens": 100, "temperature": 0}`)
	status, body := srv.post(t, "/v1/completions", "", long)
	checkError(t, "the request the device fails in", status, body, http.StatusInternalServerError, "server_error", "device_failed")

	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, h := srv.health(t)
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || (h["status"] != "reloading" && h["status"] != "loading") {
			t.Fatalf("GET /health while reloading: %d %v", code, h)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the model was not reloaded within 2 minutes:\n%s", srv.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, f := srv.metric(t, "headinfer_model_reloads_total"), srv.metric(t, "headinfer_device_failed"); n != 1 || f != 0 {
		t.Errorf("after the reload: headinfer_model_reloads_total %v, headinfer_device_failed %v", n, f)
	}
	r, err := srv.client("", nil).CreateCompletion(context.Background(), openai.CompletionRequest{Prompt: "The cat", MaxTokens: 8, Temperature: greedy})
	if err != nil || r.Choices[0].Text != want {
		t.Fatalf("after the reload: %v %+v, want %q", err, r, want)
	}
	// The new device fails too (the fault counts its own submissions).
	status, body = srv.post(t, "/v1/completions", "", long)
	checkError(t, "the second failure", status, body, http.StatusInternalServerError, "server_error", "device_failed")
	checkFailed(t, srv)
	if n := srv.metric(t, "headinfer_model_reloads_total"); n != 1 {
		t.Errorf("reloads after the second failure: %v, want 1", n)
	}
	if log := srv.log.String(); !strings.Contains(log, "model reloaded") {
		t.Errorf("the log does not tell of the reload:\n%s", log)
	}
}

// TestGenerateDeviceFailure checks that `generate` fails with the device
// error rather than printing a partial answer as if it were whole.
func TestGenerateDeviceFailure(t *testing.T) {
	cmd := exec.Command(binary, "generate", "-m", filepath.Join(modelsDir(t), "stories260K.gguf"), "-p", "Once", "-n", "50", "--temp", "0")
	cmd.Env = append(cmd.Environ(), vk.FaultSubmitEnv+"=5")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "VK_ERROR_DEVICE_LOST") {
		t.Errorf("generate on a device that fails: %v\n%s", err, out)
	}
}
