package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ardanlabs/jinja"

	"headinfer/engine/tokenizer"
)

// chatTemplate renders chat messages into a prompt: with the model's Jinja
// template (GGUF tokenizer.chat_template) when it has one, else as plain
// "role: content" lines followed by "assistant:".
type chatTemplate struct {
	t        *jinja.Template // nil: the plain format
	bos, eos string          // texts of the BOS and EOS tokens
	// quote passes the strings of JSON values from the request (tools,
	// the arguments of calls) through Tokenizer.Quote as they become
	// template values; nil: as they are.
	quote func(string) string
}

// newChatTemplate compiles src, the model's template ("" for none).
func newChatTemplate(src, bos, eos string) (*chatTemplate, error) {
	c := &chatTemplate{bos: bos, eos: eos}
	if src == "" {
		return c, nil
	}
	t, err := compileTemplate(src)
	if err != nil {
		return nil, fmt.Errorf("the model's chat template does not compile: %w", err)
	}
	c.t = t
	return c, nil
}

// compileTemplate compiles src, turning a panic in the template library
// into an error.
func compileTemplate(src string) (t *jinja.Template, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return jinja.Compile(src)
}

// render returns the prompt for msgs. kwargs are extra template variables;
// they cannot replace messages, bos_token, eos_token or
// add_generation_prompt.
func (c *chatTemplate) render(msgs []message, kwargs map[string]any) (string, error) {
	return c.renderTools(msgs, nil, kwargs)
}

// renderTools is render with the tools (their JSON entries as the request
// gave them) in the template's "tools" variable; none leaves it undefined,
// as templates expect of a request without tools. Messages and tools are
// template values with their keys in the order given, so that a template's
// tojson writes them as the client wrote them.
func (c *chatTemplate) renderTools(msgs []message, tools []json.RawMessage, kwargs map[string]any) (out string, err error) {
	if c.t == nil {
		return plainPrompt(msgs), nil
	}
	data := make(map[string]any, len(kwargs)+5)
	for k, v := range kwargs {
		data[k] = v
	}
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		list[i] = c.messageValue(m)
	}
	data["messages"] = list
	if len(tools) > 0 {
		vals := make([]jinja.Value, len(tools))
		for i, t := range tools {
			if vals[i], err = jsonValue(t, c.quote); err != nil {
				return "", err
			}
		}
		data["tools"] = vals
	}
	data["bos_token"] = c.bos
	data["eos_token"] = c.eos
	data["add_generation_prompt"] = true
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the chat template failed: %v", p)
		}
	}()
	return c.t.Render(data)
}

// messageValue is m as the template sees it: role, content, name when
// given, and tool_calls or tool_call_id when the message has them. The
// arguments of a call are an object, as the templates of tool-calling
// families write them with tojson; arguments that are not JSON stay the
// string they were.
func (c *chatTemplate) messageValue(m message) jinja.Value {
	v := jinja.NewDict()
	d := v.AsDict()
	d.Set("role", jinja.NewString(m.Role))
	d.Set("content", jinja.NewString(m.Content))
	if m.Name != "" {
		d.Set("name", jinja.NewString(m.Name))
	}
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, tc := range m.ToolCalls {
			args, err := jsonValue([]byte(tc.Function.Arguments), c.quote)
			if err != nil {
				args = jinja.NewString(quoteWith(c.quote, tc.Function.Arguments))
			}
			fn := jinja.NewDict()
			fn.AsDict().Set("name", jinja.NewString(tc.Function.Name))
			fn.AsDict().Set("arguments", args)
			call := jinja.NewDict()
			call.AsDict().Set("id", jinja.NewString(tc.ID))
			call.AsDict().Set("type", jinja.NewString("function"))
			call.AsDict().Set("function", fn)
			calls[i] = call
		}
		d.Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		d.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	return v
}

func quoteWith(quote func(string) string, s string) string {
	if quote == nil {
		return s
	}
	return quote(s)
}

// jsonValue decodes one JSON value into a template value, objects with
// their keys in order, strings (keys too) passed through quote.
func jsonValue(raw []byte, quote func(string) string) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := readJSONValue(dec, quote)
	if err != nil {
		return v, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return v, errors.New("data after the JSON value")
	}
	return v, nil
}

func readJSONValue(dec *json.Decoder, quote func(string) string) (jinja.Value, error) {
	t, err := dec.Token()
	if err != nil {
		return jinja.None(), err
	}
	switch x := t.(type) {
	case json.Delim:
		if x == '[' {
			var items []jinja.Value
			for dec.More() {
				v, err := readJSONValue(dec, quote)
				if err != nil {
					return v, err
				}
				items = append(items, v)
			}
			_, err := dec.Token()
			return jinja.NewList(items), err
		}
		obj := jinja.NewDict()
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return obj, err
			}
			v, err := readJSONValue(dec, quote)
			if err != nil {
				return v, err
			}
			obj.AsDict().Set(quoteWith(quote, k.(string)), v)
		}
		_, err := dec.Token()
		return obj, err
	case string:
		return jinja.NewString(quoteWith(quote, x)), nil
	case json.Number:
		return jinja.FromGoValue(x), nil
	case bool:
		return jinja.NewBool(x), nil
	}
	return jinja.None(), nil
}

// plainPrompt is the prompt for a model without a chat template: one
// "role: content" line per message, then "assistant:" for the reply.
func plainPrompt(msgs []message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content)
		b.WriteString("\n")
	}
	b.WriteString("assistant:")
	return b.String()
}

// Control tokens in a chat prompt come only from the template's own text.
// Every string of the request that reaches the template (content, role,
// name, chat_template_kwargs) passes through Tokenizer.Quote, which marks
// the characters that could make or complete a control token; the template
// is rendered on that text, so its logic (strip, role tests) works as
// usual, and EncodeQuoted reads the marked characters back as plain text.
// Placeholders rendered in place of the content would have lost what the
// template does to it (Llama 2 strips it); tokenizing the pieces
// separately would have changed the tokens at their edges.

// render renders msgs with the model's template; the template's own
// errors (raise_exception, most often about the order of roles) are the
// client's to fix. The result is for encodeChat. spec (nil: none) gives
// the tools: the template's "tools" for a family that knows them, else a
// system message that describes them (genericHistory).
func (l *loaded) render(msgs []message, spec *toolSpec, kwargs map[string]any) (string, *apiError) {
	if l.tmplErr != nil {
		return "", &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "chat_template_error", Message: l.tmplErr.Error()}
	}
	var tools []json.RawMessage
	if l.toolFormat == formatGeneric {
		msgs = genericHistory(msgs, spec)
	} else if spec.parses() {
		for _, t := range spec.tools {
			tools = append(tools, t.raw)
		}
	}
	quoted := make([]message, len(msgs))
	for i, m := range msgs {
		quoted[i] = message{Role: l.tok.Quote(m.Role), Content: l.tok.Quote(m.Content), Name: l.tok.Quote(m.Name), ToolCallID: l.tok.Quote(m.ToolCallID)}
		for _, c := range m.ToolCalls {
			c.ID, c.Function.Name = l.tok.Quote(c.ID), l.tok.Quote(c.Function.Name)
			quoted[i].ToolCalls = append(quoted[i].ToolCalls, c) // arguments: quoted as decoded
		}
	}
	kw, _ := quoteValue(l.tok, kwargs).(map[string]any)
	s, err := l.tmpl.renderTools(quoted, tools, kw)
	if err != nil {
		return "", badRequest("messages", "chat_template_error", "the model's chat template rejected the messages: %v", err)
	}
	return s, nil
}

// quoteValue returns v, a value decoded from JSON, with every string in
// it, map keys included, passed through tok.Quote.
func quoteValue(tok tokenizer.Tokenizer, v any) any {
	switch x := v.(type) {
	case string:
		return tok.Quote(x)
	case map[string]any:
		if x == nil {
			return x
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[tok.Quote(k)] = quoteValue(tok, e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = quoteValue(tok, e)
		}
		return s
	}
	return v
}

// encodeChat encodes a prompt from render: control tokens in the
// template's text are read, quoted request text is plain. BOS is added
// where the vocabulary asks for it unless the template already wrote it.
func (l *loaded) encodeChat(text string) []int32 {
	ids := l.tok.EncodeQuoted(text, false)
	if bos := l.tok.BOS(); l.addBOS && (len(ids) == 0 || ids[0] != bos) {
		ids = append([]int32{bos}, ids...)
	}
	return ids
}
