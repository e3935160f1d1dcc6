package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
)

// Reading calls out of a model's answer. A call that does not parse (bad
// JSON, no name) is left in the content as the model wrote it: the client
// sees what came out rather than losing it.

// parseCalls splits text, an answer in the spec's format, into the text
// outside the calls and the calls.
func (s *toolSpec) parseCalls(text string) (content string, calls []toolCall) {
	switch s.format {
	case formatHermes:
		content, calls = parseHermes(text)
	case formatMistral:
		content, calls = parseMistral(text)
	case formatLlama3:
		content, calls = parseLlama3(text)
	default:
		content, calls = parseGeneric(text)
	}
	for i := range calls {
		calls[i].ID, calls[i].Type = callID(s.format), "function"
	}
	if len(calls) > 0 {
		content = strings.TrimSpace(content)
	}
	return content, calls
}

// parseHermes reads <tool_call>{"name", "arguments"}</tool_call> blocks;
// the closing tag may be missing at the end of the text.
func parseHermes(text string) (string, []toolCall) {
	const open, close = "<tool_call>", "</tool_call>"
	var content strings.Builder
	var calls []toolCall
	for {
		i := strings.Index(text, open)
		if i < 0 {
			content.WriteString(text)
			break
		}
		content.WriteString(text[:i])
		body, rest := text[i+len(open):], ""
		if j := strings.Index(body, close); j >= 0 {
			body, rest = body[:j], body[j+len(close):]
		}
		c, ok := callOf([]byte(strings.TrimSpace(body)), "arguments")
		if ok {
			calls = append(calls, c)
		} else {
			content.WriteString(text[i : len(text)-len(rest)])
		}
		text = rest
	}
	return content.String(), calls
}

// parseMistral reads the array after [TOOL_CALLS], or at the start of the
// text: [TOOL_CALLS] is a control token, which the text does not show.
func parseMistral(text string) (string, []toolCall) {
	const tag = "[TOOL_CALLS]"
	before, after := "", text
	if i := strings.Index(text, tag); i >= 0 {
		before, after = text[:i], text[i+len(tag):]
	} else if t := strings.TrimLeftFunc(text, unicode.IsSpace); !strings.HasPrefix(t, "[") {
		return text, nil
	}
	raw, rest, ok := readJSON(after)
	if !ok {
		return text, nil
	}
	var list []json.RawMessage
	if raw[0] == '{' {
		list = []json.RawMessage{raw}
	} else if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return text, nil
	}
	calls, ok := callsOf(list)
	if !ok {
		return text, nil
	}
	return before + rest, calls
}

// callsOf reads every entry of list as a call {"name", "arguments"}; ok
// is false when one is not.
func callsOf(list []json.RawMessage) ([]toolCall, bool) {
	var calls []toolCall
	for _, r := range list {
		c, ok := callOf(r, "arguments")
		if !ok {
			return nil, false
		}
		calls = append(calls, c)
	}
	return calls, true
}

// parseLlama3 reads JSON objects {"name", "parameters"} at the start of
// the text (after <|python_tag|> where the text shows it), separated by
// space or ";".
func parseLlama3(text string) (string, []toolCall) {
	const tag = "<|python_tag|>"
	before, after := "", text
	if i := strings.Index(text, tag); i >= 0 {
		before, after = text[:i], text[i+len(tag):]
	}
	var calls []toolCall
	rest := after
	for {
		t := strings.TrimLeft(rest, " \t\r\n;")
		if !strings.HasPrefix(t, "{") {
			break
		}
		raw, r, ok := readJSON(t)
		if !ok {
			break
		}
		c, ok := callOf(raw, "parameters")
		if !ok {
			break
		}
		calls = append(calls, c)
		rest = r
	}
	if len(calls) == 0 {
		return text, nil
	}
	return before + rest, calls
}

// parseGeneric reads the generic format's one object at the start of the
// text: {"tool_call": {...}}, {"tool_calls": [...]} or {"response": ...}.
func parseGeneric(text string) (string, []toolCall) {
	t := strings.TrimLeftFunc(text, unicode.IsSpace)
	if !strings.HasPrefix(t, "{") {
		return text, nil
	}
	raw, rest, ok := readJSON(t)
	if !ok {
		return text, nil
	}
	var obj struct {
		ToolCall  json.RawMessage   `json:"tool_call"`
		ToolCalls []json.RawMessage `json:"tool_calls"`
		Response  json.RawMessage   `json:"response"`
	}
	if json.Unmarshal(raw, &obj) != nil {
		return text, nil
	}
	list := obj.ToolCalls
	if !isNull(obj.ToolCall) {
		list = append([]json.RawMessage{obj.ToolCall}, list...)
	}
	if len(list) > 0 {
		calls, ok := callsOf(list)
		if !ok {
			return text, nil
		}
		return rest, calls
	}
	if !isNull(obj.Response) {
		var s string
		if json.Unmarshal(obj.Response, &s) != nil {
			s = string(obj.Response) // not a string: the JSON as it came
		}
		return s + rest, nil
	}
	return text, nil
}

// callOf reads one call {"name": ..., argsKey: ...}; "arguments" is read
// too in the Llama format, whose models write either. The arguments are
// passed on as compact JSON text, or as they are when the model wrote them
// as a string; absent, they are {}.
func callOf(raw []byte, argsKey string) (toolCall, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return toolCall{}, false
	}
	var name string
	if json.Unmarshal(obj["name"], &name) != nil || name == "" {
		return toolCall{}, false
	}
	args, ok := obj[argsKey]
	if !ok {
		args = obj["arguments"]
	}
	c := toolCall{Function: toolFunction{Name: name, Arguments: "{}"}}
	var s string
	switch {
	case isNull(args):
	case json.Unmarshal(args, &s) == nil:
		c.Function.Arguments = s
	default:
		c.Function.Arguments = string(compactJSON(args))
	}
	return c, true
}

// readJSON reads one JSON value at the start of s (after space) and
// returns it and the text after it.
func readJSON(s string) (json.RawMessage, string, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if dec.Decode(&raw) != nil {
		return nil, s, false
	}
	return bytes.TrimSpace(raw), s[dec.InputOffset():], true
}

// toolStream finds the calls in an answer that arrives piece by piece.
// Text before any call streams as content as it comes, but for what could
// be the start of a call's opening (held back until the next piece shows
// whether it is); from the opening on, the text is held to the end and
// parsed whole, and the calls are sent then.
type toolStream struct {
	spec      *toolSpec
	held      string
	buffering bool // an opening was seen: the rest is held to the end
	started   bool // text other than space has been sent as content
	calls     []toolCall
}

func newToolStream(spec *toolSpec) *toolStream { return &toolStream{spec: spec} }

// openers are the texts that begin calls anywhere in the text, and lead
// the character that begins them at its start (after space).
func (t *toolStream) openers() (anywhere []string, lead byte) {
	switch t.spec.format {
	case formatHermes:
		return []string{"<tool_call>"}, 0
	case formatMistral:
		return []string{"[TOOL_CALLS]"}, '['
	case formatLlama3:
		return []string{"<|python_tag|>"}, '{'
	}
	return nil, '{'
}

// add takes the next piece of text and returns the content to send now.
func (t *toolStream) add(text string) string {
	buf := t.held + text
	t.held = ""
	if t.buffering {
		t.held = buf
		return ""
	}
	anywhere, lead := t.openers()
	if !t.started {
		trimmed := strings.TrimLeftFunc(buf, unicode.IsSpace)
		if trimmed == "" {
			t.held = buf
			return ""
		}
		if lead != 0 && trimmed[0] == lead {
			t.buffering, t.held = true, buf
			return ""
		}
	}
	for _, o := range anywhere {
		if i := strings.Index(buf, o); i >= 0 {
			t.buffering, t.held = true, buf[i:]
			t.started = t.started || strings.TrimSpace(buf[:i]) != ""
			return buf[:i]
		}
	}
	keep := 0
	for _, o := range anywhere {
		for k := min(len(o)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, o[:k]) {
				keep = k
				break
			}
		}
	}
	out := buf[:len(buf)-keep]
	t.held = buf[len(out):]
	t.started = t.started || strings.TrimSpace(out) != ""
	return out
}

// flush ends the text: it returns the content held back and the calls.
func (t *toolStream) flush() (content string, calls []toolCall) {
	h := t.held
	t.held = ""
	if !t.buffering {
		return h, nil
	}
	content, t.calls = t.spec.parseCalls(h)
	return content, t.calls
}
