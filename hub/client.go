package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DefaultEndpoint is the public Hugging Face hub.
const DefaultEndpoint = "https://huggingface.co"

// Errors a pull can end with, for errors.Is; the messages say more.
var (
	ErrNotFound  = errors.New("not found")             // no such repository or file (404)
	ErrAuth      = errors.New("access denied")         // gated or private, token missing or refused (401/403)
	ErrNoMatch   = errors.New("no matching file")      // no single .gguf for the quantization asked for
	ErrChecksum  = errors.New("checksum mismatch")     // the bytes' SHA-256 is not the one stated
	ErrDiskFull  = errors.New("not enough disk space") // the file does not fit where it goes
	ErrNoSHA256  = errors.New("no SHA-256 stated")     // the endpoint gives nothing to verify against
	ErrInterrupt = errors.New("download interrupted")  // the connection ended early; the partial file is kept
)

// Client talks to one endpoint and keeps files under one directory.
type Client struct {
	// Endpoint is the hub's base URL (DefaultEndpoint when empty).
	Endpoint string
	// Token, when set, is sent as a bearer token to Endpoint's host
	// only, never to the hosts it redirects downloads to.
	Token string
	// Dir holds the files, as Dir/OWNER/REPO/FILE.
	Dir string
	// Progress, when set, is called as a file downloads with the bytes
	// on disk and the file's size (done starts above 0 on a resume).
	Progress func(file string, done, total int64)
	// Retries is how many times a download that breaks off after making
	// progress is resumed at once before Pull gives up (0 = 3).
	Retries int

	// Transport carries the requests (tests; nil = the default one).
	Transport http.RoundTripper
	// freeSpace reports the bytes available in a directory (tests
	// replace it).
	freeSpace func(dir string) (uint64, error)
}

// FromEnv is a client configured the way the command line documents:
// HF_ENDPOINT, HF_TOKEN and HEADINFER_MODELS (default: the user cache
// directory's headinfer/models).
func FromEnv() (*Client, error) {
	c := &Client{Endpoint: os.Getenv("HF_ENDPOINT"), Token: os.Getenv("HF_TOKEN"), Dir: os.Getenv("HEADINFER_MODELS")}
	if c.Dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no directory for models: set HEADINFER_MODELS (%w)", err)
		}
		c.Dir = filepath.Join(cache, "headinfer", "models")
	}
	return c, nil
}

func (c *Client) endpoint() (*url.URL, error) {
	e := c.Endpoint
	if e == "" {
		e = DefaultEndpoint
	}
	u, err := url.Parse(strings.TrimRight(e, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("HF_ENDPOINT %q is not an http(s) URL", e)
	}
	return u, nil
}

// repoURL is the endpoint URL of segments under it, each escaped.
func (c *Client) repoURL(segments ...string) (string, error) {
	u, err := c.endpoint()
	if err != nil {
		return "", err
	}
	s := u.String()
	for _, seg := range segments {
		for _, p := range strings.Split(seg, "/") {
			s += "/" + url.PathEscape(p)
		}
	}
	return s, nil
}

// httpClient follows redirects (a download goes on to a content host);
// direct stops at the first redirect to another host, so that the
// endpoint's own headers (X-Linked-Etag, X-Linked-Size) can be read.
func (c *Client) httpClient(direct bool) (*http.Client, error) {
	u, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	base := c.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = time.Minute
		base = t
	}
	hc := &http.Client{Transport: &authTransport{base: base, scheme: u.Scheme, host: u.Host, token: c.Token}}
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("more than 10 redirects")
		}
		if direct && req.URL.Host != u.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return hc, nil
}

// authTransport adds the token to requests for the endpoint's host and
// to no other: the client copies a request's headers onto redirects, so
// the token is added here, per request, rather than set on the first.
type authTransport struct {
	base   http.RoundTripper
	scheme string
	host   string
	token  string
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Del("Authorization")
	// The scheme too: a redirect to http on the same host must not carry
	// the token in the clear.
	if t.token != "" && req.URL.Host == t.host && req.URL.Scheme == t.scheme {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	req.Header.Set("User-Agent", "headinfer")
	return t.base.RoundTrip(req)
}

// File is one file of a repository.
type File struct {
	Path   string
	Size   int64
	SHA256 string // of the content, for files stored with LFS ("" otherwise)
}

// treeEntry is one element of GET /api/models/{repo}/tree/{rev}.
type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// nextLink finds the rel="next" URL of a paginated listing's Link header.
var nextLink = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="?next"?`)

// Files lists a repository's files (all folders), following the listing's
// pages.
func (c *Client) Files(ctx context.Context, repo string) ([]File, error) {
	hc, err := c.httpClient(false)
	if err != nil {
		return nil, err
	}
	next, err := c.repoURL("api/models", repo, "tree/main")
	if err != nil {
		return nil, err
	}
	next += "?recursive=true"
	ep, _ := c.endpoint()
	var files []File
	for page := 0; next != ""; page++ {
		if page == 1000 {
			return nil, fmt.Errorf("listing %s: more than 1000 pages", repo)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", repo, err)
		}
		var entries []treeEntry
		if err := statusError(resp, repo, "", c.Token != "", ep); err != nil {
			resp.Body.Close()
			return nil, err
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&entries)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("listing %s: the endpoint's answer is not a file list: %w", repo, err)
		}
		for _, e := range entries {
			// The listing names where a file is written: an entry that
			// could leave the repository's directory is not a file of it.
			if e.Type != "file" || !localPath(e.Path) {
				continue
			}
			f := File{Path: e.Path, Size: e.Size}
			if e.LFS != nil {
				f.SHA256, f.Size = strings.ToLower(e.LFS.OID), e.LFS.Size
			}
			files = append(files, f)
		}
		next = ""
		if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			if u, err := url.Parse(m[1]); err == nil && u.Host == ep.Host {
				next = ep.ResolveReference(u).String()
			}
		}
	}
	return files, nil
}

// statusError turns an endpoint's error status into an error that says
// what to do; nil for a success. The hub names the cause in X-Error-Code
// (RepoNotFound, EntryNotFound, GatedRepo) and X-Error-Message.
func statusError(resp *http.Response, repo, file string, haveToken bool, ep *url.URL) error {
	if resp.StatusCode < 400 { // a redirect is the way to the content
		return nil
	}
	code, msg := resp.Header.Get("X-Error-Code"), resp.Header.Get("X-Error-Message")
	detail := ""
	if msg != "" {
		detail = " (" + msg + ")"
	}
	what := repo
	if file != "" {
		what = repo + "/" + file
	}
	page := ep.JoinPath(repo).String()
	switch {
	case code == "GatedRepo" && (resp.StatusCode == http.StatusUnauthorized || !haveToken):
		return fmt.Errorf("%w: %s is gated: accept its terms at %s, then set HF_TOKEN to an access token of that account%s", ErrAuth, repo, page, detail)
	case resp.StatusCode == http.StatusUnauthorized && !haveToken:
		return fmt.Errorf("%w: %s was not found, or is private or gated: check the name, or set HF_TOKEN to an access token that can read it%s", ErrAuth, what, detail)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w: the endpoint refused HF_TOKEN for %s: check the token%s", ErrAuth, what, detail)
	case resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: HF_TOKEN may not read %s: if it is gated, request access at %s%s", ErrAuth, what, page, detail)
	case resp.StatusCode == http.StatusNotFound && (code == "EntryNotFound" || (file != "" && code != "RepoNotFound")):
		return fmt.Errorf("%w: %s has no file %s%s", ErrNotFound, repo, file, detail)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: no repository %s on %s%s", ErrNotFound, repo, ep.Host, detail)
	}
	return fmt.Errorf("%s: the endpoint answered %s%s", what, resp.Status, detail)
}

// localPath reports whether p, a slash-separated path from a listing,
// stays inside the directory it is joined to.
func localPath(p string) bool {
	return p != "" && !strings.Contains(p, "\\") && path.Clean(p) == p && filepath.IsLocal(filepath.FromSlash(p))
}

// path is where a repository's file lives locally.
func (c *Client) path(repo, file string) string {
	return filepath.Join(c.Dir, filepath.FromSlash(repo), filepath.FromSlash(file))
}

// Local is the path of the file r names if it was pulled before; it asks
// the endpoint nothing. A reference by quantization finds the local
// .gguf files of the repository that carry it.
func (c *Client) Local(r Ref) (string, bool) {
	if r.File != "" {
		p := c.path(r.Repo, r.File)
		st, err := os.Stat(p)
		return p, err == nil && st.Mode().IsRegular()
	}
	root := c.path(r.Repo, "")
	var have []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && isGGUF(p) {
			rel, _ := filepath.Rel(root, p)
			have = append(have, filepath.ToSlash(rel))
		}
		return nil
	})
	f, err := pick(r.Repo, r.Quant, have)
	if err != nil {
		return "", false
	}
	return c.path(r.Repo, f), true
}

// Pull makes sure the file r names is on disk, verified, and returns its
// path. A file pulled before is not fetched again. For a split model
// (NAME-00001-of-00003.gguf and so on), every part is pulled and the
// first one's path returned: it is the one to load.
func (c *Client) Pull(ctx context.Context, r Ref) (string, error) {
	file := r.File
	var listed []File
	if file == "" {
		files, err := c.Files(ctx, r.Repo)
		if err != nil {
			return "", err
		}
		paths := make([]string, len(files))
		for i, f := range files {
			paths[i] = f.Path
		}
		if file, err = pick(r.Repo, r.Quant, paths); err != nil {
			return "", err
		}
		listed = files
	}
	parts := SplitParts(file)
	var first string
	for i, part := range parts {
		p, err := c.pullFile(ctx, r.Repo, part, listed)
		if err != nil && len(parts) > 1 {
			err = fmt.Errorf("part %d of %d of a split model: %w", i+1, len(parts), err)
		}
		if err != nil {
			return "", err
		}
		if i == 0 {
			first = p
		}
	}
	return first, nil
}

// pullFile pulls one file of repo unless it is on disk; listed, when the
// repository was listed, gives its size and checksum.
func (c *Client) pullFile(ctx context.Context, repo, file string, listed []File) (string, error) {
	if p := c.path(repo, file); fileExists(p) {
		return p, nil
	}
	want := File{Path: file}
	for _, f := range listed {
		if f.Path == file {
			want = f
		}
	}
	return c.download(ctx, repo, want)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
