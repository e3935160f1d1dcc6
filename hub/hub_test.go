package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"headinfer/hub/hubtest"
)

// fakeHub is a hubtest server with the knobs the tests turn.
type fakeHub struct {
	*hubtest.Server
	t *testing.T
}

func newFakeHub(t *testing.T) *fakeHub {
	s := hubtest.NewServer()
	t.Cleanup(s.Close)
	return &fakeHub{s, t}
}

func (h *fakeHub) add(repo string, gated bool, files map[string][]byte) *hubtest.Repo {
	r := &hubtest.Repo{Files: files, Gated: gated}
	h.Add(repo, r)
	return r
}

// client is a Client of the fake hub keeping files in a fresh directory.
func (h *fakeHub) client(token string) *Client {
	return &Client{Endpoint: h.URL, Token: token, Dir: h.t.TempDir()}
}

var sum = hubtest.SHA256

// content is size bytes of noise for a file.
func content(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// noPartials fails if a partial file is left under dir.
func noPartials(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
		if strings.HasSuffix(p, ".partial") {
			t.Errorf("partial file left: %s", p)
		}
		return nil
	})
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, SHA-256 %s; want %d bytes, %s", path, len(got), sum(got), len(want), sum(want))
	}
}

func TestPullByQuant(t *testing.T) {
	h := newFakeHub(t)
	q4, q8 := content(1, 300_001), content(2, 500_003)
	h.add("acme/Tiny-GGUF", false, map[string][]byte{
		"README.md": []byte("# tiny"), "Tiny-Q4_K_M.gguf": q4, "Tiny-Q8_0.gguf": q8, "Tiny-IQ4_XS.gguf": content(3, 10),
	})
	c := h.client("secret")
	var calls int
	var last [2]int64
	c.Progress = func(file string, done, total int64) {
		calls++
		last = [2]int64{done, total}
		if file != "Tiny-Q4_K_M.gguf" {
			t.Errorf("progress for %q", file)
		}
	}
	p, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF", Quant: "q4_k_m"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir, "acme", "Tiny-GGUF", "Tiny-Q4_K_M.gguf"); p != want {
		t.Errorf("path %s, want %s", p, want)
	}
	checkFile(t, p, q4)
	noPartials(t, c.Dir)
	if calls < 2 || last != [2]int64{int64(len(q4)), int64(len(q4))} {
		t.Errorf("progress: %d calls, last %v; want ≥ 2 calls ending at %d of %d", calls, last, len(q4), len(q4))
	}
	if h.ContentSawToken() {
		t.Error("the token was sent to the content host")
	}
	for _, a := range h.EndpointAuth() {
		if a != "Bearer secret" {
			t.Errorf("the endpoint got Authorization %q, want the token", a)
		}
	}
	if len(h.Ranges()) != 1 || h.Ranges()[0] != "" {
		t.Errorf("content requests %q, want one without Range", h.Ranges())
	}

	// Pulled before: found locally, nothing fetched again.
	if lp, ok := c.Local(Ref{Repo: "acme/Tiny-GGUF", Quant: "Q4_K_M"}); !ok || lp != p {
		t.Errorf("Local = %q, %v; want %q", lp, ok, p)
	}
	if _, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF", Quant: "Q4_K_M"}); err != nil {
		t.Fatal(err)
	}
	if len(h.Ranges()) != 1 {
		t.Errorf("a second pull downloaded again: %q", h.Ranges())
	}

	// By file name.
	c.Progress = nil
	p8, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF", File: "Tiny-Q8_0.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p8, q8)
}

func TestPullResumesAfterDrop(t *testing.T) {
	h := newFakeHub(t)
	data := content(4, 1_000_003)
	h.add("acme/Big-GGUF", false, map[string][]byte{"big.gguf": data})
	ref := Ref{Repo: "acme/Big-GGUF"}

	// Within one pull: the connection breaks after 300 000 bytes and the
	// pull resumes from there.
	h.DropNext(1, 300_000)
	c := h.client("")
	p, err := c.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	noPartials(t, c.Dir)
	if len(h.Ranges()) != 2 || h.Ranges()[0] != "" || h.Ranges()[1] != "bytes=300000-" {
		t.Errorf("content requests %q, want a full one then bytes=300000-", h.Ranges())
	}

	// Across pulls: every attempt of the first breaks off, leaving a
	// partial file; the second pull asks only for the rest.
	h.ClearRanges()
	h.DropNext(4, 100_000)
	c = h.client("")
	c.Retries = 3
	_, err = c.Pull(context.Background(), ref)
	if !errors.Is(err, ErrInterrupt) {
		t.Fatalf("pull with every connection broken: %v, want ErrInterrupt", err)
	}
	if _, ok := c.Local(ref); ok {
		t.Fatal("an interrupted download looks like a model")
	}
	partials, _ := filepath.Glob(filepath.Join(c.Dir, "acme", "Big-GGUF", "big.gguf.*.partial"))
	if len(partials) != 1 {
		t.Fatalf("partial files %v, want one", partials)
	}
	if st, _ := os.Stat(partials[0]); st.Size() != 400_000 {
		t.Errorf("partial holds %d bytes, want 400000", st.Size())
	}
	p, err = c.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	noPartials(t, c.Dir)
	want := []string{"", "bytes=100000-", "bytes=200000-", "bytes=300000-", "bytes=400000-"}
	if fmt.Sprint(h.Ranges()) != fmt.Sprint(want) {
		t.Errorf("content requests %q, want %q", h.Ranges(), want)
	}
}

// TestPullServerIgnoresRange checks that a resume against a server that
// answers a Range request with the whole file starts over.
func TestPullServerIgnoresRange(t *testing.T) {
	h := newFakeHub(t)
	data := content(5, 200_000)
	h.add("acme/R-GGUF", false, map[string][]byte{"r.gguf": data})
	c := h.client("")
	dir := filepath.Join(c.Dir, "acme", "R-GGUF")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "r.gguf."+sum(data)[:16]+".partial"), data[:5000], 0o644)
	h.IgnoreRange(true)
	p, err := c.Pull(context.Background(), Ref{Repo: "acme/R-GGUF", File: "r.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	if len(h.Ranges()) != 1 || h.Ranges()[0] != "bytes=5000-" {
		t.Errorf("content requests %q, want one for bytes=5000-", h.Ranges())
	}
}

func TestPullChecksumMismatch(t *testing.T) {
	h := newFakeHub(t)
	data := content(6, 100_000)
	repo := h.add("acme/Bad-GGUF", false, map[string][]byte{"bad.gguf": data})
	repo.Stated["bad.gguf"] = sum([]byte("something else"))
	c := h.client("")
	dir := filepath.Join(c.Dir, "acme", "Bad-GGUF")
	os.MkdirAll(dir, 0o755)
	// A partial of another version of the file: it cannot be resumed.
	stale := filepath.Join(dir, "bad.gguf.00000000deadbeef.partial")
	os.WriteFile(stale, data[:100], 0o644)

	_, err := c.Pull(context.Background(), Ref{Repo: "acme/Bad-GGUF", Quant: ""})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v, want ErrChecksum", err)
	}
	if !strings.Contains(err.Error(), sum(data)) || !strings.Contains(err.Error(), repo.Stated["bad.gguf"]) {
		t.Errorf("error %q should give both sums", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.gguf")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a file that failed verification is in place")
	}
	noPartials(t, c.Dir) // the full, wrong download and the stale partial are gone
}

func TestPullAccessErrors(t *testing.T) {
	h := newFakeHub(t)
	data := content(7, 50_000)
	h.add("meta/Gated-GGUF", true, map[string][]byte{"g-Q4_0.gguf": data})
	ctx := context.Background()
	ref := Ref{Repo: "meta/Gated-GGUF", Quant: "Q4_0"}

	_, err := h.client("").Pull(ctx, ref)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "gated") || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Errorf("gated without a token: %v; want ErrAuth saying it is gated and to set HF_TOKEN", err)
	}
	_, err = h.client("wrong").Pull(ctx, ref)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "request access") {
		t.Errorf("gated with a token without access: %v; want ErrAuth saying to request access", err)
	}
	c := h.client(hubtest.GoodToken)
	p, err := c.Pull(ctx, ref)
	if err != nil {
		t.Fatalf("gated with access: %v", err)
	}
	checkFile(t, p, data)
	if h.ContentSawToken() {
		t.Error("the token was sent to the content host")
	}

	_, err = h.client("").Pull(ctx, Ref{Repo: "nobody/Nothing"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "not found, or is private") {
		t.Errorf("unknown repository without a token: %v", err)
	}
	_, err = h.client(hubtest.GoodToken).Pull(ctx, Ref{Repo: "nobody/Nothing"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no repository nobody/Nothing") {
		t.Errorf("unknown repository with a token: %v", err)
	}
	_, err = c.Pull(ctx, Ref{Repo: "meta/Gated-GGUF", File: "missing.gguf"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "has no file missing.gguf") {
		t.Errorf("unknown file: %v", err)
	}
}

func TestPullNoSuchQuant(t *testing.T) {
	h := newFakeHub(t)
	h.add("acme/Tiny-GGUF", false, map[string][]byte{
		"Tiny-Q4_K_M.gguf": content(1, 10), "Tiny-Q8_0.gguf": content(2, 10), "Tiny-f16.gguf": content(3, 10), "README.md": nil,
	})
	c := h.client("")
	_, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF", Quant: "Q5_K_M"})
	if !errors.Is(err, ErrNoMatch) {
		t.Fatalf("got %v, want ErrNoMatch", err)
	}
	for _, q := range []string{"Q4_K_M", "Q8_0", "f16"} {
		if !strings.Contains(err.Error(), q) {
			t.Errorf("error %q does not list %s", err, q)
		}
	}
	_, err = c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF"})
	if !errors.Is(err, ErrNoMatch) || !strings.Contains(err.Error(), "3 GGUF files") {
		t.Errorf("no quant with several files: %v", err)
	}
	if len(h.Ranges()) != 0 {
		t.Errorf("downloaded %q", h.Ranges())
	}
}

func TestPullDiskFull(t *testing.T) {
	h := newFakeHub(t)
	h.add("acme/Tiny-GGUF", false, map[string][]byte{"t.gguf": content(1, 100_000)})
	c := h.client("")
	c.freeSpace = func(string) (uint64, error) { return 4096, nil }
	_, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF"})
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "HEADINFER_MODELS") {
		t.Fatalf("got %v, want ErrDiskFull naming HEADINFER_MODELS", err)
	}
	if len(h.Ranges()) != 0 {
		t.Errorf("downloaded %q into a full disk", h.Ranges())
	}
}

func TestParseRef(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Ref
	}{
		{"bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", Ref{Repo: "bartowski/Llama-3.2-1B-Instruct-GGUF", Quant: "Q4_K_M"}},
		{"owner/repo", Ref{Repo: "owner/repo"}},
		{"owner/repo/model-q8_0.gguf", Ref{Repo: "owner/repo", File: "model-q8_0.gguf"}},
		{"owner/repo/sub/dir/m.GGUF", Ref{Repo: "owner/repo", File: "sub/dir/m.GGUF"}},
		{"hf.co/owner/repo:q4_0", Ref{Repo: "owner/repo", Quant: "q4_0"}},
		{"https://huggingface.co/owner/repo", Ref{Repo: "owner/repo"}},
	} {
		got, err := ParseRef(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if err == nil && !strings.HasSuffix(c.in, got.String()) {
			t.Errorf("%+v.String() = %q, not the end of %q", got, got.String(), c.in)
		}
	}
	for _, in := range []string{"model.gguf", "owner", "owner/repo:", "owner/repo/README.md", "owner/repo/../x.gguf", "../x/y", "own er/repo", "owner//x.gguf"} {
		if r, err := ParseRef(in); err == nil {
			t.Errorf("ParseRef(%q) = %+v, want an error", in, r)
		}
	}
}

func TestPick(t *testing.T) {
	files := []string{"README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-IQ4_XS.gguf", "m.Q8_0.gguf", "m-Q4_0.gguf", "m-Q4_0_4_4.gguf",
		"split/m-Q6_K-00001-of-00002.gguf", "split/m-Q6_K-00002-of-00002.gguf"}
	for _, c := range []struct{ quant, want string }{
		{"q4_k_m", "m-Q4_K_M.gguf"}, {"Q8_0", "m.Q8_0.gguf"}, {"Q4_0", "m-Q4_0.gguf"}, {"iq4_xs", "m-IQ4_XS.gguf"},
		{"Q6_K", "split/m-Q6_K-00001-of-00002.gguf"},
	} {
		if got, err := pick("r", c.quant, files); err != nil || got != c.want {
			t.Errorf("pick(%q) = %q, %v; want %q", c.quant, got, err, c.want)
		}
	}
	for _, q := range []string{"Q4_K", "Q4_XS", "Q5_K_M"} {
		if got, err := pick("r", q, files); err == nil {
			t.Errorf("pick(%q) = %q, want an error", q, got)
		}
	}
	if got, err := pick("r", "", []string{"a.txt", "only.gguf"}); err != nil || got != "only.gguf" {
		t.Errorf("the only .gguf: %q, %v", got, err)
	}
	if got := QuantOf("dir/Llama-3.2-1B-Instruct-Q4_K_M.gguf"); got != "Q4_K_M" {
		t.Errorf("QuantOf = %q", got)
	}
}

// TestPullPartialTooLong checks that a partial file longer than the file
// (it cannot be a prefix of it) is started over.
func TestPullPartialTooLong(t *testing.T) {
	h := newFakeHub(t)
	data := content(8, 70_000)
	h.add("acme/L-GGUF", false, map[string][]byte{"l.gguf": data})
	c := h.client("")
	dir := filepath.Join(c.Dir, "acme", "L-GGUF")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "l.gguf."+sum(data)[:16]+".partial"), content(9, 80_000), 0o644)
	p, err := c.Pull(context.Background(), Ref{Repo: "acme/L-GGUF", File: "l.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	if r := h.Ranges(); len(r) != 1 || r[0] != "" {
		t.Errorf("content requests %q, want one for the whole file", r)
	}
}

// TestDiskError checks that a write failing for want of space says so,
// and other errors pass unchanged.
func TestDiskError(t *testing.T) {
	full := &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	if err := diskError(full, "x.partial"); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "resume") {
		t.Errorf("ENOSPC became %v", err)
	}
	other := &os.PathError{Op: "write", Path: "x", Err: syscall.EIO}
	if err := diskError(other, "x.partial"); err != other {
		t.Errorf("EIO became %v", err)
	}
}

// TestPullListingEscape: a listing that names a file outside the
// repository (a hostile or broken endpoint) must not make pull write there.
func TestPullListingEscape(t *testing.T) {
	h := newFakeHub(t)
	h.add("acme/Evil-GGUF", false, map[string][]byte{
		"../../../evil-Q4_K_M.gguf": content(1, 10), "a/../evil-Q8_0.gguf": content(2, 10),
	})
	c := h.client("")
	for _, q := range []string{"Q4_K_M", "Q8_0"} {
		_, err := c.Pull(context.Background(), Ref{Repo: "acme/Evil-GGUF", Quant: q})
		if !errors.Is(err, ErrNoMatch) {
			t.Errorf("%s: got %v, want ErrNoMatch", q, err)
		}
	}
	parent := filepath.Dir(c.Dir)
	filepath.WalkDir(parent, func(p string, _ os.DirEntry, _ error) error {
		if strings.Contains(filepath.Base(p), "evil") {
			t.Errorf("pull wrote %s", p)
		}
		return nil
	})
}

func TestLocalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"Tiny-Q4_K_M.gguf": true, "sub/dir/x.gguf": true,
		"": false, "../x.gguf": false, "a/../x.gguf": false, "/abs.gguf": false,
		"a//x.gguf": false, "./x.gguf": false, `a\..\x.gguf`: false,
	} {
		if got := localPath(p); got != want {
			t.Errorf("localPath(%q) = %v, want %v", p, got, want)
		}
	}
}

// TestPullSplit pulls a model split into parts, by quantization and by
// the name of any part: every part lands, and the first one's path is
// the answer.
func TestPullSplit(t *testing.T) {
	h := newFakeHub(t)
	parts := map[string][]byte{
		"Big-Q4_K_M-00001-of-00003.gguf": content(4, 1000), "Big-Q4_K_M-00002-of-00003.gguf": content(5, 2000),
		"Big-Q4_K_M-00003-of-00003.gguf": content(6, 3000),
	}
	files := map[string][]byte{"Big-Q8_0.gguf": content(7, 10)}
	for k, v := range parts {
		files[k] = v
	}
	h.add("acme/Big-GGUF", false, files)
	for _, ref := range []Ref{{Repo: "acme/Big-GGUF", Quant: "Q4_K_M"}, {Repo: "acme/Big-GGUF", File: "Big-Q4_K_M-00002-of-00003.gguf"}} {
		c := h.client("")
		p, err := c.Pull(context.Background(), ref)
		if err != nil {
			t.Fatalf("%v: %v", ref, err)
		}
		if filepath.Base(p) != "Big-Q4_K_M-00001-of-00003.gguf" {
			t.Errorf("%v: pulled to %s, want the first part", ref, p)
		}
		for name, want := range parts {
			checkFile(t, filepath.Join(filepath.Dir(p), name), want)
		}
	}
	delete(files, "Big-Q4_K_M-00003-of-00003.gguf")
	h.add("acme/Broken-GGUF", false, files)
	if _, err := h.client("").Pull(context.Background(), Ref{Repo: "acme/Broken-GGUF", File: "Big-Q4_K_M-00001-of-00003.gguf"}); err == nil ||
		!strings.Contains(err.Error(), "part 3 of 3") {
		t.Errorf("a split model missing a part: %v, want an error naming part 3 of 3", err)
	}
}
