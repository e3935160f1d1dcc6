package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"headinfer/engine/grammar"
	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

// job is a validated generation request, ready to run on the session.
type job struct {
	slot         *int // the batch slot it must run in (/completion's id_slot); nil: any
	chat         bool
	stream       bool
	includeUsage bool
	prompt       []int32
	maxTokens    int
	nKeep        int  // the request's n_keep: prompt tokens a context shift keeps (-1: all)
	keep         int  // tokens a context shift keeps in front (see keepOf)
	truncated    bool // the prompt was cut to fit the context (with context shift)
	params       sample.Params
	stop         []string
	thinks       bool             // a chat answer that may begin with a thinking block
	thinkOpen    bool             // the prompt opened the block: the text begins inside it
	trace        *trace           // the tokens' logprobs (or ids) when the answer shows them; nil: not asked
	grammar      *grammar.Grammar // the language the output must be in; nil: any text
	tools        *toolSpec        // the request's tools; nil: none
	native       *nativeInfo      // llama-server's /completion, answered in its format; nil: OpenAI's
	admitted     time.Time        // when it joined the queue (for the metrics)
}

// greedyBelow: a temperature under it is greedy decoding. OpenAI clients
// that drop zero-valued fields (go-openai among them) can only ask for
// greedy decoding with a tiny temperature, which would divide the logits
// into overflow anyway.
const greedyBelow = 1e-5

// Limits on the stop strings of one request.
const (
	maxStops   = 16
	maxStopLen = 1024
)

// decodeJSON decodes body, a request body read by readBody, into v, a
// pointer to a request struct.
func decodeJSON(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	err := dec.Decode(v)
	if err == nil {
		// One JSON value and nothing after it but space.
		if _, e := dec.Token(); e != io.EOF {
			err = errTrailing
		}
	}
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("", "invalid_json", "the request body is empty: send a JSON object")
	case errors.Is(err, errTrailing):
		return badRequest("", "invalid_json", "the request body has data after its JSON object")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "invalid_json", "the request body is not valid JSON: %v", err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("", "invalid_json", "the request body must be a JSON object, not %s", article(typ.Value))
		}
		field := strings.TrimPrefix(typ.Field, "samplingFields.")
		return badRequest(field, "invalid_type", "%s must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), article(typ.Value))
	}
	return badRequest("", "invalid_json", "the request body cannot be read: %v", err)
}

var errTrailing = errors.New("trailing data")

// jsonKind names a Go kind as the JSON type a client must send.
func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"):
		return "an integer"
	case strings.HasPrefix(k, "float"):
		return "a number"
	case k == "bool":
		return "true or false"
	case k == "string":
		return "a string"
	case k == "slice":
		return "an array"
	case k == "struct", k == "map":
		return "an object"
	}
	return "another type"
}

// article puts "a" or "an" before the name of a JSON type.
func article(typ string) string {
	if typ != "" && strings.ContainsRune("aeiou", rune(typ[0])) {
		return "an " + typ
	}
	return "a " + typ
}

// parseStop reads "stop": null, a string, or an array of strings.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var stops []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		stops = []string{one}
	} else if err := json.Unmarshal(raw, &stops); err != nil {
		return nil, badRequest("stop", "invalid_type", "stop must be a string or an array of strings")
	}
	if len(stops) > maxStops {
		return nil, badRequest("stop", "invalid_value", "stop has %d strings, at most %d are allowed", len(stops), maxStops)
	}
	for _, s := range stops {
		if s == "" || len(s) > maxStopLen {
			return nil, badRequest("stop", "invalid_value", "each stop string must have 1 to %d bytes", maxStopLen)
		}
	}
	return stops, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// promptOf reads "prompt": a string, an array of one string, or an array
// of token ids. Text is plain text, control tokens written in it included,
// unless parseSpecial; BOS is added where the vocabulary asks for it. Ids
// are used as given.
func (l *loaded) promptOf(raw json.RawMessage, parseSpecial bool) ([]int32, *apiError) {
	if isNull(raw) {
		return nil, badRequest("prompt", "missing_prompt", "prompt is required")
	}
	encode := func(text string) ([]int32, *apiError) {
		if e := l.checkPromptLength(len(text)); e != nil {
			return nil, e
		}
		if parseSpecial {
			return l.tok.EncodeSpecial(text, true), nil
		}
		return l.tok.Encode(text, true), nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		return encode(text)
	}
	var texts []string
	if err := json.Unmarshal(raw, &texts); err == nil {
		if len(texts) != 1 {
			return nil, badRequest("prompt", "invalid_value", "prompt has %d strings: this server answers one prompt per request", len(texts))
		}
		return encode(texts[0])
	}
	// Numbers, not int32s: an id past int32 must be answered as outside
	// the vocabulary, not as a prompt of the wrong type.
	var nums []json.Number
	if err := json.Unmarshal(raw, &nums); err == nil && len(nums) > 0 {
		ids := make([]int32, len(nums))
		for i, n := range nums {
			id, e := l.tokenID("prompt", n.String())
			if e != nil {
				return nil, e
			}
			ids[i] = id
		}
		return ids, nil
	}
	// llama-server's mixed prompt: text and token ids in one array, the
	// text tokenized in place (with BOS only when it comes first).
	var mixed []json.RawMessage
	if err := json.Unmarshal(raw, &mixed); err == nil && len(mixed) > 0 {
		var ids []int32
		for i, m := range mixed {
			var text string
			var n json.Number
			switch {
			case json.Unmarshal(m, &text) == nil:
				if e := l.checkPromptLength(len(text)); e != nil {
					return nil, e
				}
				if parseSpecial {
					ids = append(ids, l.tok.EncodeSpecial(text, i == 0)...)
				} else {
					ids = append(ids, l.tok.Encode(text, i == 0)...)
				}
			case json.Unmarshal(m, &n) == nil:
				id, e := l.tokenID("prompt", n.String())
				if e != nil {
					return nil, e
				}
				ids = append(ids, id)
			default:
				return nil, badRequest("prompt", "invalid_type", "prompt[%d] must be a string or a token id", i)
			}
		}
		return ids, nil
	}
	return nil, badRequest("prompt", "invalid_type", "prompt must be a string, an array of one string, an array of token ids, or an array of strings and token ids")
}

// tokenID reads s, a token id given in field param, and checks it against
// the vocabulary. Every token id a request carries goes through it, so
// that none reaches the sampler or the session unchecked.
func (l *loaded) tokenID(param, s string) (int32, *apiError) {
	if s == "" || strings.ContainsAny(s, ".eE") {
		return 0, badRequest(param, "invalid_type", "%s: token ids must be integers, got %q", param, s)
	}
	n := l.tok.VocabSize()
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, badRequest(param, "invalid_type", "%s: token ids must be integers, got %q", param, s)
	}
	if err != nil || id < 0 || id >= int64(n) {
		return 0, badRequest(param, "invalid_value", "%s: token id %s is outside the vocabulary of %d tokens (ids 0 to %d)", param, s, n, n-1)
	}
	return int32(id), nil
}

// Bounds of a logit_bias value, as OpenAI takes them.
const maxLogitBias = 100

// logitBiasOf checks "logit_bias": token ids of the vocabulary, biases in
// [-100, 100]. The first bad entry in the order of the ids is named.
func (l *loaded) logitBiasOf(raw map[string]float64) (map[int32]float32, *apiError) {
	if len(raw) == 0 {
		return nil, nil
	}
	keys := slices.Sorted(maps.Keys(raw))
	bias := make(map[int32]float32, len(raw))
	for _, k := range keys {
		id, e := l.tokenID("logit_bias", k)
		if e != nil {
			return nil, e
		}
		v := raw[k]
		if math.IsNaN(v) || v < -maxLogitBias || v > maxLogitBias {
			return nil, badRequest("logit_bias", "invalid_value", "logit_bias: the bias of token %d is %g, it must be between %d and %d", id, v, -maxLogitBias, maxLogitBias)
		}
		if _, twice := bias[id]; twice {
			return nil, badRequest("logit_bias", "invalid_value", "logit_bias names token %d twice", id)
		}
		bias[id] = float32(v)
	}
	return bias, nil
}

// samplingOf turns the request's sampling fields into sampler settings,
// with OpenAI's defaults where a field is absent: temperature 1, top_p 1;
// the extensions top_k, min_p and repeat_penalty default to off. The
// penalties cover the latest sample.DefaultRepeatLastN tokens, as
// llama-server's do.
func samplingOf(f *samplingFields) (sample.Params, *apiError) {
	p := sample.Params{Temperature: 1, RepeatPenalty: 1, RepeatLastN: sample.DefaultRepeatLastN}
	num := func(name string, v *float64, lo, hi float64, dst *float32) *apiError {
		if v == nil {
			return nil
		}
		if math.IsNaN(*v) || *v < lo || *v > hi {
			return badRequest(name, "invalid_value", "%s must be between %g and %g, got %g", name, lo, hi, *v)
		}
		if dst != nil {
			*dst = float32(*v)
		}
		return nil
	}
	for _, e := range []*apiError{
		num("temperature", f.Temperature, 0, 2, &p.Temperature),
		num("top_p", f.TopP, 0, 1, &p.TopP),
		num("min_p", f.MinP, 0, 1, &p.MinP),
		num("repeat_penalty", f.RepeatPenalty, 0, 10, &p.RepeatPenalty),
		num("frequency_penalty", f.FrequencyPenalty, -2, 2, &p.FrequencyPenalty),
		num("presence_penalty", f.PresencePenalty, -2, 2, &p.PresencePenalty),
	} {
		if e != nil {
			return p, e
		}
	}
	if p.Temperature < greedyBelow {
		p.Temperature = 0
	}
	if f.TopK != nil {
		if *f.TopK < 0 {
			return p, badRequest("top_k", "invalid_value", "top_k must be 0 (off) or positive, got %d", *f.TopK)
		}
		p.TopK = *f.TopK
	}
	if f.RepeatPenalty != nil && *f.RepeatPenalty == 0 {
		return p, badRequest("repeat_penalty", "invalid_value", "repeat_penalty must be positive (1 is off)")
	}
	if f.Seed != nil {
		p.Seed = uint64(*f.Seed)
	} else {
		p.Seed = rand.Uint64()
	}
	if err := p.Validate(); err != nil {
		return p, badRequest("", "invalid_value", "%v", err)
	}
	return p, nil
}

// commonChecks rejects what this server does not do for either endpoint.
func commonChecks(f *samplingFields) *apiError {
	if f.N != nil && *f.N != 1 {
		return badRequest("n", "invalid_value", "n must be 1: this server returns one choice per request")
	}
	if f.StreamOptions != nil && !f.Stream {
		return badRequest("stream_options", "invalid_value", "stream_options is only allowed with stream: true")
	}
	return nil
}

// checkLength refuses, before it is encoded, a prompt text of n bytes that
// cannot fit the context with room for one token: no token stands for
// more than MaxTokenBytes bytes, so it has at least n/MaxTokenBytes tokens.
// Encoding costs tens of bytes of memory per byte of text; this keeps a
// client from making the server pay that for a prompt it must refuse.
func (l *loaded) checkLength(n int) *apiError {
	atLeast := (n + l.tok.MaxTokenBytes() - 1) / l.tok.MaxTokenBytes()
	if l.addBOS {
		atLeast++
	}
	if atLeast < l.ctx {
		return nil
	}
	return contextExceeded("the prompt is %d bytes, at least %d tokens, and the context holds %d: shorten the prompt (or restart the server with a larger --ctx-size)", n, atLeast, l.ctx)
}

// checkPromptLength is checkLength for a prompt to generate from, which
// with context shift is cut to fit instead (see cutPrompt).
func (l *loaded) checkPromptLength(n int) *apiError {
	if l.shift {
		return nil
	}
	return l.checkLength(n)
}

func contextExceeded(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "context_length_exceeded", Message: fmt.Sprintf(format, args...)}
}

// finishJob fills in the parts of j that completions and chat share, given
// its prompt.
func (l *loaded) finishJob(j *job, f *samplingFields, maxTokens *int, maxName string) *apiError {
	if len(j.prompt) == 0 {
		return badRequest("prompt", "invalid_value", "the prompt is empty")
	}
	if len(j.prompt) >= l.ctx {
		if !l.shift {
			return contextExceeded("the prompt is %d tokens and the context holds %d: shorten the prompt (or restart the server with a larger --ctx-size or with --context-shift)", len(j.prompt), l.ctx)
		}
		if e := l.cutPrompt(j); e != nil {
			return e
		}
	}
	j.keep = l.keepOf(j.nKeep, len(j.prompt))
	room := l.room(len(j.prompt))
	j.maxTokens = room
	if maxTokens == nil && l.defaults.MaxTokens > 0 {
		j.maxTokens = min(room, l.defaults.MaxTokens)
	}
	l.defaults.fill(f)
	if maxTokens != nil {
		switch n := *maxTokens; {
		case n <= 0:
			return badRequest(maxName, "invalid_value", "%s must be positive, got %d", maxName, n)
		case n > room && !l.shift:
			e := badRequest(maxName, "context_length_exceeded",
				"the context holds %d tokens; the prompt takes %d and %s asks for %d more: ask for at most %d (or restart the server with --context-shift)", l.ctx, len(j.prompt), maxName, n, room)
			return e
		default:
			j.maxTokens = n
		}
	}
	var e *apiError
	if j.params, e = samplingOf(f); e != nil {
		return e
	}
	if j.params.LogitBias, e = l.logitBiasOf(f.LogitBias); e != nil {
		return e
	}
	if j.stop, e = parseStop(f.Stop); e != nil {
		return e
	}
	if j.grammar, e = grammarOf(&f.constraintFields); e != nil {
		return e
	}
	j.stream = f.Stream
	j.includeUsage = f.StreamOptions != nil && f.StreamOptions.IncludeUsage
	return nil
}

// room is how many tokens a request with a prompt of n tokens generates
// when it does not say: up to the end of the context, or with context
// shift one context's worth (llama-server goes on until an
// end-of-generation token, which a model may never draw).
func (l *loaded) room(n int) int {
	if l.shift {
		return l.ctx
	}
	return l.ctx - n
}

// keepOf is how many of a prompt's n tokens context shifts keep for a
// request's n_keep (-1: all of them), the BOS token added as
// llama-server adds it.
func (l *loaded) keepOf(nKeep, n int) int {
	if nKeep < 0 {
		return n
	}
	if l.addBOS {
		nKeep++
	}
	return min(nKeep, n)
}

// cutPrompt shortens a prompt that does not fit the context, as
// llama-server does with context shift: it keeps the first n_keep tokens
// (no BOS added here, as there) and drops whole blocks of half the rest
// of the context after them, as few as leave room for one token.
func (l *loaded) cutPrompt(j *job) *apiError {
	n, keep := len(j.prompt), j.nKeep
	if keep < 0 {
		keep = n
	}
	block := (l.ctx - keep) / 2
	if block < 1 {
		return contextExceeded("the prompt is %d tokens, the context holds %d and n_keep keeps %d of them: nothing can be dropped to make room; lower n_keep", n, l.ctx, keep)
	}
	erased := (n - keep - block) / block * block
	j.prompt = append(j.prompt[:keep:keep], j.prompt[keep+erased:]...)
	j.truncated = true
	return nil
}

// completionJob validates a /v1/completions request.
func (l *loaded) completionJob(req *completionRequest) (*job, *apiError) {
	if e := commonChecks(&req.samplingFields); e != nil {
		return nil, e
	}
	switch {
	case req.Echo:
		return nil, badRequest("echo", "unsupported", "echo is not supported")
	case req.BestOf != nil && *req.BestOf != 1:
		return nil, badRequest("best_of", "unsupported", "best_of must be 1")
	case req.Suffix != nil && *req.Suffix != "":
		return nil, badRequest("suffix", "unsupported", "suffix is not supported")
	}
	j := &job{}
	if req.Logprobs != nil {
		if e := checkTop("logprobs", *req.Logprobs); e != nil {
			return nil, e
		}
		j.trace = newTrace(*req.Logprobs)
	}
	var e *apiError
	if j.prompt, e = l.promptOf(req.Prompt, req.ParseSpecial); e != nil {
		return nil, e
	}
	if e := l.finishJob(j, &req.samplingFields, req.MaxTokens, "max_tokens"); e != nil {
		return nil, e
	}
	return j, nil
}

// chatJob validates a /v1/chat/completions request and renders its prompt.
// chatPrompt renders a chat request's messages and tools with the chat
// template, for encodeChat.
func (l *loaded) chatPrompt(req *chatRequest) (string, *toolSpec, *apiError) {
	msgs, e := messagesOf(req.Messages)
	if e != nil {
		return "", nil, e
	}
	tools, e := toolsOf(req, l.toolFormat)
	if e != nil {
		return "", nil, e
	}
	text, e := l.render(msgs, tools, req.ChatTemplateKwargs)
	return text, tools, e
}

func (l *loaded) chatJob(req *chatRequest) (*job, *apiError) {
	if e := commonChecks(&req.samplingFields); e != nil {
		return nil, e
	}
	logprobs := req.Logprobs != nil && *req.Logprobs
	switch {
	case req.TopLogprobs != nil && !logprobs:
		return nil, badRequest("top_logprobs", "invalid_value", "top_logprobs requires logprobs: true")
	case req.TopLogprobs != nil:
		if e := checkTop("top_logprobs", *req.TopLogprobs); e != nil {
			return nil, e
		}
	case !isNull(req.Functions) && string(bytes.TrimSpace(req.Functions)) != "[]":
		return nil, badRequest("functions", "unsupported", "functions are not supported")
	}
	text, tools, e := l.chatPrompt(req)
	if e != nil {
		return nil, e
	}
	if e := l.checkPromptLength(tokenizer.PlainLen(text)); e != nil {
		return nil, e
	}
	j := &job{chat: true, prompt: l.encodeChat(text), thinks: l.thinks, thinkOpen: l.thinks && promptOpensThink(text)}
	if logprobs {
		j.trace = newTrace(0)
		if req.TopLogprobs != nil {
			j.trace.top = *req.TopLogprobs
		}
	}
	maxTokens, name := req.MaxCompletionTokens, "max_completion_tokens"
	if maxTokens == nil {
		maxTokens, name = req.MaxTokens, "max_tokens"
	}
	if e := l.finishJob(j, &req.samplingFields, maxTokens, name); e != nil {
		return nil, e
	}
	if e := toolJob(j, tools, &req.constraintFields); e != nil {
		return nil, e
	}
	if j.grammar != nil {
		// The grammar holds from the first token, so the answer has no
		// thinking block to split off: it is all content, as generated.
		j.thinks, j.thinkOpen = false, false
	}
	return j, nil
}

// checkTop checks a request's count of alternatives per token.
func checkTop(name string, n int) *apiError {
	if n < 0 || n > maxTopLogprobs {
		return badRequest(name, "invalid_value", "%s must be between 0 and %d, got %d", name, maxTopLogprobs, n)
	}
	return nil
}

// message is one chat message with its content as plain text.
type message struct {
	Role       string
	Content    string
	Name       string
	ToolCalls  []toolCall // an assistant's calls
	ToolCallID string     // the call a tool message answers
}

// messagesOf checks the messages and flattens their content to text.
func messagesOf(in []chatMessage) ([]message, *apiError) {
	if len(in) == 0 {
		return nil, badRequest("messages", "invalid_value", "messages must be a non-empty array")
	}
	out := make([]message, len(in))
	for i, m := range in {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == "" {
			return nil, badRequest(param+".role", "invalid_value", "%s has no role", param)
		}
		out[i] = message{Role: m.Role, Name: m.Name, ToolCallID: m.ToolCallID}
		calls, e := toolCallsOf(param+".tool_calls", m.ToolCalls)
		if e != nil {
			return nil, e
		}
		out[i].ToolCalls = calls
		if isNull(m.Content) {
			continue
		}
		if err := json.Unmarshal(m.Content, &out[i].Content); err == nil {
			continue
		}
		var parts []contentPart
		if err := json.Unmarshal(m.Content, &parts); err != nil {
			return nil, badRequest(param+".content", "invalid_type", "%s.content must be a string or an array of text parts", param)
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Type != "text" {
				return nil, badRequest(param+".content", "unsupported", "%s.content has a %q part: only text is supported", param, p.Type)
			}
			b.WriteString(p.Text)
		}
		out[i].Content = b.String()
	}
	return out, nil
}
