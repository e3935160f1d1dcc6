package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/ardanlabs/jinja"
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

// render renders msgs with the model's template; the template's own
// errors (raise_exception, most often about the order of roles) are the
// client's to fix.
func (l *loaded) render(msgs []message, kwargs map[string]any) (string, *apiError) {
	if l.tmplErr != nil {
		return "", &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "chat_template_error", Message: l.tmplErr.Error()}
	}
	s, err := l.tmpl.render(msgs, kwargs)
	if err != nil {
		return "", badRequest("messages", "chat_template_error", "the model's chat template rejected the messages: %v", err)
	}
	return s, nil
}

// encodeChat encodes a rendered chat prompt. Special tokens in it are
// parsed; BOS is added where the vocabulary asks for it unless the
// template already wrote it.
func (l *loaded) encodeChat(text string) []int32 {
	ids := l.tok.Encode(text, false)
	if bos := l.tok.BOS(); l.addBOS && (len(ids) == 0 || ids[0] != bos) {
		ids = append([]int32{bos}, ids...)
	}
	return ids
}
