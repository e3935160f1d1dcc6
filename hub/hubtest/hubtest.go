// Package hubtest is a stand-in for a Hugging Face endpoint, for tests:
// it serves the routes a pull uses, on loopback, from files held in
// memory, and records what it was asked.
package hubtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// GoodToken is the token that opens gated repositories.
const GoodToken = "good"

// Repo is one repository's files.
type Repo struct {
	Files map[string][]byte
	// Stated overrides the SHA-256 the endpoint states for a file.
	Stated map[string]string
	// Gated repositories answer only requests with "Bearer " + GoodToken.
	Gated bool
}

// Server mimics the routes of the hub: the file listing (GET
// /api/models/{repo}/tree/main?recursive=true, in pages of two entries
// joined by Link headers), and /{repo}/resolve/main/{file}, which answers
// with a redirect to a content host on another address, stating the
// file's size and SHA-256 in X-Linked-Size and X-Linked-Etag, as the hub
// does for LFS files. Errors carry X-Error-Code as the hub's do. The
// content host serves byte ranges and can break connections off.
type Server struct {
	// URL is the endpoint, for HF_ENDPOINT.
	URL string

	hub, cdn *httptest.Server

	mu        sync.Mutex
	repos     map[string]*Repo
	ranges    []string
	cdnAuth   bool
	hubAuth   []string
	drops     int
	dropAfter int64
	noRange   bool
}

// NewServer starts a server with no repositories.
func NewServer() *Server {
	s := &Server{repos: map[string]*Repo{}}
	s.cdn = httptest.NewServer(http.HandlerFunc(s.serveContent))
	s.hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.URL = s.hub.URL
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.hub.Close()
	s.cdn.Close()
}

// Add makes a repository (OWNER/NAME) available.
func (s *Server) Add(name string, r *Repo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Stated == nil {
		r.Stated = map[string]string{}
	}
	s.repos[name] = r
}

// Ranges are the Range headers of the file downloads so far, in order
// ("" for a request of the whole file).
func (s *Server) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ranges)
}

// ClearRanges forgets the downloads recorded so far.
func (s *Server) ClearRanges() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ranges = nil
}

// ContentSawToken says whether a request to the content host carried an
// Authorization header.
func (s *Server) ContentSawToken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cdnAuth
}

// EndpointAuth are the Authorization headers of the requests to the
// endpoint so far.
func (s *Server) EndpointAuth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hubAuth)
}

// DropNext makes the next n downloads break off after sending after bytes.
func (s *Server) DropNext(n int, after int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops, s.dropAfter = n, after
}

// IgnoreRange makes the content host answer every request with the whole
// file, as a server without range support does.
func (s *Server) IgnoreRange(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noRange = on
}

// SHA256 is the hex SHA-256 of b.
func SHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	http.Error(w, msg, status)
}

// repoOf finds the repository a request names and checks access the way
// the hub does: an unknown repository is 401 without a token (it might be
// private) and 404 with one. It answers the request when it returns nil.
func (s *Server) repoOf(w http.ResponseWriter, r *http.Request, name string) *Repo {
	auth := r.Header.Get("Authorization")
	s.mu.Lock()
	s.hubAuth = append(s.hubAuth, auth)
	repo := s.repos[name]
	s.mu.Unlock()
	switch {
	case repo == nil && auth == "":
		hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
	case repo == nil:
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
	case repo.Gated && auth == "":
		hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+name+" is restricted. You must have access to it and be authenticated to access it. Please log in.")
	case repo.Gated && auth != "Bearer "+GoodToken:
		hubError(w, http.StatusForbidden, "GatedRepo", "Access to model "+name+" is restricted and you are not in the authorized list.")
	default:
		return repo
	}
	return nil
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if rest, ok := strings.CutPrefix(p, "api/models/"); ok {
		name, ok := strings.CutSuffix(rest, "/tree/main")
		if !ok || r.URL.Query().Get("recursive") != "true" {
			http.NotFound(w, r)
			return
		}
		if repo := s.repoOf(w, r, name); repo != nil {
			s.list(w, r, repo)
		}
		return
	}
	parts := strings.SplitN(p, "/", 5)
	if len(parts) < 5 || parts[2] != "resolve" || parts[3] != "main" {
		http.NotFound(w, r)
		return
	}
	repo := s.repoOf(w, r, parts[0]+"/"+parts[1])
	if repo == nil {
		return
	}
	data, ok := repo.Files[parts[4]]
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	sha := SHA256(data)
	stated := sha
	if st, ok := repo.Stated[parts[4]]; ok {
		stated = st
	}
	w.Header().Set("X-Linked-Etag", `"`+stated+`"`)
	w.Header().Set("ETag", `"`+stated+`"`)
	w.Header().Set("X-Linked-Size", fmt.Sprint(len(data)))
	w.Header().Set("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
	w.Header().Set("Location", s.cdn.URL+"/blob/"+sha)
	w.WriteHeader(http.StatusFound)
}

// list answers the tree listing, two entries a page; a folder entry shows
// that only files count.
func (s *Server) list(w http.ResponseWriter, r *http.Request, repo *Repo) {
	var names []string
	for f := range repo.Files {
		names = append(names, f)
	}
	names = append(names, "folder")
	slices.Sort(names)
	page := 0
	fmt.Sscan(r.URL.Query().Get("cursor"), &page)
	var out []map[string]any
	for _, n := range names[min(2*page, len(names)):min(2*page+2, len(names))] {
		if n == "folder" {
			out = append(out, map[string]any{"type": "directory", "path": n, "oid": "0", "size": 0})
			continue
		}
		d := repo.Files[n]
		out = append(out, map[string]any{"type": "file", "path": n, "size": len(d), "oid": "0",
			"lfs": map[string]any{"oid": SHA256(d), "size": len(d), "pointerSize": 134}})
	}
	if 2*page+2 < len(names) {
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?recursive=true&cursor=%d>; rel="next"`, s.hub.URL, r.URL.Path, page+1))
	}
	json.NewEncoder(w).Encode(out)
}

func (s *Server) serveContent(w http.ResponseWriter, r *http.Request) {
	sha := strings.TrimPrefix(r.URL.Path, "/blob/")
	s.mu.Lock()
	var data []byte
	for _, repo := range s.repos {
		for _, d := range repo.Files {
			if SHA256(d) == sha {
				data = d
			}
		}
	}
	if r.Header.Get("Authorization") != "" {
		s.cdnAuth = true
	}
	rng := r.Header.Get("Range")
	if r.Method == http.MethodGet {
		s.ranges = append(s.ranges, rng)
	}
	drop := r.Method == http.MethodGet && s.drops > 0
	if drop {
		s.drops--
	}
	noRange, after := s.noRange, s.dropAfter
	s.mu.Unlock()
	if data == nil {
		http.NotFound(w, r)
		return
	}
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
	w.Write(data[start:min(start+after, int64(len(data)))])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // the connection breaks off mid-file
}
