package server

import (
	_ "embed"
	"net/http"
)

// The chat page at GET /: one self-contained file (no CDN, no build step)
// that streams replies from /v1/chat/completions and draws where the KV
// cache lives from GET /props. It asks for the API key itself (kept in
// the browser's local storage), so the page is served without one.
//
//go:embed webui/index.html
var webPage []byte

func (s *Server) webUI(w http.ResponseWriter, r *http.Request) {
	if s.opt.NoWebUI {
		writeError(w, notFound(r))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.Write(webPage)
}
