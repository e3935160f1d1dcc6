package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestBeforeLoad checks the answers of a server whose model is not loaded
// yet, and the routing and key checks that need no model.
func TestBeforeLoad(t *testing.T) {
	s := New(Options{ModelPath: "/models/tiny.gguf", APIKey: "k", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	pub := New(Options{ModelPath: "/models/tiny.gguf", APIKey: "k", MetricsPublic: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ots := httptest.NewServer(pub.Handler())
	defer ots.Close()

	cases := []struct {
		method, path, key, body string
		status                  int
		code                    string
		public                  bool // sent to the server with MetricsPublic
	}{
		{"GET", "/health", "", "", 503, "", false},
		{"POST", "/v1/completions", "k", `{"prompt":"x"}`, 503, "model_loading", false},
		{"POST", "/v1/chat/completions", "k", `{"messages":[]}`, 503, "model_loading", false},
		{"POST", "/v1/completions", "", `{"prompt":"x"}`, 401, "invalid_api_key", false},
		{"POST", "/v1/completions", "wrong", `{"prompt":"x"}`, 401, "invalid_api_key", false},
		{"POST", "/completion", "k", `{"prompt":"x"}`, 503, "model_loading", false},
		{"POST", "/tokenize", "k", `{"content":"x"}`, 503, "model_loading", false},
		{"POST", "/detokenize", "k", `{"tokens":[1]}`, 503, "model_loading", false},
		{"GET", "/props", "k", "", 503, "model_loading", false},
		{"POST", "/tokenize", "", `{"content":"x"}`, 401, "invalid_api_key", false},
		{"GET", "/props", "", "", 401, "invalid_api_key", false},
		{"GET", "/tokenize", "k", "", 405, "method_not_allowed", false},
		{"GET", "/v1/models", "k", "", 200, "", false},
		{"GET", "/v1/models/tiny", "k", "", 200, "", false},
		{"GET", "/v1/models/tiny.gguf", "k", "", 200, "", false},
		{"GET", "/v1/models/other", "k", "", 404, "model_not_found", false},
		{"GET", "/v1/completions", "k", "", 405, "method_not_allowed", false},
		{"GET", "/nowhere", "", "", 401, "invalid_api_key", false},
		{"GET", "/metrics", "", "", 401, "invalid_api_key", false},
		{"GET", "/metrics", "k", "", 200, "", false},
		{"GET", "/v1/models", "", "", 401, "invalid_api_key", false},
		{"POST", "/slots/0?action=save", "", `{"filename":"a"}`, 401, "invalid_api_key", false},
		{"GET", "/nowhere", "k", "", 404, "not_found", false},
		{"POST", "/health", "", "", 405, "method_not_allowed", false},
		{"GET", "/metrics", "", "", 200, "", true},
		{"GET", "/v1/models", "", "", 401, "invalid_api_key", true},
		{"GET", "/health", "", "", 503, "", true},
	}
	for _, c := range cases {
		url := ts.URL
		if c.public {
			url = ots.URL
		}
		req, _ := http.NewRequest(c.method, url+c.path, strings.NewReader(c.body))
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: status %d, want %d (%s)", c.method, c.path, resp.StatusCode, c.status, b)
			continue
		}
		if c.code != "" {
			var eb struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code != c.code || eb.Error.Message == "" || eb.Error.Type == "" {
				t.Errorf("%s %s: body %s, want error code %q", c.method, c.path, b, c.code)
			}
		}
		if c.path == "/health" && c.method == "GET" && !strings.Contains(string(b), `"loading"`) {
			t.Errorf("health while loading: %s", b)
		}
		if c.path == "/metrics" && c.status == 200 && (!strings.Contains(string(b), "go_goroutines ") || (!c.public && !strings.Contains(string(b), `headinfer_requests_total{route="/v1/completions",status="401"} 2`))) {
			t.Errorf("metrics:\n%s", b)
		}
	}
}
