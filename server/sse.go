package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// sse writes a server-sent event stream: each event is one "data: JSON"
// line and a blank line, flushed at once so that every token reaches the
// client as it is generated.
type sse struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	buf          bytes.Buffer
}

func newSSE(w http.ResponseWriter, writeTimeout time.Duration) *sse {
	return &sse{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout}
}

// start sends the status and headers of a stream.
func (s *sse) start() error {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies: do not buffer the stream
	s.w.WriteHeader(http.StatusOK)
	return s.flush()
}

// send writes v as one event.
func (s *sse) send(v any) error {
	s.buf.Reset()
	s.buf.WriteString("data: ")
	enc := json.NewEncoder(&s.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line
		return err
	}
	s.buf.WriteString("\n")
	return s.write(s.buf.Bytes())
}

// done ends the stream as OpenAI does.
func (s *sse) done() error { return s.write([]byte("data: [DONE]\n\n")) }

func (s *sse) write(b []byte) error {
	// A client that stops reading must not hold the session forever.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.flush()
}

// end clears the write deadline, which would otherwise outlive the
// request on a kept-alive connection.
func (s *sse) end() { _ = s.rc.SetWriteDeadline(time.Time{}) }

func (s *sse) flush() error {
	return s.rc.Flush()
}
