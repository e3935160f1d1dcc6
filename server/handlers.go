package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"headinfer/engine"
	"headinfer/engine/grammar"
)

// routes registers the API. Go 1.22 patterns route by method; anything
// else gets an OpenAI error object rather than net/http's plain text.
//
// With an API key every route requires it but /health, which load
// balancers and orchestrators probe without credentials, and /metrics
// when Options.MetricsPublic says so. Unknown paths require it too, so
// that a client without the key learns nothing of the routes.
func (s *Server) routes() {
	s.mux = http.NewServeMux()
	// llama-server answers the OpenAI routes with and without /v1.
	s.handle("POST /v1/completions", "/v1/completions", true, s.completions)
	s.handle("POST /completions", "/v1/completions", true, s.completions)
	s.handle("POST /v1/chat/completions", "/v1/chat/completions", true, s.chat)
	s.handle("POST /chat/completions", "/v1/chat/completions", true, s.chat)
	s.handle("POST /completion", "/completion", true, s.nativeCompletion)
	s.handle("POST /infill", "/infill", true, s.infill)
	s.handle("POST /v1/embeddings", "/v1/embeddings", true, s.embeddings)
	s.handle("POST /embedding", "/embedding", true, s.nativeEmbedding)
	s.handle("POST /embeddings", "/embedding", true, s.nativeEmbedding)
	s.handle("POST /tokenize", "/tokenize", true, s.tokenize)
	s.handle("POST /apply-template", "/apply-template", true, s.applyTemplate)
	s.handle("POST /detokenize", "/detokenize", true, s.detokenize)
	s.handle("GET /props", "/props", true, s.props)
	s.handle("POST /props", "/props", true, s.propsChange)
	s.handle("GET /v1/models", "/v1/models", true, s.models)
	s.handle("GET /models", "/v1/models", true, s.models)
	s.handle("GET /v1/models/{model}", "/v1/models/{model}", true, s.modelInfo)
	s.handle("GET /health", "/health", false, s.health)
	s.handle("/health", "other", false, s.unknown) // other methods: 405 without the key
	s.handle("GET /metrics", "/metrics", !s.opt.MetricsPublic, s.metricsPage)
	s.handle("POST /slots/{id}", "/slots", true, s.slots)
	s.handle("GET /slots", "/slots", true, s.slotList)
	s.handle("GET /{$}", "/", false, s.webUI)
	s.handle("/", "other", true, s.unknown)
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

var knownPaths = map[string]bool{
	"/v1/completions": true, "/v1/chat/completions": true, "/v1/models": true, "/health": true, "/metrics": true,
	"/completion": true, "/tokenize": true, "/detokenize": true, "/props": true,
	"/v1/embeddings": true, "/embedding": true, "/embeddings": true,
	"/completions": true, "/chat/completions": true, "/models": true, "/slots": true, "/apply-template": true, "/infill": true,
}

func (s *Server) unknown(w http.ResponseWriter, r *http.Request) {
	if knownPaths[r.URL.Path] {
		writeError(w, methodNotAllowed(r))
		return
	}
	writeError(w, notFound(r))
}

// health answers 503 {"status":"loading"} until the model is loaded, then
// 200 {"status":"ok"}, or 200 {"status":"busy"} while every running and
// waiting place is taken (a request now would be answered 429; a balancer
// may prefer another replica, but this one works); after a device
// failure, 503 {"status":"failed" or "reloading", "reason": the error}.
// The 503s carry Retry-After.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if f := s.failed.Load(); f != nil {
		status := "failed"
		if f.reloading {
			status = "reloading"
		}
		w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter()))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status, "reason": f.err.Error()})
		return
	}
	if !s.Ready() {
		w.Header().Set("Retry-After", strconv.Itoa(retryLoading))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	status := "ok"
	if s.queue.full() {
		status = "busy"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}

func (s *Server) metricsPage(w http.ResponseWriter, r *http.Request) {
	s.metrics.handler(s.log).ServeHTTP(w, r)
}

func (s *Server) modelEntry() modelEntry {
	e := modelEntry{ID: s.name, Object: "model", Created: s.metrics.started.Unix(), OwnedBy: "headinfer"}
	if l := s.model.Load(); l != nil {
		e.Meta = &modelMeta{NVocab: l.tok.VocabSize()}
		if l.m != nil {
			e.Meta.NCtxTrain, e.Meta.NEmbd = l.m.Config.TrainCtx, l.m.Config.Dim
		}
	}
	return e
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelEntry{s.modelEntry()}})
}

func (s *Server) modelInfo(w http.ResponseWriter, r *http.Request) {
	if name := r.PathValue("model"); name != s.name && name != filepath.Base(s.opt.ModelPath) {
		writeError(w, modelNotFound(name, s.name))
		return
	}
	writeJSON(w, http.StatusOK, s.modelEntry())
}

// checkModel accepts the model's name, its file name, and "".
func (s *Server) checkModel(name string) *apiError {
	if name == "" || name == s.name || name == filepath.Base(s.opt.ModelPath) {
		return nil
	}
	return modelNotFound(name, s.name)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	serveJob(s, w, r, func(q *completionRequest) string { return q.Model }, (*loaded).completionJob)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	serveJob(s, w, r, func(q *chatRequest) string { return q.Model }, (*loaded).chatJob)
}

// serveJob decodes a request body of type R, checks the model it names,
// turns it into a job with newJob and runs that. The body is read and
// decoded before the request takes an admission place (see readBody);
// rendering and tokenizing, which cost far more memory than the body,
// come after.
func serveJob[R any](s *Server, w http.ResponseWriter, r *http.Request, model func(*R) string, newJob func(*loaded, *R) (*job, *apiError)) {
	serveJobs(s, w, r, model, func(l *loaded, req *R) ([]*job, *apiError) {
		j, e := newJob(l, req)
		return []*job{j}, e
	})
}

// admitRequest is what a route that runs on the model does first: it
// checks that the model is there and works, decodes the body into R,
// checks the model it names, and takes an admission place, which the
// caller gives back with s.admit.leave. It answers the client itself and
// returns false when the request goes no further.
func admitRequest[R any](s *Server, w http.ResponseWriter, r *http.Request, model func(*R) string) (*loaded, *R, bool) {
	if f := s.failed.Load(); f != nil {
		writeError(w, unavailable(f))
		return nil, nil, false
	}
	l := s.model.Load()
	if l == nil {
		writeError(w, loading())
		return nil, nil, false
	}
	req := new(R)
	if e := s.decodeBody(w, r, req); e != nil {
		writeError(w, e)
		return nil, nil, false
	}
	if e := s.checkModel(model(req)); e != nil {
		writeError(w, e)
		return nil, nil, false
	}
	if !s.admit.enter() {
		writeError(w, busy(s.admit.size()))
		return nil, nil, false
	}
	return l, req, true
}

// serveJobs is serveJob for a request that may make several jobs
// (llama-server's /completion of several prompts): they run at once,
// and their answers are a JSON array, or the first failure's.
func serveJobs[R any](s *Server, w http.ResponseWriter, r *http.Request, model func(*R) string, newJobs func(*loaded, *R) ([]*job, *apiError)) {
	l, req, ok := admitRequest(s, w, r, model)
	if !ok {
		return
	}
	defer s.admit.leave()
	jobs, e := newJobs(l, req)
	if e != nil {
		writeError(w, e)
		return
	}
	if len(jobs) == 1 {
		s.run(w, r, l, jobs[0])
		return
	}
	// One after another: they share the request's log record.
	answers := make([]json.RawMessage, len(jobs))
	for i, j := range jobs {
		b := &bufferWriter{header: http.Header{}, status: http.StatusOK}
		s.run(b, r, l, j)
		if b.status != http.StatusOK {
			copyHeader(w.Header(), b.header)
			w.WriteHeader(b.status)
			w.Write(b.body.Bytes())
			return
		}
		answers[i] = b.body.Bytes()
	}
	writeJSON(w, http.StatusOK, answers)
}

// bufferWriter keeps one job's answer, for serveJobs to gather.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header         { return b.header }
func (b *bufferWriter) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferWriter) WriteHeader(status int)      { b.status = status }

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

// run waits for the session, then generates j and answers it, as one JSON
// object or as a stream.
func (s *Server) run(w http.ResponseWriter, r *http.Request, l *loaded, j *job) {
	info := infoOf(r)
	info.promptTokens = len(j.prompt)
	j.admitted = time.Now()
	ctx, l, release, ok := s.holdRequest(w, r, info, l)
	if !ok {
		return
	}
	defer release()
	s.metrics.queueWait.Observe(time.Since(j.admitted).Seconds())
	defer func() { s.metrics.requestDuration.Observe(time.Since(j.admitted).Seconds()) }()
	a := answer{id: info.id, created: time.Now().Unix(), model: s.name, chat: j.chat, native: j.native != nil}
	if j.trace.logprobs() {
		a.lp = &logprobFormat{tok: l.tok}
	}
	if j.thinks && s.opt.ReasoningFormat != ReasoningNone {
		a.think = newThinkSplitter(j.thinkOpen)
	}
	if j.tools.parses() {
		a.tools = newToolStream(j.tools)
	}
	if j.stream {
		s.stream(ctx, w, info, l, j, a)
		return
	}
	var text []byte
	var steps []stepProbs
	o, err := s.gen(ctx, l, j, func(s string) error {
		text = append(text, s...)
		steps = append(steps, j.trace.take()...)
		return nil
	})
	info.completionTokens = o.completion
	if err != nil {
		s.checkDevice(l)
		s.fail(w, info, err)
		return
	}
	steps = append(steps, j.trace.take()...) // tokens whose text a stop string cut
	writeJSON(w, http.StatusOK, a.whole(string(text), o, j, steps))
}

// hold waits for the session on behalf of a request that found l loaded
// and checks that the model can still serve: it returns the model to use
// (l, or the one reloaded while the request waited) and release, to call
// when done, which hands the session on and, if the device failed
// meanwhile, starts handling that. When ok is false it has answered the
// request.
func (s *Server) hold(ctx context.Context, w http.ResponseWriter, info *reqInfo, l *loaded) (_ *loaded, release func(), ok bool) {
	switch err := s.queue.acquire(ctx); {
	case err == errQueueFull:
		writeError(w, queueFull(s.opt.MaxQueue))
		return nil, nil, false
	case err == errClosed:
		writeError(w, shuttingDown())
		return nil, nil, false
	case err != nil:
		s.fail(w, info, err)
		return nil, nil, false
	}
	s.checkDevice(l) // in a request still running, perhaps
	if f := s.failed.Load(); f != nil {
		// The device failed while this request waited.
		s.queue.release()
		writeError(w, unavailable(f))
		return nil, nil, false
	}
	if cur := s.model.Load(); cur != l {
		if cur == nil {
			s.queue.release()
			writeError(w, loading())
			return nil, nil, false
		}
		l = cur // reloaded from the same file while this request waited
	}
	return l, func() {
		// Also when the request ended for another reason first.
		s.checkDevice(l)
		s.queue.release()
		s.startReload(l)
	}, true
}

// holdRequest is hold under the request's --timeout (Options.Timeout),
// from its arrival: it also returns the context the work runs in, which
// release ends.
func (s *Server) holdRequest(w http.ResponseWriter, r *http.Request, info *reqInfo, l *loaded) (context.Context, *loaded, func(), bool) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), s.opt.Timeout, errTimeout)
	l, release, ok := s.hold(ctx, w, info, l)
	if !ok {
		cancel()
		return nil, nil, nil, false
	}
	return ctx, l, func() { release(); cancel() }, true
}

// stream answers j as server-sent events, one per piece of text.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, info *reqInfo, l *loaded, j *job, a answer) {
	sw := newSSE(w, s.opt.WriteTimeout)
	defer sw.end()
	if err := sw.start(); err != nil {
		info.status = statusClientClosed
		return
	}
	if a.chat {
		if err := sw.send(a.roleChunk()); err != nil {
			info.status = statusClientClosed
			return
		}
	}
	send := func(text string, end bool) error {
		chunks := a.thinkChunks(text, end)
		if n := len(chunks); n > 0 {
			// Tokens whose text is held back wait for the next event.
			chunks[n-1] = a.withSteps(chunks[n-1], j.trace.take())
		}
		for _, c := range chunks {
			if err := sw.send(c); err != nil {
				return err
			}
		}
		return nil
	}
	o, err := s.gen(ctx, l, j, func(text string) error { return send(text, false) })
	info.completionTokens = o.completion
	if err == nil && send("", true) != nil {
		info.status = statusClientClosed
		return
	}
	if err != nil {
		s.checkDevice(l)
		if e := s.errorFor(info, err); e != nil {
			info.status = e.Status
			_ = sw.send(errorBody{Error: e})
		} else {
			info.status = statusClientClosed
		}
		return
	}
	if a.native {
		// llama-server ends the stream with this event, no [DONE].
		if sw.send(a.nativeWhole("", o, j, j.trace.take())) != nil {
			info.status = statusClientClosed
		}
		return
	}
	finish := a.finishReason(o)
	err = sw.send(a.withSteps(withTimings(a.chunk("", &finish), o), j.trace.take()))
	if err == nil && j.includeUsage {
		err = sw.send(a.usageChunk(makeUsage(len(j.prompt), o)))
	}
	if err == nil {
		err = sw.done()
	}
	if err != nil {
		info.status = statusClientClosed
	}
}

// fail answers a request that ended in err before anything was sent.
func (s *Server) fail(w http.ResponseWriter, info *reqInfo, err error) {
	if e := s.errorFor(info, err); e != nil {
		writeError(w, e)
		return
	}
	info.status = statusClientClosed
}

// errorFor is the answer for a failed request; nil when the client left.
func (s *Server) errorFor(info *reqInfo, err error) *apiError {
	if e := contextError(err); e != nil {
		return e
	}
	if errors.Is(err, engine.ErrDeviceFailed) {
		return deviceFailed(err)
	}
	if errors.Is(err, errClientGone) || errors.Is(err, context.Canceled) {
		return nil
	}
	if errors.Is(err, engine.ErrNoGeneration) {
		return &apiError{Status: http.StatusNotImplemented, Type: "not_supported_error", Code: "generation_unsupported", Message: err.Error()}
	}
	if errors.Is(err, engine.ErrInputTooLong) {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "input_too_long", Message: err.Error()}
	}
	if errors.Is(err, grammar.ErrNoToken) || errors.Is(err, grammar.ErrTooAmbiguous) {
		// The request's grammar, not the server, cannot go on.
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "grammar_failed", Message: err.Error()}
	}
	s.log.Error("generation failed", "id", info.id, "err", err)
	return internalError(err)
}
