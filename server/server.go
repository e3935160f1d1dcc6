// Package server is headinfer's headless HTTP API: an OpenAI-compatible
// subset (completions, chat completions, models) over an engine.Batch,
// llama-server's native completion, tokenize, detokenize and props
// routes, plus health, KV slot save/restore and Prometheus metrics. Up to
// Options.Parallel requests run at once, decoded together; the others
// wait in order in a bounded queue.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
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
	// Alias, when set, is the model's name in the API instead of its
	// file name (llama-server's --alias); the file name is still accepted.
	Alias string
	// APIKeys are more keys, any of which a request may carry instead of
	// APIKey (llama-server's --api-key-file).
	APIKeys []string
	// ChatTemplate, when set, is the chat template's source, used instead
	// of the model's (--chat-template NAME: BuiltinTemplate; or
	// --chat-template-file).
	ChatTemplate string
	// Props lets POST /props answer (llama-server's --props); without it,
	// 403.
	Props bool
	// NoWebUI turns the chat page at GET / off (404).
	NoWebUI bool
	// NoSlots turns GET /slots off (501), as llama-server's --no-slots.
	NoSlots bool
	// ContextShift lets generation go on past the end of the context
	// (llama-server's --context-shift): the first n_keep tokens of the
	// sequence stay and half of the rest are dropped. A prompt longer than
	// the context is then cut as llama-server cuts it instead of refused.
	// The model must keep every position (no sliding-window rings).
	ContextShift bool
	// Defaults are the sampling settings of requests that omit them
	// (llama-server's --temp, --top-k, … and -n on its command line).
	Defaults RequestDefaults
	// APIKey, when set, must come with every request but GET /health
	// (and GET /metrics with MetricsPublic) as "Authorization: Bearer KEY";
	// without it the answer is 401.
	APIKey string
	// MetricsPublic serves GET /metrics without the API key, for a
	// Prometheus scraper on a private network.
	MetricsPublic bool
	// Parallel is how many requests run at once, each a sequence of the
	// model's batch (decoded together); 0 counts as 1. The model must be
	// loaded with engine.Options.Parallel set alike, so that its plan
	// budgets their KV.
	Parallel int
	// MaxQueue is how many requests may wait while Parallel run; more
	// are answered 429 at once. 0: none may wait.
	MaxQueue int
	// Timeout bounds a request from its arrival to its last byte,
	// queueing included (default DefaultTimeout).
	Timeout time.Duration
	// WriteTimeout bounds one write to a client that stopped reading
	// (default 30 s). A stream sets it anew before each event, so that a
	// long generation is never cut by it.
	WriteTimeout time.Duration
	// ReadTimeout bounds how long a request's headers may take to arrive
	// (Serve closes the connection after it) and then its body (answered
	// 408 after it); default DefaultReadTimeout. It does not bound the
	// generation that follows.
	ReadTimeout time.Duration
	// IdleTimeout is how long Serve keeps a connection open between
	// requests (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxConnsPerIP caps the connections Serve holds open from one client
	// address at once (default DefaultMaxConnsPerIP; negative: no cap).
	// Connections beyond it are answered 429 and closed before a request
	// is read.
	MaxConnsPerIP int
	// MaxBodyBytes bounds request bodies (default 8 MiB).
	MaxBodyBytes int64
	// KVCacheDir, when set, is where sequences evicted from the session
	// are spilled as KV snapshots (and restored on a prefix hit), and
	// where POST /slots/0?action=save|restore keeps its files.
	KVCacheDir string
	// NoPrefixReuse prefills every prompt whole (for measuring what
	// reuse saves).
	NoPrefixReuse bool
	// Embeddings serves POST /v1/embeddings and /embedding; without it
	// they answer 501.
	Embeddings bool
	// Logger receives one line per request and the server's events
	// (default slog.Default()).
	Logger *slog.Logger
	// ReloadOnFailure lets Serve load the model again, once, after its
	// device fails; without it (or after that once) the server answers
	// 503 model_unavailable until restarted.
	ReloadOnFailure bool
	// ReasoningFormat is what chat answers do with the thinking block of
	// a model whose template writes one: ReasoningDeepSeek ("" too) sends
	// it as reasoning_content apart from content, ReasoningNone leaves
	// the text as generated.
	ReasoningFormat string
	// Steps, when set, hears every decode step of the model's batch, as
	// the headinfer_batch_step_seconds histogram does (`bench serve`
	// reads the steps of each client count from it).
	Steps StepObserver
}

// StepObserver hears each decode step of the server's batch: how many
// sequences it decoded together and the device step's wall time (see
// engine.Batch.OnStep). It is called on the batch's goroutine, between
// steps, so it must return quickly.
type StepObserver interface {
	ObserveStep(sequences int, took time.Duration)
}

// Defaults of the serve command.
const (
	DefaultParallel = 4                // the serve command's --parallel
	DefaultMaxQueue = 16               // Options.MaxQueue
	DefaultTimeout  = 10 * time.Minute // Options.Timeout
	DefaultGrace    = 5 * time.Second  // Serve's grace period on shutdown

	DefaultReadTimeout   = 30 * time.Second // Options.ReadTimeout
	DefaultIdleTimeout   = 60 * time.Second // Options.IdleTimeout
	DefaultMaxConnsPerIP = 64               // Options.MaxConnsPerIP
)

// Server answers the HTTP API. Create it with New, give it the model with
// SetModel once loaded (it answers 503 until then), and serve Handler, or
// let Serve do all of that.
type Server struct {
	opt     Options
	name    string   // the model's name in the API
	keys    []string // the API keys a request may carry (none: no key needed)
	log     *slog.Logger
	queue   *queue
	admit   *admission
	metrics *metrics
	// gen runs a job on the session: generate, or a stand-in in tests
	// that run the HTTP layer without a device.
	gen     func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error)
	model   atomic.Pointer[loaded]
	mux     *http.ServeMux
	closeMu sync.Mutex
	closed  bool
	// draining is set once Serve begins to shut down.
	draining atomic.Bool

	// failed is set when the device fails and cleared by a reload.
	failed      atomic.Pointer[failure]
	reload      func() (*engine.Model, error) // set by Serve with ReloadOnFailure
	reloadsLeft int                           // guarded by closeMu
	// reloadPending is the failed model to reload once its request
	// releases its place.
	reloadPending atomic.Pointer[loaded]
}

// failure is why the model cannot serve.
type failure struct {
	err       error
	reloading bool // a reload is under way
}

// Retry-After seconds: while the model loads (or reloads), and after a
// failure with no reload coming, when only a restart helps.
const (
	retryLoading = 5
	retryFailed  = 60
)

func (f *failure) retryAfter() int {
	if f.reloading {
		return retryLoading
	}
	return retryFailed
}

// loaded is the model and the batch of sequences the requests run in.
type loaded struct {
	m          *engine.Model
	batch      *engine.Batch
	tok        tokenizer.Tokenizer
	ctx        int // positions in the session's KV cache
	tmpl       *chatTemplate
	tmplSrc    string // the model's chat template, as GET /props shows it
	tmplErr    error
	thinks     bool         // the template writes <think> blocks
	toolFormat toolFormat   // how the template's family writes tool calls
	addBOS     bool         // the vocabulary wants BOS in front of a prompt
	prefix     *prefixCache // used on the batch's goroutine only
	vocab      grammarVocab // for grammar-constrained requests
	defaults   RequestDefaults
	shift      bool // context shift (Options.ContextShift)
}

// New returns a Server with no model yet.
func New(opt Options) *Server {
	opt.MaxQueue = max(opt.MaxQueue, 0)
	opt.Parallel = max(opt.Parallel, 1)
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 30 * time.Second
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 8 << 20
	}
	if opt.ReadTimeout <= 0 {
		opt.ReadTimeout = DefaultReadTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultIdleTimeout
	}
	if opt.MaxConnsPerIP == 0 {
		opt.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	name := strings.TrimSuffix(filepath.Base(opt.ModelPath), ".gguf")
	if opt.Alias != "" {
		name = opt.Alias
	}
	s := &Server{
		opt:   opt,
		name:  name,
		keys:  slices.DeleteFunc(append([]string{opt.APIKey}, opt.APIKeys...), func(k string) bool { return k == "" }),
		log:   opt.Logger,
		queue: newQueue(opt.Parallel, opt.MaxQueue),
		admit: newAdmission(opt.MaxQueue + opt.Parallel),
	}
	s.metrics = newMetrics(func() queueState {
		waiting, running := s.queue.depth()
		st := queueState{waiting: waiting, running: running, held: s.admit.held(), ready: s.Ready()}
		if l := s.model.Load(); l != nil && l.batch != nil {
			st.kvUsage = l.batch.KVUsage()
		}
		return st
	})
	s.gen = s.generate
	s.routes()
	return s
}

// ModelName is the name the API reports for the model.
func (s *Server) ModelName() string { return s.name }

// SetModel makes the server ready: it opens the batch of Parallel
// sequences the requests run in. The server owns m from then on and
// closes it in Close.
func (s *Server) SetModel(m *engine.Model) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.model.Load() != nil {
		return errors.New("server: the model is already set")
	}
	if s.opt.ContextShift && m.Plan().Rings != nil {
		return errors.New("--context-shift: the sliding-window layers keep only their latest positions; add --swa-full")
	}
	b, err := m.NewBatch(s.opt.Parallel)
	if err != nil {
		return err
	}
	b.OnStep = func(n int, took time.Duration) {
		s.metrics.step(n, took)
		if s.opt.Steps != nil {
			s.opt.Steps.ObserveStep(n, took)
		}
	}
	var ctx int
	var prefix *prefixCache
	err = b.Do(context.Background(), 0, func(se *engine.Session) (err error) {
		ctx = se.CtxSize()
		prefix, err = newPrefixCache(s.opt.KVCacheDir, m, se, s.log, s.metrics)
		return err
	})
	if err != nil {
		b.Close()
		return err
	}
	tmpl := m.ChatTemplate()
	if s.opt.ChatTemplate != "" {
		tmpl = s.opt.ChatTemplate
	}
	l := newLoaded(m.Tokenizer, ctx, tmpl)
	l.m, l.batch, l.prefix, l.defaults, l.shift = m, b, prefix, s.opt.Defaults, s.opt.ContextShift
	l.prefix.off = s.opt.NoPrefixReuse
	if l.tmplErr != nil {
		s.log.Warn("chat completions will fail", "err", l.tmplErr)
	} else if l.tmpl.t == nil {
		s.log.Info("the model has no chat template: chat prompts are plain \"role: content\" lines")
	}
	if l.tmplErr == nil {
		s.log.Info("tool calls", "format", l.toolFormat.String())
	}
	s.metrics.setMemory(b.Memory())
	s.model.Store(l)
	return nil
}

// failure is the model's device failure, or nil while it works. A
// loaded without a model (newLoaded's, as the HTTP layer's tests use it)
// has none.
func (l *loaded) failure() error {
	if l.m == nil {
		return nil
	}
	return l.m.Failed()
}

// newLoaded prepares what requests need besides the session: the
// tokenizer, the context size and the chat template (source tmpl).
func newLoaded(tok tokenizer.Tokenizer, ctx int, tmpl string) *loaded {
	l := &loaded{tok: tok, ctx: ctx, tmplSrc: tmpl}
	if bos := tok.BOS(); bos >= 0 {
		probe := tok.Encode("", true)
		l.addBOS = len(probe) > 0 && probe[0] == bos
	}
	l.tmpl, l.tmplErr = newChatTemplate(tmpl, tok.TokenText(tok.BOS()), tok.TokenText(tok.EOS()))
	l.thinks = templateThinks(tmpl)
	l.toolFormat = toolFormatOf(tmpl)
	if l.tmpl != nil {
		l.tmpl.quote = tok.Quote
	}
	return l
}

// Ready reports whether the model is loaded and its device works.
func (s *Server) Ready() bool { return s.model.Load() != nil && s.failed.Load() == nil }

// checkDevice marks the server failed if l's device has failed: from
// then on requests are answered 503. A request calls it as soon as its
// generation fails, before it answers, so that a client that reads the
// error and asks again is told 503 rather than joining the failed batch;
// a request that gets a place calls it too, and so does every release.
// With a reload left, l is set aside and loaded again once the request
// holding it releases its place (startReload); otherwise the server stays
// failed.
func (s *Server) checkDevice(l *loaded) {
	err := l.failure()
	if err == nil {
		return
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.failed.Load() != nil || s.model.Load() != l {
		return
	}
	reload := s.reload != nil && s.reloadsLeft > 0 && !s.closed
	s.failed.Store(&failure{err: err, reloading: reload})
	s.metrics.setDeviceFailed(true)
	if !reload {
		s.log.Error("the device failed: answering 503 until restarted", "err", err)
		return
	}
	s.reloadsLeft--
	s.log.Error("the device failed: reloading the model", "err", err)
	// Nobody takes l after the failure is set: a request that gets a
	// place checks it first.
	s.model.Store(nil)
	s.reloadPending.Store(l)
}

// startReload starts reloading l if checkDevice set it aside. It takes no
// lock: every release calls it, and Close holds closeMu while it waits
// for the running requests to release.
func (s *Server) startReload(l *loaded) {
	if s.reloadPending.CompareAndSwap(l, nil) {
		go s.reloadModel(l, l.failure())
	}
}

// reloadModel frees the failed model l and loads it again.
func (s *Server) reloadModel(l *loaded, cause error) {
	l.batch.Close()
	if err := l.m.Close(); err != nil {
		s.log.Warn("closing the failed model", "err", err)
	}
	t0 := time.Now()
	m, err := s.reload()
	if err == nil {
		s.metrics.reloaded()
		if err = s.SetModel(m); err != nil {
			m.Close()
		}
	}
	if err != nil {
		s.log.Error("reloading the model failed: answering 503 until restarted", "err", err)
		s.failed.Store(&failure{err: fmt.Errorf("%w; reloading failed: %v", cause, err)})
		return
	}
	s.failed.Store(nil)
	s.metrics.setDeviceFailed(false)
	s.log.Info("model reloaded after the device failure", "model", s.name, "seconds", time.Since(t0).Seconds())
}

// Close turns away waiting requests, waits for the running ones (until
// ctx ends), then frees the batch and the model.
func (s *Server) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.queue.close(ctx); err != nil {
		return fmt.Errorf("requests are still running, the model stays loaded: %w", err)
	}
	if l := s.model.Load(); l != nil {
		l.batch.Close()
		return l.m.Close()
	}
	return nil
}
