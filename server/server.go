// Package server is headinfer's headless HTTP API: an OpenAI-compatible
// subset (completions, chat completions, models) over one engine.Session,
// plus health and Prometheus metrics. Requests are served one at a time,
// in order, from a bounded queue.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"headinfer/engine"
	"headinfer/engine/tokenizer"
)

// Options configure a Server. Zero values take the defaults named.
type Options struct {
	// ModelPath is the model file; its base name, with or without the
	// .gguf extension, is the model name clients may ask for (as may "").
	ModelPath string
	// APIKey, when set, must come with every /v1 request as
	// "Authorization: Bearer KEY".
	APIKey string
	// MaxQueue is how many requests may wait while one runs; more are
	// answered 429 at once. 0: none may wait.
	MaxQueue int
	// Timeout bounds a request from its arrival to its last byte,
	// queueing included (default DefaultTimeout).
	Timeout time.Duration
	// WriteTimeout bounds one write to a client that stopped reading
	// (default 30 s).
	WriteTimeout time.Duration
	// MaxBodyBytes bounds request bodies (default 8 MiB).
	MaxBodyBytes int64
	// KVCacheDir, when set, is where sequences evicted from the session
	// are spilled as KV snapshots (and restored on a prefix hit), and
	// where POST /slots/0?action=save|restore keeps its files.
	KVCacheDir string
	// NoPrefixReuse prefills every prompt whole (for measuring what
	// reuse saves).
	NoPrefixReuse bool
	// Logger receives one line per request and the server's events
	// (default slog.Default()).
	Logger *slog.Logger
}

// Defaults of the serve command.
const (
	DefaultMaxQueue = 16               // Options.MaxQueue
	DefaultTimeout  = 10 * time.Minute // Options.Timeout
	DefaultGrace    = 5 * time.Second  // Serve's grace period on shutdown
)

// Server answers the HTTP API. Create it with New, give it the model with
// SetModel once loaded (it answers 503 until then), and serve Handler, or
// let Serve do all of that.
type Server struct {
	opt     Options
	name    string // the model's name in the API
	log     *slog.Logger
	queue   *queue
	metrics *metrics
	model   atomic.Pointer[loaded]
	mux     *http.ServeMux
	closeMu sync.Mutex
	closed  bool
}

// loaded is the model and the one session every request uses in turn.
// The session belongs to whoever holds the queue.
type loaded struct {
	m       *engine.Model
	se      *engine.Session
	tok     tokenizer.Tokenizer
	ctx     int // positions in the session's KV cache
	tmpl    *chatTemplate
	tmplErr error
	addBOS  bool // the vocabulary wants BOS in front of a prompt
	prefix  *prefixCache
}

// New returns a Server with no model yet.
func New(opt Options) *Server {
	opt.MaxQueue = max(opt.MaxQueue, 0)
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 30 * time.Second
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 8 << 20
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	s := &Server{
		opt:   opt,
		name:  strings.TrimSuffix(filepath.Base(opt.ModelPath), ".gguf"),
		log:   opt.Logger,
		queue: newQueue(opt.MaxQueue),
	}
	s.metrics = newMetrics(func() (int, bool, bool) {
		waiting, running := s.queue.depth()
		return waiting, running, s.Ready()
	})
	s.routes()
	return s
}

// ModelName is the name the API reports for the model.
func (s *Server) ModelName() string { return s.name }

// SetModel makes the server ready: it opens the session every request
// will use. The server owns m from then on and closes it in Close.
func (s *Server) SetModel(m *engine.Model) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.model.Load() != nil {
		return errors.New("server: the model is already set")
	}
	se, err := m.NewSession()
	if err != nil {
		return err
	}
	l := &loaded{m: m, se: se, tok: m.Tokenizer, ctx: se.CtxSize()}
	if l.prefix, err = newPrefixCache(s.opt.KVCacheDir, m, se, s.log, s.metrics); err != nil {
		se.Close()
		return err
	}
	l.prefix.off = s.opt.NoPrefixReuse
	if bos := l.tok.BOS(); bos >= 0 {
		probe := l.tok.Encode("", true)
		l.addBOS = len(probe) > 0 && probe[0] == bos
	}
	l.tmpl, l.tmplErr = newChatTemplate(m.ChatTemplate(), l.tok.TokenText(l.tok.BOS()), l.tok.TokenText(l.tok.EOS()))
	if l.tmplErr != nil {
		s.log.Warn("chat completions will fail", "err", l.tmplErr)
	} else if l.tmpl.t == nil {
		s.log.Info("the model has no chat template: chat prompts are plain \"role: content\" lines")
	}
	s.metrics.setMemory(se.Memory())
	s.model.Store(l)
	return nil
}

// Ready reports whether the model is loaded.
func (s *Server) Ready() bool { return s.model.Load() != nil }

// Close turns away waiting requests, waits for the one using the session
// (until ctx ends), then frees the session and the model.
func (s *Server) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.queue.close(ctx); err != nil {
		return fmt.Errorf("a request is still running, the model stays loaded: %w", err)
	}
	if l := s.model.Load(); l != nil {
		l.se.Close()
		return l.m.Close()
	}
	return nil
}
