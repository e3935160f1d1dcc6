package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// reqInfo is what the request log line and the metrics learn about a
// request from its handler.
type reqInfo struct {
	id               string
	status           int // when set, overrides the status written (499, or an error after a stream began)
	promptTokens     int
	completionTokens int
}

type infoKey struct{}

// infoOf returns the request's reqInfo (a throwaway one outside wrap).
func infoOf(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

// recorder remembers the status a handler wrote.
type recorder struct {
	http.ResponseWriter
	status int
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush,
// SetWriteDeadline).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handle registers h for pattern under a route name used in logs and
// metrics; with auth the API key is checked first.
func (s *Server) handle(pattern, route string, auth bool, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.wrap(route, auth, h))
}

// wrap gives a handler its request id, the API key check, panic recovery,
// the log line and the request counter.
func (s *Server) wrap(route string, auth bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{id: newID()}
		rec := &recorder{ResponseWriter: w}
		rec.Header().Set("X-Request-Id", info.id)
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic while serving a request", "id", info.id, "route", route, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if rec.status == 0 {
					writeError(rec, internalError(fmt.Errorf("internal server error (request %s)", info.id)))
				} else {
					info.status = http.StatusInternalServerError
				}
			}
			status := rec.status
			if info.status != 0 {
				status = info.status
			}
			if status == 0 {
				status = http.StatusOK
			}
			s.metrics.request(route, status)
			s.log.Info("request", "id", info.id, "method", r.Method, "route", route, "status", status,
				"prompt_tokens", info.promptTokens, "completion_tokens", info.completionTokens,
				"duration", time.Since(start).Round(time.Microsecond))
		}()
		if r.ContentLength != 0 { // a body, of a known length or chunked (-1)
			// For every route, also those that answer without reading
			// the body: net/http reads what is left of a small body
			// before it sends the answer, and would wait on a client
			// that trickles it for as long as it likes. readBody clears
			// the deadline once the body is in.
			_ = http.NewResponseController(rec).SetReadDeadline(start.Add(s.opt.ReadTimeout))
		}
		if auth && len(s.keys) > 0 {
			if e := s.checkKey(r); e != nil {
				writeError(rec, e)
				return
			}
		}
		h(rec, r)
	})
}

// checkKey checks "Authorization: Bearer KEY".
func (s *Server) checkKey(r *http.Request) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauthorized("no API key: send the header \"Authorization: Bearer KEY\"")
	}
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return unauthorized("the Authorization header must be \"Bearer KEY\"")
	}
	key = strings.TrimSpace(key)
	match := 0
	for _, k := range s.keys { // every key compared, in constant time each
		match |= subtle.ConstantTimeCompare([]byte(key), []byte(k))
	}
	if match != 1 {
		return unauthorized("incorrect API key")
	}
	return nil
}

// newID returns a random id for a request and its response.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeJSON writes v as a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a write error means the client left: nothing to do
}

// writeError writes e as OpenAI's error object.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, errorBody{Error: e})
}
