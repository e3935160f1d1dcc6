package server

import "strings"

// answer builds the response objects of one request.
type answer struct {
	id      string
	created int64
	model   string
	chat    bool
	think   *thinkSplitter // chat answers of a thinking model; nil: text is content
	native  bool           // llama-server's /completion format (native.go)
	lp      *logprobFormat // set when the request asked for logprobs
	tools   *toolStream    // chat answers that may call tools; nil: text is content
}

// finishReason is the answer's finish_reason: "tool_calls" when it called
// tools, else how the generation ended.
func (a answer) finishReason(o outcome) string {
	if a.tools != nil && len(a.tools.calls) > 0 {
		return "tool_calls"
	}
	return string(o.finish)
}

func (a answer) prefix() string {
	if a.chat {
		return "chatcmpl-"
	}
	return "cmpl-"
}

// whole is the non-streamed answer; steps are the generated tokens when
// the request asked to see them.
func (a answer) whole(text string, o outcome, j *job, steps []stepProbs) any {
	if a.native {
		return a.nativeWhole(text, o, j, steps)
	}
	u := makeUsage(len(j.prompt), o)
	if a.chat {
		msg := chatContent{Role: "assistant", Content: text}
		if a.think != nil {
			r, c := a.think.add(text)
			fr, fc := a.think.flush()
			msg.ReasoningContent, msg.Content = r+fr, c+fc
		}
		if a.tools != nil {
			c := a.tools.add(msg.Content)
			fc, calls := a.tools.flush()
			msg.Content, msg.ToolCalls = c+fc, calls
			if len(calls) > 0 {
				msg.Content = strings.TrimSpace(msg.Content)
			}
		}
		return chatResponse{
			ID: a.prefix() + a.id, Object: "chat.completion", Created: a.created, Model: a.model,
			Choices: []chatChoice{{Message: msg, Logprobs: a.logprobs(steps), FinishReason: a.finishReason(o)}},
			Usage:   u, Timings: ptr(timingsOf(o)),
		}
	}
	return completionResponse{
		ID: a.prefix() + a.id, Object: "text_completion", Created: a.created, Model: a.model,
		Choices: []completionChoice{{Text: text, Logprobs: a.logprobs(steps), FinishReason: ptr(string(o.finish))}},
		Usage:   u, Timings: ptr(timingsOf(o)),
	}
}

// roleChunk opens a chat stream: the delta that names the role.
func (a answer) roleChunk() chatChunk {
	c := a.chatChunk(nil)
	c.Choices = []chatChunkChoice{{Delta: chatDelta{Role: "assistant", Content: ptr("")}}}
	return c
}

// chunk is one stream event with text, or the last one (empty text and a
// finish reason).
func (a answer) chunk(text string, finish *string) any {
	if a.native {
		return nativeChunk{Content: text, Tokens: []int32{}}
	}
	if a.chat {
		c := a.chatChunk(nil)
		d := chatDelta{}
		if finish == nil {
			d.Content = &text
		}
		c.Choices = []chatChunkChoice{{Delta: d, FinishReason: finish}}
		return c
	}
	return a.completionChunk([]completionChoice{{Text: text, FinishReason: finish}}, nil)
}

// thinkChunks are the stream events for the next piece of generated text
// (or, with end, for what the splitters held back): with a thinking block
// one with its reasoning and one with content, as far as each has text;
// with tools, at the end, the calls.
func (a answer) thinkChunks(text string, end bool) []any {
	var r, c string
	switch {
	case a.think == nil:
		c = text
	case end:
		r, c = a.think.flush()
	default:
		r, c = a.think.add(text)
	}
	var calls []toolCall
	if a.tools != nil {
		c = a.tools.add(c)
		if end {
			var fc string
			fc, calls = a.tools.flush()
			c += fc
		}
	}
	var out []any
	if r != "" {
		ch := a.chatChunk(nil)
		ch.Choices = []chatChunkChoice{{Delta: chatDelta{ReasoningContent: &r}}}
		out = append(out, ch)
	}
	if c != "" {
		out = append(out, a.chunk(c, nil))
	}
	for i, call := range calls {
		out = append(out, a.callChunk(toolCallDelta{Index: i, ID: call.ID, Type: call.Type, Function: toolFunctionDelta{Name: call.Function.Name}}))
		out = append(out, a.callChunk(toolCallDelta{Index: i, Function: toolFunctionDelta{Arguments: call.Function.Arguments}}))
	}
	return out
}

// callChunk is a stream event with a piece of a tool call: OpenAI's
// first event of a call names it, the next ones carry its arguments.
func (a answer) callChunk(d toolCallDelta) chatChunk {
	c := a.chatChunk(nil)
	c.Choices = []chatChunkChoice{{Delta: chatDelta{ToolCalls: []toolCallDelta{d}}}}
	return c
}

// usageChunk is the extra last event of a stream with
// stream_options.include_usage: no choices, only the usage.
func (a answer) usageChunk(u *usage) any {
	if a.chat {
		c := a.chatChunk(u)
		c.Choices = []chatChunkChoice{}
		return c
	}
	return a.completionChunk([]completionChoice{}, u)
}

func (a answer) chatChunk(u *usage) chatChunk {
	return chatChunk{ID: a.prefix() + a.id, Object: "chat.completion.chunk", Created: a.created, Model: a.model, Usage: u}
}

func (a answer) completionChunk(c []completionChoice, u *usage) completionResponse {
	return completionResponse{ID: a.prefix() + a.id, Object: "text_completion", Created: a.created, Model: a.model, Choices: c, Usage: u}
}

// logprobs is a choice's logprobs object for steps: nil (null) when the
// request did not ask for them.
func (a answer) logprobs(steps []stepProbs) any {
	switch {
	case a.lp == nil:
		return nil
	case a.chat:
		return a.lp.chat(steps)
	}
	return a.lp.legacy(steps)
}

// withSteps gives a stream event the tokens whose text it carries (or
// the last event the tokens left over): their logprobs, and for
// /completion their ids.
func (a answer) withSteps(c any, steps []stepProbs) any {
	if len(steps) == 0 {
		return c
	}
	switch c := c.(type) {
	case chatChunk:
		c.Choices[0].Logprobs = a.logprobs(steps)
		return c
	case completionResponse:
		c.Choices[0].Logprobs = a.logprobs(steps)
		return c
	case nativeChunk:
		c.Tokens = tokenIDs(steps)
		if a.lp != nil {
			c.Probs = a.lp.native(steps)
		}
		return c
	}
	return c
}

// withTimings puts llama-server's timings on a stream's last choice event.
func withTimings(c any, o outcome) any {
	switch c := c.(type) {
	case chatChunk:
		c.Timings = ptr(timingsOf(o))
		return c
	case completionResponse:
		c.Timings = ptr(timingsOf(o))
		return c
	}
	return c
}

func ptr[T any](v T) *T { return &v }
