package server

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"headinfer/engine/grammar/jsonschema"
)

// Tool calls, as OpenAI's chat completions offer them: the request lists
// functions ("tools") with a JSON Schema of their arguments, the model
// answers with calls in its family's format (toolformat.go), and the
// answer carries them parsed as message.tool_calls (toolparse.go). With
// tool_choice "required" or a named function the output is constrained
// to calls by a grammar (toolgrammar.go).

// toolDef is one entry of a request's "tools".
type toolDef struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"` // accepted: a constrained call is always strict
	} `json:"function"`
}

// toolCall is a call as the API shows it: in an answer's message, and in
// an assistant message of the history.
type toolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"` // a JSON text, as OpenAI sends it
}

// toolCallDelta is a call in a stream chunk: the first chunk of a call
// carries its id, type and name, later ones pieces of its arguments.
type toolCallDelta struct {
	Index    int               `json:"index"`
	ID       string            `json:"id,omitempty"`
	Type     string            `json:"type,omitempty"`
	Function toolFunctionDelta `json:"function"`
}

type toolFunctionDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// tool is a validated entry of "tools".
type tool struct {
	name   string
	desc   string
	params json.RawMessage // the arguments' schema; {"type": "object"} when the tool gave none
	raw    json.RawMessage // the entry as sent, for the chat template
	gbnf   string          // the grammar of the arguments (root rule "root")
}

// toolChoice is what tool_choice asks of the model.
type toolChoice int

const (
	choiceAuto     toolChoice = iota // calls or text, as the model likes
	choiceNone                       // text only: the tools are not shown
	choiceRequired                   // one call or more, of any tool
	choiceNamed                      // calls of one tool
)

// toolSpec is a request's tools and what it asks of them.
type toolSpec struct {
	tools    []tool
	choice   toolChoice
	named    string // the function of choiceNamed
	parallel bool   // several calls may come in one answer
	format   toolFormat
}

// constrained reports whether the output must be calls.
func (s *toolSpec) constrained() bool {
	return s != nil && (s.choice == choiceRequired || s.choice == choiceNamed)
}

// parses reports whether the answer is read for calls.
func (s *toolSpec) parses() bool {
	return s != nil && s.choice != choiceNone && len(s.tools) > 0
}

// toolNameRE is OpenAI's rule for function names; it also keeps a name
// safe to write into a grammar's string literal.
var toolNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// noParams is the schema of a tool that declares no parameters.
var noParams = json.RawMessage(`{"type": "object"}`)

// toolsOf validates the request's tools, tool_choice and
// parallel_tool_calls for a model whose template speaks format. It
// returns nil when the request has no tools.
func toolsOf(req *chatRequest, format toolFormat) (*toolSpec, *apiError) {
	var defs []json.RawMessage
	if !isNull(req.Tools) {
		if err := json.Unmarshal(req.Tools, &defs); err != nil {
			return nil, badRequest("tools", "invalid_type", "tools must be an array of tool objects")
		}
	}
	s := &toolSpec{parallel: req.ParallelToolCalls == nil || *req.ParallelToolCalls, format: format}
	seen := map[string]bool{}
	for i, raw := range defs {
		param := fmt.Sprintf("tools[%d]", i)
		var d toolDef
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, badRequest(param, "invalid_type", "%s must be an object {\"type\": \"function\", \"function\": {...}}: %v", param, err)
		}
		if d.Type != "function" {
			return nil, badRequest(param+".type", "invalid_value", "%s.type must be \"function\", not %q", param, d.Type)
		}
		if d.Function == nil {
			return nil, badRequest(param+".function", "invalid_value", "%s has no function object", param)
		}
		f := d.Function
		if !toolNameRE.MatchString(f.Name) {
			if f.Name == "" {
				return nil, badRequest(param+".function.name", "invalid_value", "%s.function has no name", param)
			}
			return nil, badRequest(param+".function.name", "invalid_value", "%s.function.name %q must be 1 to 64 letters, digits, _ or -", param, f.Name)
		}
		if seen[f.Name] {
			return nil, badRequest(param+".function.name", "invalid_value", "two tools are named %q", f.Name)
		}
		seen[f.Name] = true
		t := tool{name: f.Name, desc: f.Description, params: f.Parameters, raw: raw}
		if isNull(t.params) {
			t.params = noParams
		}
		pp := param + ".function.parameters"
		if b := bytes.TrimSpace(t.params); b[0] != '{' {
			return nil, badRequest(pp, "invalid_type", "%s must be a JSON Schema object", pp)
		}
		gbnf, err := jsonschema.Convert(t.params)
		if err != nil {
			return nil, badRequest(pp, "invalid_schema", "%s: %v", pp, err)
		}
		t.gbnf = gbnf
		s.tools = append(s.tools, t)
	}
	if e := s.readChoice(req.ToolChoice); e != nil {
		return nil, e
	}
	if len(s.tools) == 0 {
		return nil, nil
	}
	return s, nil
}

// readChoice reads tool_choice: "auto" (the default), "none", "required"
// or {"type": "function", "function": {"name": ...}}.
func (s *toolSpec) readChoice(raw json.RawMessage) *apiError {
	if isNull(raw) {
		return nil
	}
	var word string
	if err := json.Unmarshal(raw, &word); err == nil {
		switch word {
		case "auto":
		case "none":
			s.choice = choiceNone
		case "required":
			if len(s.tools) == 0 {
				return badRequest("tool_choice", "invalid_value", "tool_choice is \"required\" but the request has no tools")
			}
			s.choice = choiceRequired
		default:
			return badRequest("tool_choice", "invalid_value", "tool_choice %q is not one of auto, none, required or a function object", word)
		}
		return nil
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" || named.Function.Name == "" {
		return badRequest("tool_choice", "invalid_value", "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}")
	}
	for _, t := range s.tools {
		if t.name == named.Function.Name {
			s.choice, s.named = choiceNamed, t.name
			return nil
		}
	}
	return badRequest("tool_choice", "invalid_value", "tool_choice names the function %q, which is not among the tools", named.Function.Name)
}

// toolCallsOf reads the tool_calls of an assistant message in the
// history (param names it in errors).
func toolCallsOf(param string, raw json.RawMessage) ([]toolCall, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var calls []toolCall
	if err := json.Unmarshal(raw, &calls); err != nil {
		return nil, badRequest(param, "invalid_type", "%s must be an array of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}: %v", param, err)
	}
	for i, c := range calls {
		if c.Function.Name == "" {
			return nil, badRequest(param, "invalid_value", "%s[%d] has no function name", param, i)
		}
	}
	return calls, nil
}

// callID returns a new id for a call: "call_" and 24 letters and digits,
// as OpenAI's look; for Mistral's format nine letters and digits, which
// its templates require of the ids the history brings back.
func callID(format toolFormat) string {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	n, prefix := 24, "call_"
	if format == formatMistral {
		n, prefix = 9, ""
	}
	b := make([]byte, n)
	_, _ = rand.Read(b)
	var sb strings.Builder
	sb.WriteString(prefix)
	for _, c := range b {
		sb.WriteByte(alnum[int(c)%len(alnum)])
	}
	return sb.String()
}
