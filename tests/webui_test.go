package tests

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// browser drives headless Chromium over the DevTools protocol on a pipe
// (--remote-debugging-pipe: commands on its fd 3, answers on its fd 4,
// each a JSON message ended by a NUL byte), attached to one page.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	in      *os.File // to Chromium
	mu      sync.Mutex
	next    int
	waiting map[int]chan json.RawMessage
	session string
}

// startBrowser starts Chromium with one page at url.
func startBrowser(t *testing.T, exe, url string) *browser {
	t.Helper()
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	profile, err := os.MkdirTemp("", "headinfer-browser-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--user-data-dir="+profile, "about:blank")
	cmd.ExtraFiles = []*os.File{cmdR, outW}               // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helper processes too are killed at the end
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmdR.Close()
	outW.Close()
	b := &browser{t: t, cmd: cmd, in: cmdW, waiting: map[int]chan json.RawMessage{}}
	t.Cleanup(func() {
		cmdW.Close()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		os.RemoveAll(profile) // best effort: a helper may still be exiting
	})
	go func() {
		r := bufio.NewReader(outR)
		for {
			msg, err := r.ReadBytes(0)
			if err != nil {
				return
			}
			var m struct {
				ID     int             `json:"id"`
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
				continue // an event
			}
			b.mu.Lock()
			ch := b.waiting[m.ID]
			delete(b.waiting, m.ID)
			b.mu.Unlock()
			if ch != nil {
				if m.Error != nil {
					ch <- m.Error
				} else {
					ch <- m.Result
				}
				close(ch)
			}
		}
	}()
	var target struct{ TargetID string }
	b.call("", "Target.createTarget", map[string]any{"url": url}, &target)
	var attached struct{ SessionID string }
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	return b
}

// call sends one command (to the page's session unless session is "")
// and decodes its result into out.
func (b *browser) call(session, method string, params any, out any) {
	b.t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan json.RawMessage, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	if _, err := b.in.Write(append(mustJSON(msg), 0)); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	select {
	case res := <-ch:
		if out != nil {
			if err := json.Unmarshal(res, out); err != nil {
				b.t.Fatalf("%s: %s: %v", method, res, err)
			}
		}
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s: no answer from the browser", method)
	}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	b.call(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if r.ExceptionDetails != nil {
		b.t.Fatalf("%s: %v", expr, r.ExceptionDetails)
	}
	return string(r.Result.Value)
}

// waitFor polls expr until it is true.
func (b *browser) waitFor(what, expr string, limit time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	for b.eval(expr) != "true" {
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// typeText types text into the focused element and presses Enter.
func (b *browser) typeText(text string) {
	b.t.Helper()
	b.call(b.session, "Input.insertText", map[string]any{"text": text}, nil)
	for _, typ := range []string{"keyDown", "keyUp"} {
		b.call(b.session, "Input.dispatchKeyEvent", map[string]any{"type": typ, "key": "Enter", "code": "Enter",
			"windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13, "text": "\r"}, nil)
	}
}

// TestWebUI opens the chat page in headless Chromium, types a message,
// and watches the reply stream in: the text grows over several reads
// before the stream ends, it is what the model generates for the same
// messages through the API, and the side panel shows where the KV cache
// lives. A second message is stopped halfway with the Stop button.
// With HEADINFER_SCREENSHOT=FILE it also saves a screenshot.
func TestWebUI(t *testing.T) {
	exe := ""
	for _, name := range []string{"chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		t.Skip("no Chromium (apt-get install chromium-headless-shell; .ci/run installs it)")
	}
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	srv := startServer(t, "-m", model, "-c", "512", "--offload", "head", "--temp", "0")
	b := startBrowser(t, exe, srv.url+"/")
	b.waitFor("the page reads /props", `(document.getElementById("kv")?.textContent ?? "").includes("host KV")`, 30*time.Second)

	b.eval(`document.getElementById("temperature").value = "0"`)
	b.eval(`document.getElementById("max_tokens").value = "120"`)
	b.eval(`document.getElementById("input").focus()`)
	b.typeText("Tell me about a dog.")
	reply := `(() => { const m = document.querySelectorAll(".msg.assistant .text"); return m.length ? m[m.length-1].textContent : ""; })()`
	seen := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for b.eval(`document.body.dataset.done === "1"`) != "true" {
		seen[b.eval(reply)] = true
		if time.Now().After(deadline) {
			t.Fatalf("the reply never ended; so far %s", b.eval(reply))
		}
		time.Sleep(5 * time.Millisecond)
	}
	var text string
	if err := json.Unmarshal([]byte(b.eval(reply)), &text); err != nil || text == "" {
		t.Fatalf("no reply text: %s", b.eval(reply))
	}
	partial := 0 // states between empty and whole
	for s := range seen {
		if s != `""` && s != b.eval(reply) {
			partial++
		}
	}
	t.Logf("the reply was read in %d partial states while it streamed", partial)
	if partial == 0 {
		t.Error("the reply was never seen before it was whole: it did not stream")
	}
	// The same request through the API, greedy as the page asked.
	status, body := srv.post(t, "/v1/chat/completions", "", mustJSON(map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "Tell me about a dog."}}, "temperature": 0, "max_tokens": 120}))
	var api struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal(body, &api); err != nil || status != 200 || len(api.Choices) != 1 {
		t.Fatalf("the API: %d %s", status, body)
	}
	if api.Choices[0].Message.Content != text {
		t.Errorf("the page shows %q, the API answers %q", text, api.Choices[0].Message.Content)
	}
	for _, want := range []string{"offload", "head", "host KV", "heads on device", "0 of"} {
		if !strings.Contains(b.eval(`document.querySelector("aside").textContent`), want) {
			t.Errorf("the side panel does not show %q: %s", want, b.eval(`document.querySelector("aside").textContent`))
		}
	}
	if got := b.eval(`document.getElementById("tokens").textContent`); got == `"–"` || got == `""` {
		t.Errorf("the token count was not shown: %s", got)
	}

	// Stop: a second message, stopped once its reply has begun.
	b.eval(`document.getElementById("input").focus()`)
	b.typeText("And a cat?")
	b.waitFor("the second reply begins", `document.querySelectorAll(".msg.assistant .text").length === 2 && document.querySelectorAll(".msg.assistant .text")[1].textContent.length > 0`, 30*time.Second)
	b.eval(`document.getElementById("send").click()`)
	b.waitFor("the stop", `document.body.dataset.done === "2" && document.getElementById("send").textContent === "Send"`, 30*time.Second)
	b.waitFor("the server lets go of the stopped request", `fetch("/slots").then(r => r.json()).then(s => s.every(x => !x.is_processing))`, 30*time.Second)

	if out := os.Getenv("HEADINFER_SCREENSHOT"); out != "" {
		var shot struct{ Data string }
		b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
		png, err := base64.StdEncoding.DecodeString(shot.Data)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("screenshot:", out)
	}
}
