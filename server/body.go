package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// decodeBody reads the request's body (see readBody) and decodes it into
// v, a pointer to a request struct.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body, e := readBody(w, r, s.opt.MaxBodyBytes)
	if e != nil {
		return e
	}
	return decodeJSON(body, v)
}

// readBody reads r's whole body, at most limit bytes. A client that sends
// its body too slowly is answered 408 (with the connection closed), one
// that sends too much 413.
//
// The generation routes read the body before they take an admission
// place, so that clients trickling bodies hold nothing but their own
// connections (which the listener caps per address) and cannot turn
// everyone else away with 429. The deadline that bounds the read is the
// one wrap set on the connection, ReadTimeout after the headers arrived
// (where the ResponseWriter allows it; httptest's recorder does not, and
// its bodies are in memory). It is cleared once the body is in: the
// server's background read, which watches for a client that goes away
// while its request runs, would otherwise hit it and cancel a long
// generation.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var big *http.MaxBytesError
	switch {
	case err == nil:
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		return body, nil
	case errors.As(err, &big):
		return nil, tooLarge(limit)
	case isTimeout(err):
		// The deadline stays: net/http drains what is left of the body
		// after the handler, which must not wait on this client again.
		w.Header().Set("Connection", "close")
		return nil, requestTimeout()
	}
	w.Header().Set("Connection", "close")
	return nil, badRequest("", "invalid_body", "the request body cannot be read: %v", err)
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
