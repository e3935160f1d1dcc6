package server

import (
	"fmt"
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
func (c *chatTemplate) render(msgs []message, kwargs map[string]any) (out string, err error) {
	if c.t == nil {
		return plainPrompt(msgs), nil
	}
	data := make(map[string]any, len(kwargs)+4)
	for k, v := range kwargs {
		data[k] = v
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		e := map[string]any{"role": m.Role, "content": m.Content}
		if m.Name != "" {
			e["name"] = m.Name
		}
		list[i] = e
	}
	data["messages"] = list
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
// client's to fix. The result is for encodeChat.
func (l *loaded) render(msgs []message, kwargs map[string]any) (string, *apiError) {
	if l.tmplErr != nil {
		return "", &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "chat_template_error", Message: l.tmplErr.Error()}
	}
	quoted := make([]message, len(msgs))
	for i, m := range msgs {
		quoted[i] = message{Role: l.tok.Quote(m.Role), Content: l.tok.Quote(m.Content), Name: l.tok.Quote(m.Name)}
	}
	kw, _ := quoteValue(l.tok, kwargs).(map[string]any)
	s, err := l.tmpl.render(quoted, kw)
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
