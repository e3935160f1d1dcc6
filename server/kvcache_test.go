package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"headinfer/engine"
	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

// reference generates greedily from prompt in a fresh session of the
// server's model, as the server would without any reuse, and returns the
// text.
func reference(t *testing.T, s *Server, prompt string, n int) string {
	t.Helper()
	l := s.model.Load()
	se, err := l.m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	ids := l.tok.Encode(prompt, true)
	dec := tokenizer.NewDecoder(l.tok)
	for _, id := range ids {
		dec.Add(id)
	}
	var text strings.Builder
	gp := engine.GenerateParams{MaxTokens: n, Sampling: sample.Params{}}
	if _, err := se.Generate(context.Background(), ids, gp, func(id int32) bool {
		text.WriteString(dec.Add(id))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return text.String() + dec.Flush()
}

// expectCached is what the server should reuse for prompt: the longest
// common prefix, less the prompt's last token, of the prompt's tokens and
// those a slot holds or (with --kv-cache-dir) a spilled sequence holds.
// It reads the slots between requests, when nothing else uses them.
func expectCached(t *testing.T, s *Server, prompt string) int {
	t.Helper()
	l := s.model.Load()
	ids := l.tok.Encode(prompt, true)
	n := 0
	for slot := range l.batch.Slots() {
		err := l.batch.Do(context.Background(), slot, func(se *engine.Session) error {
			n = max(n, engine.PrefixLen(se.Tokens(), ids))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, sp := range l.prefix.spilled {
		n = max(n, engine.PrefixLen(sp.tokens, ids))
	}
	return n
}

const (
	storyA = "Once upon a time there was a little girl named Lily. She loved to play outside in the park."
	storyB = "Tom had a big red ball. He threw it high into the sky and his dog ran after it."
)

// ask sends a greedy completion of n tokens, streamed or not, and checks
// its text against a fresh session's and its cached_tokens against
// want; it returns the cached tokens reported.
func ask(t *testing.T, s *Server, url, prompt string, n int, stream bool, want int) int {
	t.Helper()
	body := map[string]any{"prompt": prompt, "max_tokens": n, "temperature": 0}
	if stream {
		body["stream"] = true
		body["stream_options"] = map[string]any{"include_usage": true}
	}
	u := completion(t, url, body)
	if u.PromptTokensDetails == nil {
		t.Fatalf("%.20q: no prompt_tokens_details in the usage", prompt)
	}
	if got := u.PromptTokensDetails.CachedTokens; got != want {
		t.Errorf("%.20q: cached_tokens %d, want %d", prompt, got, want)
	}
	if ref := reference(t, s, prompt, n); u.text != ref {
		t.Errorf("%.20q: text %q, want %q (no reuse)", prompt, u.text, ref)
	}
	return u.PromptTokensDetails.CachedTokens
}

// TestPrefixReuse sends prompts that begin with what the session holds:
// each reuses that KV, reports it as cached_tokens, and answers what a
// fresh session does; the metrics count the hits.
func TestPrefixReuse(t *testing.T) {
	s, ts := testServer(t, Options{}, engine.Options{})
	total, hits := 0, 0
	for i, c := range []struct {
		prompt string
		stream bool
	}{
		{storyA, false},
		{storyA, true}, // all but the last token
		{storyA + " One day she found a cat", false}, // what it holds and more
		{storyB, true}, // only BOS in common
		{storyB + " The dog was happy", false},
	} {
		want := expectCached(t, s, c.prompt)
		if i == 1 && want != len(s.model.Load().tok.Encode(storyA, true))-1 {
			t.Fatalf("the repeated prompt would reuse %d tokens", want)
		}
		if i == 0 && want != 0 {
			t.Fatalf("an empty session would give %d tokens", want)
		}
		got := ask(t, s, ts.URL, c.prompt, 10, c.stream, want)
		total += got
		if got > 0 {
			hits++
		}
	}
	fams := scrape(t, ts.URL)
	if v := value(t, fams, "headinfer_prefix_cache_hits_total"); v != float64(hits) || hits < 3 {
		t.Errorf("prefix hits %v, want %d (≥ 3)", v, hits)
	}
	if v := value(t, fams, "headinfer_prefix_cache_cached_tokens_total"); v != float64(total) {
		t.Errorf("cached tokens %v, want %d", v, total)
	}
}

// TestKVCacheDirSpill checks that with --kv-cache-dir a sequence that a
// request with another prompt overwrites is spilled, and restored when a
// later prompt begins with it, in this server and in the next one on the
// same directory.
func TestKVCacheDirSpill(t *testing.T) {
	dir := t.TempDir()
	s, ts := testServer(t, Options{KVCacheDir: dir}, engine.Options{})
	nA := len(s.model.Load().tok.Encode(storyA, true))
	ask(t, s, ts.URL, storyA, 12, false, 0)
	ask(t, s, ts.URL, storyB, 12, false, 1) // BOS in common; A is spilled
	spills, _ := filepath.Glob(filepath.Join(dir, "prefix-*.hikv"))
	if len(spills) != 1 {
		t.Fatalf("%d spilled files after one eviction: %v", len(spills), spills)
	}
	// A's prompt again: restored from the file, not prefilled (B is
	// spilled in turn).
	if got := ask(t, s, ts.URL, storyA+" She", 8, true, expectCached(t, s, storyA+" She")); got < nA-1 {
		t.Fatalf("the spilled prompt was not restored: %d cached tokens, want at least %d", got, nA-1)
	}
	fams := scrape(t, ts.URL)
	if v := value(t, fams, "headinfer_kv_snapshots_total", "op", "save", "result", "ok"); v != 2 {
		t.Errorf("%v spills, want 2", v)
	}
	if v := value(t, fams, "headinfer_kv_snapshots_total", "op", "restore", "result", "ok"); v != 1 {
		t.Errorf("%v restores, want 1", v)
	}

	// Damaged spills are refused and the prompt prefilled in full.
	spills, _ = filepath.Glob(filepath.Join(dir, "prefix-*.hikv"))
	for _, f := range spills {
		if err := os.Truncate(f, 100); err != nil {
			t.Fatal(err)
		}
	}
	ask(t, s, ts.URL, storyA+" She", 8, false, expectCached(t, s, storyA+" She")) // in the session; spilled whole
	ask(t, s, ts.URL, storyB+" He", 8, false, 0)                                  // B's file is damaged: prefilled
	fams = scrape(t, ts.URL)
	if v := value(t, fams, "headinfer_kv_snapshots_total", "op", "restore", "result", "error"); v != 1 {
		t.Errorf("%v failed restores, want 1", v)
	}

	// A second server on the directory finds the good spill (A + " She",
	// saved after the files were damaged) and passes over the damaged A;
	// the damaged B was removed when its restore failed.
	s2, ts2 := testServer(t, Options{KVCacheDir: dir}, engine.Options{})
	if n := len(s2.model.Load().prefix.spilled); n != 1 {
		t.Errorf("the second server indexed %d spills, want 1", n)
	}
	if got := ask(t, s2, ts2.URL, storyA+" She", 8, false, expectCached(t, s2, storyA+" She")); got < nA {
		t.Errorf("after a restart: %d cached tokens, want at least %d", got, nA)
	}
}

// slotCall posts to the slots route and returns the status and the
// decoded body.
func slotCall(t *testing.T, url, id, action, filename string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"filename": filename})
	resp, err := http.Post(url+"/slots/"+id+"?action="+action, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("slots answer %q: %v", raw, err)
	}
	return resp.StatusCode, out
}

// slotTokens reads the tokens slot holds.
func slotTokens(t *testing.T, s *Server, slot int) []int32 {
	t.Helper()
	var held []int32
	err := s.model.Load().batch.Do(context.Background(), slot, func(se *engine.Session) error {
		held = slices.Clone(se.Tokens())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return held
}

// TestSlots saves the session's KV through the slots route, restores it
// after another request, and checks the refusals: names outside the
// directory, other slots and actions, damaged and missing files, and a
// server without --kv-cache-dir.
func TestSlots(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	s, ts := testServer(t, Options{KVCacheDir: dir, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, engine.Options{})
	ask(t, s, ts.URL, storyA, 10, false, 0)
	held := slotTokens(t, s, 0)

	for _, name := range []string{"", ".", "..", "../x.bin", "/etc/passwd", "a/b.bin", `a\b.bin`, "x\x00.bin", "prefix-0123.hikv"} {
		for _, action := range []string{"save", "restore"} {
			status, body := slotCall(t, ts.URL, "0", action, name)
			if e, _ := body["error"].(map[string]any); status != 400 || e["code"] != "invalid_filename" {
				t.Errorf("%s %q: %d %v, want 400 invalid_filename", action, name, status, body)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused names left files: %v", entries)
	}
	if status, _ := slotCall(t, ts.URL, "1", "save", "a.bin"); status != 400 {
		t.Errorf("slot 1: status %d, want 400", status)
	}
	if status, _ := slotCall(t, ts.URL, "0", "drop", "a.bin"); status != 400 {
		t.Errorf("action drop: status %d, want 400", status)
	}

	status, body := slotCall(t, ts.URL, "0", "save", "story.bin")
	if status != 200 || body["n_saved"] != float64(len(held)) || body["n_written"].(float64) <= 0 || body["filename"] != "story.bin" {
		t.Fatalf("save: %d %v, want %d tokens saved", status, body, len(held))
	}
	ask(t, s, ts.URL, storyB, 10, false, 1)
	status, body = slotCall(t, ts.URL, "0", "restore", "story.bin")
	if status != 200 || body["n_restored"] != float64(len(held)) {
		t.Fatalf("restore: %d %v", status, body)
	}
	if !slices.Equal(slotTokens(t, s, 0), held) {
		t.Fatal("the restored session holds other tokens than were saved")
	}
	nA := len(s.model.Load().tok.Encode(storyA, true))
	ask(t, s, ts.URL, storyA, 10, false, nA-1)

	if err := os.WriteFile(filepath.Join(dir, "bad.bin"), []byte("HIKVSNAP and then nothing useful"), 0o644); err != nil {
		t.Fatal(err)
	}
	if status, body := slotCall(t, ts.URL, "0", "restore", "bad.bin"); status != 400 {
		t.Errorf("damaged file: %d %v, want 400", status, body)
	}
	if n := len(slotTokens(t, s, 0)); n != 0 {
		t.Errorf("the failed restore left %d tokens in the session", n)
	}
	ask(t, s, ts.URL, storyA, 10, false, expectCached(t, s, storyA)) // from the spill of A
	before := slotTokens(t, s, 0)
	if status, _ := slotCall(t, ts.URL, "0", "restore", "missing.bin"); status != 404 {
		t.Errorf("missing file: status %d, want 404", status)
	}
	if after := slotTokens(t, s, 0); len(before) == 0 || !slices.Equal(after, before) {
		t.Errorf("restoring a missing file changed the session: %d tokens before, %d after", len(before), len(after))
	}

	checkSlotLinks(t, s, ts.URL, dir, logs)

	ask(t, s, ts.URL, storyB, 10, false, expectCached(t, s, storyB))
	held = slotTokens(t, s, 0)
	if status, body := slotCall(t, ts.URL, "0", "erase", ""); status != 200 || body["n_erased"] != float64(len(held)) || len(held) == 0 {
		t.Errorf("erase: %d %v, want %d tokens erased", status, body, len(held))
	}
	if n := len(slotTokens(t, s, 0)); n != 0 {
		t.Errorf("the erased slot holds %d tokens", n)
	}

	plain := New(Options{ModelPath: "stories260K.gguf", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ps := httptest.NewServer(plain.Handler())
	defer ps.Close()
	if status, _ := slotCall(t, ps.URL, "0", "save", "a.bin"); status != 501 {
		t.Errorf("without --kv-cache-dir: status %d, want 501", status)
	}
}

// checkSlotLinks plants symbolic links in the server's --kv-cache-dir
// dir: a restore through one fails, leaves the slot as it was and puts no
// byte of the target in the answer or the log; a save over one replaces
// the link and leaves the target alone. A file that is not a snapshot is
// refused without quoting it either.
func checkSlotLinks(t *testing.T, s *Server, url, dir string, logs *syncBuffer) {
	t.Helper()
	const secretText = "SECRET-first-line: root:x:0:0:root:/root:/bin/bash\n"
	secret := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "text.bin"), []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, _ := slotCall(t, url, "0", "save", "good.bin"); status != 200 {
		t.Fatalf("save: status %d", status)
	}
	for name, target := range map[string]string{"secret.bin": secret, "tosnap.bin": filepath.Join(dir, "good.bin")} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	leaks := func(what string, b []byte) {
		t.Helper()
		if bytes.Contains(b, []byte("SECRET")) || bytes.Contains(b, []byte("root:")) {
			t.Errorf("%s quotes the file: %s", what, b)
		}
	}
	for _, name := range []string{"secret.bin", "tosnap.bin", "text.bin"} {
		before := slotTokens(t, s, 0)
		status, body := slotCall(t, url, "0", "restore", name)
		e, _ := body["error"].(map[string]any)
		if status != 400 || e["code"] != "invalid_snapshot" {
			t.Errorf("restore of %s: %d %v, want 400 invalid_snapshot", name, status, body)
		}
		raw, _ := json.Marshal(body)
		leaks("the answer to a restore of "+name, raw)
		if msg, _ := e["message"].(string); strings.Contains(msg, dir) {
			t.Errorf("the answer names the server's directory: %q", msg)
		}
		if after := slotTokens(t, s, 0); name != "text.bin" && !slices.Equal(after, before) {
			t.Errorf("a refused link changed the slot: %d tokens before, %d after", len(before), len(after))
		}
	}
	if status, body := slotCall(t, url, "0", "save", "secret.bin"); status != 200 {
		t.Errorf("save over a link: %d %v", status, body)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != secretText {
		t.Errorf("a save wrote through the link: %q %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "secret.bin")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("after a save over the link: %v %v, want a regular file", fi, err)
	}
	leaks("the log", []byte(logs.String()))
}

// syncBuffer is a bytes.Buffer for a log that requests write to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
