package server

import (
	"bytes"
	"encoding/json"
)

// The request and response bodies of the OpenAI API, as far as this server
// reads and writes them. Fields it does not know are ignored.

// samplingFields are the request fields that completions and chat share.
type samplingFields struct {
	Model            string          `json:"model"`
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	TopK             *int            `json:"top_k"`
	MinP             *float64        `json:"min_p"`
	RepeatPenalty    *float64        `json:"repeat_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	Seed             *int64          `json:"seed"`
	Stop             json.RawMessage `json:"stop"`
	Stream           bool            `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	N                *int            `json:"n"`
	// LogitBias maps token ids, as JSON object keys, to a bias in
	// [-100, 100] added to their logits.
	LogitBias map[string]float64 `json:"logit_bias"`
	constraintFields
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	samplingFields
	Prompt   json.RawMessage `json:"prompt"`
	Echo     bool            `json:"echo"`
	BestOf   *int            `json:"best_of"`
	Logprobs *int            `json:"logprobs"`
	Suffix   *string         `json:"suffix"`
	// ParseSpecial (an extension) reads control tokens written in a text
	// prompt ("</s>", "<|eot_id|>") as those tokens; by default they are
	// plain text.
	ParseSpecial bool `json:"parse_special"`
}

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	samplingFields
	Messages            []chatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	Functions           json.RawMessage `json:"functions"`
	// ChatTemplateKwargs are extra variables for the chat template (as
	// vLLM and llama.cpp accept them), e.g. {"enable_thinking": false}.
	ChatTemplateKwargs map[string]any `json:"chat_template_kwargs"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Name    string          `json:"name,omitempty"`
	// ToolCalls are the calls an assistant message made (its content
	// null or text); ToolCallID is the call a "tool" message answers.
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

// contentPart is one element of a message's content given as an array.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type usage struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails promptTokensDetails `json:"prompt_tokens_details"`
}

// promptTokensDetails says how many prompt tokens came from the prefix
// cache, as OpenAI reports it.
type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func makeUsage(prompt int, o outcome) *usage {
	return &usage{PromptTokens: prompt, CompletionTokens: o.completion, TotalTokens: prompt + o.completion,
		PromptTokensDetails: promptTokensDetails{CachedTokens: o.cached}}
}

// completionResponse is a /v1/completions answer, or one chunk of its
// stream (then Usage is nil except in the usage chunk).
type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"` // "text_completion"
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
	// Timings, as llama-server adds them to an OpenAI answer.
	Timings *nativeTimings `json:"timings,omitempty"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`      // null unless asked for
	FinishReason *string `json:"finish_reason"` // null in stream chunks until the last
}

// chatResponse is a /v1/chat/completions answer ("chat.completion").
type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage"`
	// Timings, as llama-server adds them to an OpenAI answer.
	Timings *nativeTimings `json:"timings,omitempty"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatContent `json:"message"`
	Logprobs     any         `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type chatContent struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ReasoningContent is the model's thinking block, as llama-server
	// and DeepSeek's API send it; absent when there is none.
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
}

// MarshalJSON writes the content as null in an answer that called tools
// and wrote no text besides, as OpenAI answers it.
func (c chatContent) MarshalJSON() ([]byte, error) {
	type plain chatContent
	var v any = plain(c)
	if c.Content == "" && len(c.ToolCalls) > 0 {
		v = struct {
			plain
			Content *string `json:"content"`
		}{plain: plain(c)}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// chatChunk is one "chat.completion.chunk" of a chat stream.
type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *usage            `json:"usage,omitempty"`
	// Timings, on the event that ends the choice, as llama-server sends them.
	Timings *nativeTimings `json:"timings,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role             string          `json:"role,omitempty"`
	Content          *string         `json:"content,omitempty"`
	ReasoningContent *string         `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCallDelta `json:"tool_calls,omitempty"`
}

type modelList struct {
	Object string       `json:"object"` // "list"
	Data   []modelEntry `json:"data"`
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Meta, as llama-server gives it, once the model is loaded.
	Meta *modelMeta `json:"meta,omitempty"`
}

type modelMeta struct {
	NVocab    int `json:"n_vocab"`
	NCtxTrain int `json:"n_ctx_train,omitempty"`
	NEmbd     int `json:"n_embd,omitempty"`
}

// RequestDefaults are sampling settings for requests that leave them out,
// set on the server's command line as on llama-server's. A nil field (and
// MaxTokens 0) keeps the route's own default: OpenAI's on the /v1 routes,
// llama.cpp's on /completion.
type RequestDefaults struct {
	Temperature, TopP, MinP, RepeatPenalty *float64
	TopK                                   *int
	Seed                                   *int64
	MaxTokens                              int // tokens to generate; 0: up to the end of the context
}

// fill sets f's absent fields to the defaults.
func (d RequestDefaults) fill(f *samplingFields) {
	for _, p := range []struct {
		dst **float64
		v   *float64
	}{
		{&f.Temperature, d.Temperature}, {&f.TopP, d.TopP}, {&f.MinP, d.MinP}, {&f.RepeatPenalty, d.RepeatPenalty},
	} {
		if *p.dst == nil {
			*p.dst = p.v
		}
	}
	if f.TopK == nil {
		f.TopK = d.TopK
	}
	if f.Seed == nil {
		f.Seed = d.Seed
	}
}

// Check reports the first default a request could not carry (a
// temperature above 2, a negative top-k, …), as the request would be
// refused.
func (d RequestDefaults) Check() error {
	var f samplingFields
	d.fill(&f)
	if _, e := samplingOf(&f); e != nil {
		return e
	}
	return nil
}
