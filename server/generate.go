package server

import (
	"context"
	"errors"
	"time"

	"headinfer/engine"
	"headinfer/engine/grammar"
	"headinfer/engine/tokenizer"
)

// outcome is how a generation ended.
type outcome struct {
	finish     engine.FinishReason
	completion int          // tokens generated, including any cut off by a stop string
	cached     int          // prompt tokens whose KV was reused, not prefilled
	stopWord   string       // the stop string that ended it, if one did
	slot       int          // the batch slot it ran in
	stats      engine.Stats // the engine's work for it (llama-server's timings)
	// truncated says the sequence did not fit the context: its prompt
	// was cut, its context shifted, or a full context ended it.
	truncated bool
}

// generate runs j as a sequence of the batch (the caller holds a place in
// the queue) and passes the text to emit as it becomes final: valid
// UTF-8, with stop strings and what follows them removed. It stops within
// one decode step when ctx ends (returning ctx's cause) or emit fails
// (returning errClientGone).
func (s *Server) generate(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
	s.metrics.sequencesRunning.Inc()
	defer s.metrics.sequencesRunning.Dec()
	last := j.admitted
	var o outcome
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
	req := engine.Request{
		Prompt: j.prompt,
		Params: engine.GenerateParams{MaxTokens: j.maxTokens, Sampling: j.params, Shift: l.shift, Keep: j.keep},
		// On the batch's goroutine, which alone uses the prefix cache.
		Prepare: func(_ int, se *engine.Session) int { return l.prefix.prepare(se, j.prompt) },
		Fresh:   l.prefix.off,
		Slot:    j.slot,
	}
	if j.grammar != nil {
		req.Params.Constraint = grammar.NewMatcher(j.grammar, l.vocab.get(l.tok))
	}
	if j.trace.logprobs() {
		// Only then: the logits of every step are copied to the host.
		req.Params.Sampled = j.trace.sampled
	}
	res, err := l.batch.Generate(ctx, req, func(id int32) bool {
		o.completion++
		now := time.Now()
		if o.completion == 1 {
			s.metrics.timeToFirstToken.Observe(now.Sub(j.admitted).Seconds())
		} else {
			s.metrics.timePerToken.Observe(now.Sub(last).Seconds())
		}
		last = now
		j.trace.token(id)
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
	o.cached, o.stats, o.slot = res.Cached, res.Stats, res.Slot
	o.truncated = j.truncated || res.Stats.Shifts > 0 || res.Finish == engine.FinishLength && len(j.prompt)+res.Tokens >= l.ctx
	s.metrics.prefixReuse(o.cached)
	s.metrics.generation(o.completion, res.Stats, l.batch.Memory())
	finish := res.Finish

	switch {
	case emitErr != nil:
		return o, errors.Join(errClientGone, emitErr)
	case ctx.Err() != nil && !stopped:
		return o, context.Cause(ctx)
	case err != nil:
		return o, err
	case stopped:
		o.finish, o.stopWord = engine.FinishStop, stop.hit
		return o, nil
	}
	o.finish = finish
	out, hit := stop.add(dec.Flush())
	if hit {
		o.finish, o.stopWord = engine.FinishStop, stop.hit
	} else {
		out += stop.flush()
	}
	if !send(out) {
		return o, errors.Join(errClientGone, emitErr)
	}
	return o, nil
}
