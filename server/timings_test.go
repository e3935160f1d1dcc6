package server

import (
	"encoding/json"
	"testing"
)

// TestTimings checks llama-server's timings on OpenAI answers: on a
// whole answer, and on the stream event that ends the choice, for chat
// and completions.
func TestTimings(t *testing.T) {
	s := fakeServer(t, Options{}, testVocabs()[0], 256, nil)
	type answer struct {
		Choices []struct {
			FinishReason *string `json:"finish_reason"`
		}
		Timings *struct {
			PredictedN *int `json:"predicted_n"`
		}
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}]`},
		{"/v1/completions", `{"prompt": "hi"`},
	} {
		status, body := post(t, s, c.path, c.body+`}`)
		var whole answer
		if err := json.Unmarshal([]byte(body), &whole); err != nil || status != 200 || whole.Timings == nil || whole.Timings.PredictedN == nil {
			t.Errorf("%s: %d %s, want timings", c.path, status, body)
		}
		_, body = post(t, s, c.path, c.body+`, "stream": true}`)
		ends, timed := 0, 0
		for _, ev := range sseEvents(t, body) {
			if ev == "[DONE]" {
				continue
			}
			var a answer
			if err := json.Unmarshal([]byte(ev), &a); err != nil {
				t.Fatal(err)
			}
			if len(a.Choices) > 0 && a.Choices[0].FinishReason != nil {
				ends++
				if a.Timings != nil {
					timed++
				}
			} else if a.Timings != nil {
				t.Errorf("%s: timings on an event that does not end the choice: %s", c.path, ev)
			}
		}
		if ends != 1 || timed != 1 {
			t.Errorf("%s stream: %d ending events, %d with timings; want 1 and 1:\n%s", c.path, ends, timed, body)
		}
	}
}
