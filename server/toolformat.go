package server

import (
	"bytes"
	"encoding/json"
	"strings"
)

// toolFormat is how a model family writes tool calls. The chat template
// shows it: templates that know tools read a "tools" variable and spell
// out the format they teach the model.
type toolFormat int

const (
	// formatGeneric is for a model whose template does not know tools
	// (or that has no template): the tools are described in a system
	// message (genericToolPrompt) and the model answers with one JSON
	// object, {"tool_call": {"name", "arguments"}}, {"tool_calls":
	// [{"name", "arguments"}, ...]} or {"response": "text"}, as
	// llama-server's generic format asks.
	formatGeneric toolFormat = iota
	// formatLlama3 is Llama 3.1's and 3.2's: a JSON object {"name",
	// "parameters"} as the whole answer, after <|python_tag|> or not.
	formatLlama3
	// formatHermes is Hermes 2 Pro's, Qwen 2.5's and Qwen 3's: each call
	// is <tool_call>{"name", "arguments"}</tool_call>, text around them.
	formatHermes
	// formatMistral is Mistral's: [TOOL_CALLS] and a JSON array of
	// {"name", "arguments"}.
	formatMistral
)

func (f toolFormat) String() string {
	return [...]string{"generic", "llama3", "hermes", "mistral"}[f]
}

// toolFormatOf reads the format from a chat template's source. Control
// tokens such as <|python_tag|> and [TOOL_CALLS] are not part of the
// generated text (they decode to nothing), so they only serve here.
func toolFormatOf(src string) toolFormat {
	switch {
	case !strings.Contains(src, "tools"):
		return formatGeneric
	case strings.Contains(src, "<tool_call>"):
		return formatHermes
	case strings.Contains(src, "[TOOL_CALLS]"):
		return formatMistral
	case strings.Contains(src, "<|start_header_id|>"):
		return formatLlama3
	}
	return formatGeneric
}

// genericToolPrompt is the system text that teaches a model without a
// tool format the generic one.
func (s *toolSpec) genericToolPrompt() string {
	var b strings.Builder
	b.WriteString("You can call the following tools:\n")
	for _, t := range s.tools {
		if s.choice == choiceNamed && t.name != s.named {
			continue
		}
		b.WriteString(marshalPlain(struct {
			Name        string          `json:"name"`
			Description string          `json:"description,omitempty"`
			Parameters  json.RawMessage `json:"parameters"`
		}{t.name, t.desc, compactJSON(t.params)}))
		b.WriteString("\n")
	}
	b.WriteString("\nTo call a tool, answer with only this JSON object:\n")
	b.WriteString(`{"tool_call": {"name": "<tool name>", "arguments": {<the arguments>}}}`)
	if s.parallel {
		b.WriteString("\nTo call several tools at once, answer with only this JSON object:\n")
		b.WriteString(`{"tool_calls": [{"name": "<tool name>", "arguments": {<the arguments>}}, ...]}`)
	}
	switch s.choice {
	case choiceRequired:
		b.WriteString("\nYou must call a tool.")
	case choiceNamed:
		b.WriteString("\nYou must call the tool " + s.named + ".")
	default:
		b.WriteString("\nTo answer without a tool, answer with only this JSON object:\n")
		b.WriteString(`{"response": "<your answer>"}`)
	}
	return b.String()
}

// compactJSON returns raw without insignificant space (raw if it is not
// JSON, which validation has excluded).
func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// genericHistory rewrites the tool turns of a conversation for a template
// that does not know them: an assistant's calls become its content, in
// the JSON it is asked to answer with, and a tool's result becomes a user
// message {"tool_response": {"tool_call_id", "name", "content"}}; then the
// tools are described in the system message (merged into the first one,
// or put before the conversation) when spec shows them.
func genericHistory(msgs []message, spec *toolSpec) []message {
	out := make([]message, 0, len(msgs)+1)
	names := map[string]string{} // call id → function name
	for _, m := range msgs {
		switch {
		case len(m.ToolCalls) > 0:
			calls := make([]genericCall, len(m.ToolCalls))
			for i, c := range m.ToolCalls {
				names[c.ID] = c.Function.Name
				var args any = c.Function.Arguments
				if json.Valid([]byte(c.Function.Arguments)) {
					args = compactJSON(json.RawMessage(c.Function.Arguments))
				}
				calls[i] = genericCall{c.Function.Name, args}
			}
			var v any = map[string]any{"tool_calls": calls}
			if len(calls) == 1 {
				v = map[string]any{"tool_call": calls[0]}
			}
			content := marshalPlain(v)
			if m.Content != "" {
				content = m.Content + "\n" + content
			}
			out = append(out, message{Role: m.Role, Content: content, Name: m.Name})
		case m.Role == "tool":
			name := m.Name
			if name == "" {
				name = names[m.ToolCallID]
			}
			text := marshalPlain(map[string]any{"tool_response": struct {
				ID      string `json:"tool_call_id"`
				Name    string `json:"name"`
				Content string `json:"content"`
			}{m.ToolCallID, name, m.Content}})
			out = append(out, message{Role: "user", Content: text})
		default:
			out = append(out, m)
		}
	}
	if spec == nil || !spec.parses() {
		return out
	}
	prompt := spec.genericToolPrompt()
	if len(out) > 0 && out[0].Role == "system" {
		out[0].Content += "\n\n" + prompt
		return out
	}
	return append([]message{{Role: "system", Content: prompt}}, out...)
}

// genericCall is a call in the generic format.
type genericCall struct {
	Name      string `json:"name"`
	Arguments any    `json:"arguments"`
}

// marshalPlain is v as JSON, without HTML escapes (a prompt shows "<" as
// itself) and without a newline at the end.
func marshalPlain(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}
