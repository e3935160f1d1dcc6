package server

// answer builds the response objects of one request.
type answer struct {
	id      string
	created int64
	model   string
	chat    bool
}

func (a answer) prefix() string {
	if a.chat {
		return "chatcmpl-"
	}
	return "cmpl-"
}

// whole is the non-streamed answer.
func (a answer) whole(text string, o outcome, promptTokens int) any {
	u := makeUsage(promptTokens, o)
	if a.chat {
		return chatResponse{
			ID: a.prefix() + a.id, Object: "chat.completion", Created: a.created, Model: a.model,
			Choices: []chatChoice{{Message: chatContent{Role: "assistant", Content: text}, FinishReason: string(o.finish)}},
			Usage:   u,
		}
	}
	return completionResponse{
		ID: a.prefix() + a.id, Object: "text_completion", Created: a.created, Model: a.model,
		Choices: []completionChoice{{Text: text, FinishReason: ptr(string(o.finish))}},
		Usage:   u,
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

func ptr[T any](v T) *T { return &v }
