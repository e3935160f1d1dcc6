package server

import (
	"context"
	"net"
	"time"

	"headinfer/engine"
)

// Serve answers HTTP on ln while load runs in the background (GET /health
// says "loading" until it returns), until ctx ends. Then it stops
// accepting connections, lets running requests finish for grace, cancels
// what is left, frees the model and returns nil. A failed load or a
// failed listener is returned as an error. With Options.ReloadOnFailure,
// load runs once more after the model's device fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration, load func() (*engine.Model, error)) error {
	if s.opt.ReloadOnFailure {
		s.closeMu.Lock()
		s.reload, s.reloadsLeft = load, 1
		s.closeMu.Unlock()
	}
	base, cancelBase := context.WithCancelCause(context.Background())
	defer cancelBase(errShuttingDown)
	hs := s.httpServer(base)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(s.listener(ln)) }()

	loaded := make(chan error, 1)
	go func() {
		t0 := time.Now()
		m, err := load()
		if err == nil {
			if err = s.SetModel(m); err != nil {
				m.Close()
			}
		}
		if err == nil {
			s.log.Info("model loaded", "model", s.name, "seconds", time.Since(t0).Seconds())
		}
		loaded <- err
	}()

	var failed error
	for done := false; !done; {
		select {
		case err := <-served:
			return err
		case err := <-loaded:
			loaded = nil
			if err != nil {
				failed = err
				done = true
			}
		case <-ctx.Done():
			done = true
		}
	}

	s.draining.Store(true)
	if failed == nil {
		s.log.Info("shutting down", "grace", grace)
	}
	stopCancel := time.AfterFunc(grace, func() { cancelBase(errShuttingDown) })
	defer stopCancel.Stop()
	shutCtx, cancel := context.WithTimeout(context.Background(), grace+5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		s.log.Warn("connections still open at exit", "err", err)
		hs.Close()
	}
	if err := s.Close(shutCtx); err != nil {
		s.log.Warn("closing the model", "err", err)
	}
	return failed
}
