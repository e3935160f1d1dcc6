package server

import (
	"context"
	"errors"
	"time"

	"headinfer/engine"
	"headinfer/engine/tokenizer"
)

// outcome is how a generation ended.
type outcome struct {
	finish     engine.FinishReason
	completion int // tokens generated, including any cut off by a stop string
	cached     int // prompt tokens whose KV was reused, not prefilled
}

// generate runs j on the session, which the caller holds, and passes the
// text to emit as it becomes final: valid UTF-8, with stop strings and
// what follows them removed. It stops within one decode step when ctx ends
// (returning ctx's cause) or emit fails (returning errClientGone).
func (s *Server) generate(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
	s.metrics.sequencesRunning.Inc()
	defer s.metrics.sequencesRunning.Dec()
	last := j.admitted
	se := l.se
	o := outcome{cached: l.prefix.prepare(se, j.prompt)}
	s.metrics.prefixReuse(o.cached)
	before := se.Stats()
	dec := tokenizer.NewDecoder(l.tok)
	for _, id := range j.prompt {
		dec.Add(id) // so that the first token's leading space decodes as in `generate`
	}
	stop := &stopper{stops: j.stop}
	var emitErr error
	stopped := false
	send := func(text string) bool {
		if text == "" || emitErr != nil {
			return emitErr == nil
		}
		if err := emit(text); err != nil {
			emitErr = err
			return false
		}
		return true
	}
	gp := engine.GenerateParams{MaxTokens: j.maxTokens, Sampling: j.params}
	finish, err := se.Generate(ctx, j.prompt[o.cached:], gp, func(id int32) bool {
		o.completion++
		now := time.Now()
		if o.completion == 1 {
			s.metrics.timeToFirstToken.Observe(now.Sub(j.admitted).Seconds())
		} else {
			s.metrics.timePerToken.Observe(now.Sub(last).Seconds())
			s.metrics.batchSize.Set(1) // one sequence per decode step
		}
		last = now
		out, hit := stop.add(dec.Add(id))
		if !send(out) {
			return false
		}
		if hit {
			stopped = true
			return false
		}
		return ctx.Err() == nil
	})
	s.metrics.generation(o.completion, se.Stats().Sub(before), se.Memory())

	switch {
	case emitErr != nil:
		return o, errors.Join(errClientGone, emitErr)
	case ctx.Err() != nil && !stopped:
		return o, context.Cause(ctx)
	case err != nil:
		return o, err
	case stopped:
		o.finish = engine.FinishStop
		return o, nil
	}
	o.finish = finish
	out, hit := stop.add(dec.Flush())
	if hit {
		o.finish = engine.FinishStop
	} else {
		out += stop.flush()
	}
	if !send(out) {
		return o, errors.Join(errClientGone, emitErr)
	}
	return o, nil
}
