package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"time"

	"headinfer/engine"
	"headinfer/engine/sample"
)

// llama-server's native POST /completion, for clients written against it:
// its request fields, mapped onto the same generation as the OpenAI
// routes, and its answer (content, stop, stop_type, timings,
// completion_probabilities). Its sampling defaults are llama.cpp's
// (sample.Defaults), not OpenAI's.

// nativeRequest is the body of POST /completion.
type nativeRequest struct {
	Model            string             `json:"model"`
	Prompt           json.RawMessage    `json:"prompt"`
	NPredict         *int               `json:"n_predict"`
	Stop             json.RawMessage    `json:"stop"`
	Seed             *int64             `json:"seed"`
	Temperature      *float64           `json:"temperature"`
	TopK             *int               `json:"top_k"`
	TopP             *float64           `json:"top_p"`
	MinP             *float64           `json:"min_p"`
	RepeatPenalty    *float64           `json:"repeat_penalty"`
	RepeatLastN      *int               `json:"repeat_last_n"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	NProbs           *int               `json:"n_probs"`
	CachePrompt      *bool              `json:"cache_prompt"` // accepted: the prefix cache is always on
	ReturnTokens     bool               `json:"return_tokens"`
	// IgnoreEOS generates past end-of-generation tokens: they are never
	// sampled, as llama-server's ignore_eos.
	IgnoreEOS bool `json:"ignore_eos"`
	// IDSlot runs the request in that slot (waiting for it), -1 in any.
	IDSlot *int `json:"id_slot"`
	// NKeep is how many prompt tokens a context shift keeps (-1: all;
	// BOS comes on top), with --context-shift.
	NKeep  *int `json:"n_keep"`
	Stream bool `json:"stream"`
	// ParseSpecial reads control tokens written in a text prompt as those
	// tokens, as on /v1/completions; by default they are plain text.
	ParseSpecial bool `json:"parse_special"`
	// grammar (GBNF), json_schema, and response_format as on the OpenAI
	// routes.
	constraintFields

	fields map[string]json.RawMessage // every field, for the unsupported ones
	ids    []int32                    // the prompt, made already (/infill): Prompt is not read
}

func (r *nativeRequest) UnmarshalJSON(b []byte) error {
	type plain nativeRequest
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	return json.Unmarshal(b, &r.fields)
}

// nativeUnsupported are llama-server's request fields for what this
// server does not do, with the values that ask for nothing (null always
// does). Any other value is refused with 400 rather than ignored, so that
// a client never gets an answer made otherwise than it asked for.
var nativeUnsupported = []struct {
	name string
	off  []any
}{
	{"mirostat", []any{0.0}},
	{"typical_p", []any{1.0}},
	{"dynatemp_range", []any{0.0}},
	{"xtc_probability", []any{0.0}},
	{"dry_multiplier", []any{0.0}},
	{"post_sampling_probs", []any{false}},
	{"samplers", nil},
	{"lora", []any{[]any{}}},
	{"response_fields", []any{[]any{}}},
	{"n_cmpl", []any{1.0}},
}

// unsupported names the first field that asks for what this server lacks.
func (r *nativeRequest) unsupported() *apiError {
	for _, u := range nativeUnsupported {
		raw, ok := r.fields[u.name]
		if !ok || isNull(raw) {
			continue
		}
		var v any
		_ = json.Unmarshal(raw, &v) // valid: the body decoded
		off := false
		for _, o := range u.off {
			off = off || reflect.DeepEqual(v, o)
		}
		if !off {
			return badRequest(u.name, "unsupported", "%s is not supported by this server", u.name)
		}
	}
	return nil
}

// nativeInfo is what a /completion answer reports of its request.
type nativeInfo struct {
	settings     nativeSettings
	returnTokens bool
	index        int // which of the request's prompts
}

// nativeSettings are llama-server's generation_settings (and /props's
// default_generation_settings.params), as far as this server has them.
type nativeSettings struct {
	NPredict         int      `json:"n_predict"`
	NKeep            int      `json:"n_keep"`
	Seed             int64    `json:"seed"` // -1: random
	Temperature      float32  `json:"temperature"`
	TopK             int      `json:"top_k"`
	TopP             float32  `json:"top_p"`
	MinP             float32  `json:"min_p"`
	RepeatPenalty    float32  `json:"repeat_penalty"`
	RepeatLastN      int      `json:"repeat_last_n"`
	PresencePenalty  float32  `json:"presence_penalty"`
	FrequencyPenalty float32  `json:"frequency_penalty"`
	Stop             []string `json:"stop"`
	NProbs           int      `json:"n_probs"`
	Stream           bool     `json:"stream"`
}

// nativeDefaults are /completion's defaults: llama.cpp's, where the
// server's command line does not set them.
func (l *loaded) nativeDefaults() nativeSettings {
	d := sample.Defaults()
	s := nativeSettings{NPredict: -1, Seed: -1, Temperature: d.Temperature, TopK: d.TopK, TopP: d.TopP, MinP: d.MinP,
		RepeatPenalty: d.RepeatPenalty, RepeatLastN: d.RepeatLastN, Stop: []string{}}
	o := l.defaults
	for _, p := range []struct {
		dst *float32
		v   *float64
	}{{&s.Temperature, o.Temperature}, {&s.TopP, o.TopP}, {&s.MinP, o.MinP}, {&s.RepeatPenalty, o.RepeatPenalty}} {
		if p.v != nil {
			*p.dst = float32(*p.v)
		}
	}
	if o.TopK != nil {
		s.TopK = *o.TopK
	}
	if o.Seed != nil {
		s.Seed = *o.Seed
	}
	if o.MaxTokens > 0 {
		s.NPredict = o.MaxTokens
	}
	return s
}

// nativeJob validates a /completion request.
func (l *loaded) nativeJob(req *nativeRequest) (*job, *apiError) {
	if e := req.unsupported(); e != nil {
		return nil, e
	}
	set := l.nativeDefaults()
	f := samplingFields{Stop: req.Stop, Stream: req.Stream, LogitBias: req.LogitBias, TopK: req.TopK, constraintFields: req.constraintFields,
		Temperature: ptr(float64(set.Temperature)), TopP: ptr(float64(set.TopP)), MinP: ptr(float64(set.MinP))}
	if req.Temperature != nil {
		f.Temperature = ptr(max(*req.Temperature, 0)) // llama-server: ≤ 0 is greedy
	}
	if f.TopK == nil {
		f.TopK = &set.TopK
	}
	if req.TopP != nil {
		f.TopP = req.TopP
	}
	if req.MinP != nil {
		f.MinP = req.MinP
	}
	f.RepeatPenalty = req.RepeatPenalty
	f.PresencePenalty, f.FrequencyPenalty = req.PresencePenalty, req.FrequencyPenalty
	if req.Seed != nil && *req.Seed != -1 {
		f.Seed = req.Seed
		set.Seed = *req.Seed
	}
	nProbs := 0
	if req.NProbs != nil {
		if e := checkTop("n_probs", *req.NProbs); e != nil {
			return nil, e
		}
		nProbs = *req.NProbs
	}
	n := set.NPredict
	if req.NPredict != nil {
		if n = *req.NPredict; n == 0 || n < -1 {
			return nil, badRequest("n_predict", "invalid_value", "n_predict must be -1 (up to the end of the context) or positive, got %d", n)
		}
	}
	j := &job{native: &nativeInfo{returnTokens: req.ReturnTokens}, trace: newTrace(-1)}
	if nProbs > 0 {
		j.trace.top = nProbs
	}
	var e *apiError
	if req.ids != nil {
		j.prompt = req.ids
	} else if j.prompt, e = l.promptOf(req.Prompt, req.ParseSpecial); e != nil {
		return nil, e
	}
	if req.NKeep != nil {
		if j.nKeep = *req.NKeep; j.nKeep < -1 {
			return nil, badRequest("n_keep", "invalid_value", "n_keep must be -1 (the whole prompt) or ≥ 0, got %d", j.nKeep)
		}
	}
	if e := l.finishJob(j, &f, nil, "n_predict"); e != nil {
		return nil, e
	}
	if s := req.IDSlot; s != nil && *s != -1 {
		if *s < 0 || l.batch == nil || *s >= l.batch.Slots() {
			n := 0
			if l.batch != nil {
				n = l.batch.Slots()
			}
			return nil, badRequest("id_slot", "invalid_value", "id_slot must be -1 (any) or a slot from 0 to %d, got %d", n-1, *s)
		}
		j.slot = s
	}
	if req.IgnoreEOS {
		if j.params.LogitBias == nil {
			j.params.LogitBias = map[int32]float32{}
		}
		for id := range int32(l.tok.VocabSize()) {
			if l.tok.IsEOG(id) {
				j.params.LogitBias[id] = -1e30 // below any logit: never drawn
			}
		}
	}
	// As llama-server: the context's end stops a longer n_predict, and -1
	// goes up to it.
	switch room := l.room(len(j.prompt)); {
	case n < 0:
		j.maxTokens = room
	case l.shift:
		j.maxTokens = n
	default:
		j.maxTokens = min(n, room)
	}
	if req.RepeatLastN != nil {
		switch r := *req.RepeatLastN; {
		case r < -1:
			return nil, badRequest("repeat_last_n", "invalid_value", "repeat_last_n must be -1 (the whole context), 0 (off) or positive, got %d", r)
		case r == 0: // no history to penalize
			j.params.RepeatPenalty, j.params.PresencePenalty, j.params.FrequencyPenalty = 1, 0, 0
		default:
			j.params.RepeatLastN = r
		}
		set.RepeatLastN = *req.RepeatLastN
	}
	set.NPredict, set.NProbs, set.Stream, set.NKeep = n, nProbs, req.Stream, j.nKeep
	set.Temperature, set.TopK, set.TopP, set.MinP = j.params.Temperature, j.params.TopK, j.params.TopP, j.params.MinP
	set.RepeatPenalty = j.params.RepeatPenalty
	set.PresencePenalty, set.FrequencyPenalty = j.params.PresencePenalty, j.params.FrequencyPenalty
	if j.stop != nil {
		set.Stop = j.stop
	}
	j.native.settings = set
	return j, nil
}

func (s *Server) nativeCompletion(w http.ResponseWriter, r *http.Request) {
	serveJobs(s, w, r, func(q *nativeRequest) string { return q.Model }, (*loaded).nativeJobs)
}

// nativeJobs makes a job of each prompt of a /completion request: a
// prompt is a string, token ids, or strings and ids mixed; an array of
// several such (strings, or arrays) is several prompts, answered as an
// array, as llama-server does.
func (l *loaded) nativeJobs(req *nativeRequest) ([]*job, *apiError) {
	var items []json.RawMessage
	several := false
	if json.Unmarshal(req.Prompt, &items) == nil && len(items) > 1 {
		strs := 0
		for _, it := range items {
			switch t := bytes.TrimSpace(it); {
			case len(t) > 0 && t[0] == '[':
				several = true
			case len(t) > 0 && t[0] == '"':
				strs++
			}
		}
		several = several || strs == len(items)
	}
	if !several {
		j, e := l.nativeJob(req)
		return []*job{j}, e
	}
	if req.Stream {
		return nil, badRequest("prompt", "unsupported", "several prompts cannot be streamed: send them one by one")
	}
	jobs := make([]*job, len(items))
	for i, it := range items {
		one := *req
		one.Prompt = it
		j, e := l.nativeJob(&one)
		if e != nil {
			return nil, e
		}
		j.native.index = i
		jobs[i] = j
	}
	return jobs, nil
}

// nativeChunk is one event of a /completion stream.
type nativeChunk struct {
	Index   int          `json:"index"`
	Content string       `json:"content"`
	Tokens  []int32      `json:"tokens"`
	Stop    bool         `json:"stop"`
	Probs   []nativeProb `json:"completion_probabilities,omitempty"`
}

// nativeResponse is a /completion answer, or a stream's last event (then
// Content is "").
type nativeResponse struct {
	nativeChunk
	Model              string         `json:"model"`
	IDSlot             int            `json:"id_slot"`
	TokensPredicted    int            `json:"tokens_predicted"`
	TokensEvaluated    int            `json:"tokens_evaluated"`
	TokensCached       int            `json:"tokens_cached"`
	GenerationSettings nativeSettings `json:"generation_settings"`
	Truncated          bool           `json:"truncated"`
	StopType           string         `json:"stop_type"` // eos, limit or word
	StoppingWord       string         `json:"stopping_word"`
	Timings            nativeTimings  `json:"timings"`
}

// nativeTimings are llama-server's timings, from the engine's counts: the
// prompt's prefill and the decode steps (a batched step counts in full).
type nativeTimings struct {
	CacheN              int     `json:"cache_n"`
	PromptN             int     `json:"prompt_n"`
	PromptMS            float64 `json:"prompt_ms"`
	PromptPerTokenMS    float64 `json:"prompt_per_token_ms"`
	PromptPerSecond     float64 `json:"prompt_per_second"`
	PredictedN          int     `json:"predicted_n"`
	PredictedMS         float64 `json:"predicted_ms"`
	PredictedPerTokenMS float64 `json:"predicted_per_token_ms"`
	PredictedPerSecond  float64 `json:"predicted_per_second"`
}

func timingsOf(o outcome) nativeTimings {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	per := func(n int, d time.Duration) (perToken, perSecond float64) {
		if n == 0 || d <= 0 {
			return 0, 0
		}
		return ms(d) / float64(n), float64(n) / d.Seconds()
	}
	t := nativeTimings{CacheN: o.cached, PromptN: o.stats.PrefillTokens, PromptMS: ms(o.stats.Prefill),
		PredictedN: o.completion, PredictedMS: ms(o.stats.Decode)}
	t.PromptPerTokenMS, t.PromptPerSecond = per(t.PromptN, o.stats.Prefill)
	t.PredictedPerTokenMS, t.PredictedPerSecond = per(o.stats.DecodeTokens, o.stats.Decode)
	return t
}

// nativeWhole is the answer to a /completion request: with the whole
// text, or as a stream's last event with the tokens left over.
func (a answer) nativeWhole(text string, o outcome, j *job, steps []stepProbs) nativeResponse {
	c := nativeChunk{Index: j.native.index, Content: text, Tokens: []int32{}, Stop: true}
	if j.native.returnTokens || j.stream {
		c.Tokens = tokenIDs(steps)
	}
	if a.lp != nil {
		c.Probs = a.lp.native(steps)
	}
	stopType := "eos"
	switch {
	case o.stopWord != "":
		stopType = "word"
	case o.finish == engine.FinishLength:
		stopType = "limit"
	}
	return nativeResponse{nativeChunk: c, Model: a.model, IDSlot: o.slot, TokensPredicted: o.completion, TokensEvaluated: len(j.prompt),
		TokensCached: o.cached, GenerationSettings: j.native.settings, StopType: stopType, StoppingWord: o.stopWord,
		Truncated: o.truncated, Timings: timingsOf(o)}
}

func tokenIDs(steps []stepProbs) []int32 {
	ids := make([]int32, len(steps))
	for i, s := range steps {
		ids[i] = s.chosen.id
	}
	return ids
}
