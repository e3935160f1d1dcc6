package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHub mimics the routes of a Hugging Face endpoint that a pull uses:
// the file listing (GET /api/models/{repo}/tree/main, in pages joined by
// Link headers), and /{repo}/resolve/main/{file}, which answers for an
// LFS file with a redirect to a content host on another address, stating
// the file's size and SHA-256 in X-Linked-Size and X-Linked-Etag. The
// content host serves byte ranges and can break connections off.
type fakeHub struct {
	t     *testing.T
	hub   *httptest.Server
	cdn   *httptest.Server
	repos map[string]*fakeRepo

	mu sync.Mutex
	// What the content host saw: the Range header of each GET ("" for
	// none), and whether any request carried Authorization.
	ranges    []string
	cdnAuth   bool
	hubAuth   []string
	drops     int   // GETs still to break off
	dropAfter int64 // bytes a broken-off GET sends first
	noRange   bool  // ignore Range headers (answer 200 with everything)
}

type fakeRepo struct {
	files map[string][]byte
	// stated overrides the SHA-256 the hub states for a file.
	stated map[string]string
	gated  bool // needs "Bearer good"
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, repos: map[string]*fakeRepo{}}
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	h.hub = httptest.NewServer(http.HandlerFunc(h.serveHub))
	t.Cleanup(func() { h.hub.Close(); h.cdn.Close() })
	return h
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// content is size bytes of noise for a file.
func content(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (h *fakeHub) add(repo string, gated bool, files map[string][]byte) *fakeRepo {
	r := &fakeRepo{files: files, stated: map[string]string{}, gated: gated}
	h.repos[repo] = r
	return r
}

// client is a Client of the fake hub keeping files in a fresh directory.
func (h *fakeHub) client(token string) *Client {
	return &Client{Endpoint: h.hub.URL, Token: token, Dir: h.t.TempDir()}
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	http.Error(w, msg, status)
}

// repoOf finds the repository a request names and checks access the way
// the hub does: an unknown repository is 401 without a token (it might be
// private) and 404 with one.
func (h *fakeHub) repoOf(w http.ResponseWriter, r *http.Request, name string) *fakeRepo {
	auth := r.Header.Get("Authorization")
	h.mu.Lock()
	h.hubAuth = append(h.hubAuth, auth)
	h.mu.Unlock()
	repo := h.repos[name]
	switch {
	case repo == nil && auth == "":
		hubError(w, 401, "RepoNotFound", "Repository not found")
	case repo == nil:
		hubError(w, 404, "RepoNotFound", "Repository not found")
	case repo.gated && auth == "":
		hubError(w, 401, "GatedRepo", "Access to model "+name+" is restricted. You must have access to it and be authenticated to access it. Please log in.")
	case repo.gated && auth != "Bearer good":
		hubError(w, 403, "GatedRepo", "Access to model "+name+" is restricted and you are not in the authorized list.")
	default:
		return repo
	}
	return nil
}

func (h *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if rest, ok := strings.CutPrefix(p, "api/models/"); ok {
		name, ok := strings.CutSuffix(rest, "/tree/main")
		if !ok || r.URL.Query().Get("recursive") != "true" {
			http.NotFound(w, r)
			return
		}
		repo := h.repoOf(w, r, name)
		if repo == nil {
			return
		}
		h.list(w, r, repo)
		return
	}
	parts := strings.SplitN(p, "/", 5)
	if len(parts) < 5 || parts[2] != "resolve" || parts[3] != "main" {
		http.NotFound(w, r)
		return
	}
	repo := h.repoOf(w, r, parts[0]+"/"+parts[1])
	if repo == nil {
		return
	}
	file := parts[4]
	data, ok := repo.files[file]
	if !ok {
		hubError(w, 404, "EntryNotFound", "Entry not found")
		return
	}
	sha := sum(data)
	stated := sha
	if s, ok := repo.stated[file]; ok {
		stated = s
	}
	w.Header().Set("X-Linked-Etag", `"`+stated+`"`)
	w.Header().Set("ETag", `"`+stated+`"`)
	w.Header().Set("X-Linked-Size", fmt.Sprint(len(data)))
	w.Header().Set("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
	w.Header().Set("Location", h.cdn.URL+"/blob/"+sha)
	w.WriteHeader(http.StatusFound)
}

// list answers the tree listing in pages of two entries.
func (h *fakeHub) list(w http.ResponseWriter, r *http.Request, repo *fakeRepo) {
	var names []string
	for f := range repo.files {
		names = append(names, f)
	}
	names = append(names, "sub") // a folder: not a file
	slices.Sort(names)
	page := 0
	fmt.Sscan(r.URL.Query().Get("cursor"), &page)
	var out []map[string]any
	for _, n := range names[min(2*page, len(names)):min(2*page+2, len(names))] {
		if n == "sub" {
			out = append(out, map[string]any{"type": "directory", "path": n, "oid": "x", "size": 0})
			continue
		}
		d := repo.files[n]
		out = append(out, map[string]any{"type": "file", "path": n, "size": len(d), "oid": "blob",
			"lfs": map[string]any{"oid": sum(d), "size": len(d), "pointerSize": 134}})
	}
	if 2*page+2 < len(names) {
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?recursive=true&cursor=%d>; rel="next"`, h.hub.URL, r.URL.Path, page+1))
	}
	json.NewEncoder(w).Encode(out)
}

func (h *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	sha := strings.TrimPrefix(r.URL.Path, "/blob/")
	var data []byte
	for _, repo := range h.repos {
		for _, d := range repo.files {
			if sum(d) == sha {
				data = d
			}
		}
	}
	if data == nil {
		http.NotFound(w, r)
		return
	}
	h.mu.Lock()
	if r.Header.Get("Authorization") != "" {
		h.cdnAuth = true
	}
	rng := r.Header.Get("Range")
	if r.Method == http.MethodGet {
		h.ranges = append(h.ranges, rng)
	}
	drop := r.Method == http.MethodGet && h.drops > 0
	if drop {
		h.drops--
	}
	noRange := h.noRange
	h.mu.Unlock()
	if noRange {
		r.Header.Del("Range")
	}
	if !drop {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		return
	}
	var start int64
	if rng != "" {
		fmt.Sscanf(rng, "bytes=%d-", &start)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(int64(len(data))-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	}
	w.Write(data[start:min(start+h.dropAfter, int64(len(data)))])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // the connection breaks off mid-file
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
	if h.cdnAuth {
		t.Error("the token was sent to the content host")
	}
	for _, a := range h.hubAuth {
		if a != "Bearer secret" {
			t.Errorf("the endpoint got Authorization %q, want the token", a)
		}
	}
	if len(h.ranges) != 1 || h.ranges[0] != "" {
		t.Errorf("content requests %q, want one without Range", h.ranges)
	}

	// Pulled before: found locally, nothing fetched again.
	if lp, ok := c.Local(Ref{Repo: "acme/Tiny-GGUF", Quant: "Q4_K_M"}); !ok || lp != p {
		t.Errorf("Local = %q, %v; want %q", lp, ok, p)
	}
	if _, err := c.Pull(context.Background(), Ref{Repo: "acme/Tiny-GGUF", Quant: "Q4_K_M"}); err != nil {
		t.Fatal(err)
	}
	if len(h.ranges) != 1 {
		t.Errorf("a second pull downloaded again: %q", h.ranges)
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
	h.drops, h.dropAfter = 1, 300_000
	c := h.client("")
	p, err := c.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	noPartials(t, c.Dir)
	if len(h.ranges) != 2 || h.ranges[0] != "" || h.ranges[1] != "bytes=300000-" {
		t.Errorf("content requests %q, want a full one then bytes=300000-", h.ranges)
	}

	// Across pulls: every attempt of the first breaks off, leaving a
	// partial file; the second pull asks only for the rest.
	h.ranges = nil
	h.drops, h.dropAfter = 4, 100_000
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
	if fmt.Sprint(h.ranges) != fmt.Sprint(want) {
		t.Errorf("content requests %q, want %q", h.ranges, want)
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
	h.noRange = true
	p, err := c.Pull(context.Background(), Ref{Repo: "acme/R-GGUF", File: "r.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, data)
	if len(h.ranges) != 1 || h.ranges[0] != "bytes=5000-" {
		t.Errorf("content requests %q, want one for bytes=5000-", h.ranges)
	}
}

func TestPullChecksumMismatch(t *testing.T) {
	h := newFakeHub(t)
	data := content(6, 100_000)
	repo := h.add("acme/Bad-GGUF", false, map[string][]byte{"bad.gguf": data})
	repo.stated["bad.gguf"] = sum([]byte("something else"))
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
	if !strings.Contains(err.Error(), sum(data)) || !strings.Contains(err.Error(), repo.stated["bad.gguf"]) {
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
	c := h.client("good")
	p, err := c.Pull(ctx, ref)
	if err != nil {
		t.Fatalf("gated with access: %v", err)
	}
	checkFile(t, p, data)
	if h.cdnAuth {
		t.Error("the token was sent to the content host")
	}

	_, err = h.client("").Pull(ctx, Ref{Repo: "nobody/Nothing"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "not found, or is private") {
		t.Errorf("unknown repository without a token: %v", err)
	}
	_, err = h.client("good").Pull(ctx, Ref{Repo: "nobody/Nothing"})
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
	if len(h.ranges) != 0 {
		t.Errorf("downloaded %q", h.ranges)
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
	if len(h.ranges) != 0 {
		t.Errorf("downloaded %q into a full disk", h.ranges)
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
	} {
		if got, err := pick("r", c.quant, files); err != nil || got != c.want {
			t.Errorf("pick(%q) = %q, %v; want %q", c.quant, got, err, c.want)
		}
	}
	for _, q := range []string{"Q4_K", "Q4_XS", "Q5_K_M", "Q6_K"} {
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
