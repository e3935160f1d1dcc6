package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"headinfer/bytesize"
)

// remote is what the endpoint states about a file before sending it.
type remote struct {
	size   int64
	sha256 string
}

// sha256Hex matches an ETag that is a SHA-256 (LFS files); other files'
// ETags are git blob ids, which say nothing about the bytes' SHA-256.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func etagSHA256(etag string) string {
	e := strings.ToLower(strings.Trim(strings.TrimPrefix(etag, "W/"), `"`))
	if sha256Hex.MatchString(e) {
		return e
	}
	return ""
}

// head asks the endpoint for a file's size and SHA-256 without following
// the redirect to the content host: the hub states them on its own
// response (X-Linked-Size, X-Linked-Etag), the content host does not.
func (c *Client) head(ctx context.Context, repo, file, url string) (remote, error) {
	hc, err := c.httpClient(true)
	if err != nil {
		return remote{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return remote{}, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := hc.Do(req)
	if err != nil {
		return remote{}, fmt.Errorf("%s/%s: %w", repo, file, err)
	}
	resp.Body.Close()
	ep, _ := c.endpoint()
	if err := statusError(resp, repo, file, c.Token != "", ep); err != nil {
		return remote{}, err
	}
	var r remote
	if r.sha256 = etagSHA256(resp.Header.Get("X-Linked-Etag")); r.sha256 == "" {
		r.sha256 = etagSHA256(resp.Header.Get("ETag"))
	}
	if n, err := strconv.ParseInt(resp.Header.Get("X-Linked-Size"), 10, 64); err == nil {
		r.size = n
	} else if resp.StatusCode == http.StatusOK {
		r.size = resp.ContentLength
	}
	return r, nil
}

// download fetches want into its place under Dir by way of a partial
// file named for its SHA-256, resuming what an earlier attempt left, and
// renames it into place only once the whole file's SHA-256 matches.
func (c *Client) download(ctx context.Context, repo string, want File) (string, error) {
	dst := c.path(repo, want.Path)
	url, err := c.repoURL(repo, "resolve/main", want.Path)
	if err != nil {
		return "", err
	}
	r, err := c.head(ctx, repo, want.Path, url)
	if err != nil {
		return "", err
	}
	if r.sha256 == "" {
		r.sha256 = want.SHA256
	}
	if r.sha256 == "" {
		return "", fmt.Errorf("%w: the endpoint states no SHA-256 for %s/%s (no LFS X-Linked-Etag or ETag), so a download could not be verified", ErrNoSHA256, repo, want.Path)
	}
	if r.size <= 0 {
		r.size = want.Size
	}
	if r.size <= 0 {
		return "", fmt.Errorf("the endpoint states no size for %s/%s", repo, want.Path)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	// The partial's name carries the SHA-256 it is meant to have: a
	// partial of another version of the file cannot be a right prefix.
	partial := dst + "." + r.sha256[:16] + ".partial"
	stale, _ := filepath.Glob(globEscape(dst) + ".*.partial")
	for _, p := range stale {
		if p != partial {
			os.Remove(p)
		}
	}
	retries := c.Retries
	if retries <= 0 {
		retries = 3
	}
	for attempt := 0; ; attempt++ {
		gained, err := c.fetch(ctx, url, partial, repo, want.Path, r.size)
		if err == nil {
			break
		}
		if errors.Is(err, ErrInterrupt) && gained > 0 && attempt < retries && ctx.Err() == nil {
			continue
		}
		return "", err
	}
	got, err := fileSHA256(partial)
	if err != nil {
		return "", err
	}
	if got != r.sha256 {
		// Every byte is there and the sum is wrong: no prefix of it can
		// be trusted for a resume.
		os.Remove(partial)
		return "", fmt.Errorf("%w: %s/%s has SHA-256 %s, the endpoint states %s; the download was removed, run the command again",
			ErrChecksum, repo, want.Path, got, r.sha256)
	}
	if err := os.Rename(partial, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// fetch appends to the partial file what it lacks of size bytes, asking
// for the rest with a Range request. gained is what this call wrote.
func (c *Client) fetch(ctx context.Context, url, partial, repo, name string, size int64) (gained int64, err error) {
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = diskError(cerr, partial)
		}
	}()
	if err := lockFile(f); err != nil {
		return 0, fmt.Errorf("%s: another process is downloading it (%v)", partial, err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	have := st.Size()
	if have > size {
		if err := f.Truncate(0); err != nil {
			return 0, err
		}
		have = 0
	}
	if have == size {
		return 0, nil
	}
	if free, err := c.free(filepath.Dir(partial)); err == nil && free < uint64(size-have) {
		return 0, fmt.Errorf("%w: %s needs %s more, %s is free under %s: free some space or set HEADINFER_MODELS to another disk",
			ErrDiskFull, name, bytesize.Format(uint64(size-have)), bytesize.Format(free), filepath.Dir(partial))
	}

	hc, err := c.httpClient(false)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrInterrupt, name, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have || (total >= 0 && total != size) {
			return 0, fmt.Errorf("%s: asked for bytes from %d of %d, got Content-Range %q", name, have, size, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		if have > 0 { // the server ignored the Range: start over
			if err := f.Truncate(0); err != nil {
				return 0, err
			}
			have = 0
		}
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			return 0, fmt.Errorf("%s: the endpoint stated %d bytes and sends %d", name, size, resp.ContentLength)
		}
	default:
		ep, _ := c.endpoint()
		if err := statusError(resp, repo, name, c.Token != "", ep); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%s: unexpected answer %s", name, resp.Status)
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return 0, err
	}
	if c.Progress != nil {
		c.Progress(name, have, size)
	}
	buf := make([]byte, 1<<20)
	body := io.LimitReader(resp.Body, size-have+1) // one byte more shows an overlong body
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if have+int64(n) > size {
				f.Truncate(0)
				return gained, fmt.Errorf("%s: the endpoint sent more than the %d bytes it stated; the partial file was emptied", name, size)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return gained, diskError(err, partial)
			}
			have += int64(n)
			gained += int64(n)
			if c.Progress != nil {
				c.Progress(name, have, size)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return gained, fmt.Errorf("%w: %s after %s of %s (%v); run the command again to resume", ErrInterrupt, name, bytesize.Format(uint64(have)), bytesize.Format(uint64(size)), rerr)
		}
	}
	if have < size {
		return gained, fmt.Errorf("%w: %s: the connection closed after %s of %s; run the command again to resume", ErrInterrupt, name, bytesize.Format(uint64(have)), bytesize.Format(uint64(size)))
	}
	return gained, nil
}

// diskError names a full disk as such.
func diskError(err error, path string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: writing %s: %v; the part written is kept: free some space (or set HEADINFER_MODELS to another disk) and run the command again to resume", ErrDiskFull, path, err)
	}
	return err
}

func (c *Client) free(dir string) (uint64, error) {
	if c.freeSpace != nil {
		return c.freeSpace(dir)
	}
	return freeSpace(dir)
}

// contentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func contentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	first, _, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// globEscape quotes the characters filepath.Glob treats specially.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteRune('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
