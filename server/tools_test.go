package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"headinfer/engine"
	"headinfer/engine/tokenizer"
)

// toolFamily is a tool-calling model family's chat template (as
// server/testdata/tools holds it, modelled on the one its GGUF files
// carry) with a vocabulary of its control tokens.
type toolFamily struct {
	name   string
	file   string
	format toolFormat
	vocab  tokenizer.Vocab
}

func toolFamilies() []toolFamily {
	llama3 := bpeTestVocab("llama-bpe", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>")
	llama3.BOS, llama3.EOS, llama3.AddBOS = 256, 257, true
	qwen := bpeTestVocab("qwen2", "<|endoftext|>", "<|im_start|>", "<|im_end|>")
	qwen.EOS = 256
	mistral := bpeTestVocab("llama-bpe", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")
	mistral.BOS, mistral.EOS, mistral.AddBOS = 256, 257, true
	return []toolFamily{
		{"llama3.1", "llama31.jinja", formatLlama3, llama3},
		{"qwen2.5", "qwen25.jinja", formatHermes, qwen},
		{"mistral", "mistral.jinja", formatMistral, mistral},
	}
}

func (f toolFamily) loaded(t *testing.T) *loaded {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "tools", f.file))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(f.vocab)
	if err != nil {
		t.Fatal(err)
	}
	l := newLoaded(tok, 4096, string(src))
	if l.tmplErr != nil {
		t.Fatal(l.tmplErr)
	}
	return l
}

// weatherTools is a request's tools: two functions, one without
// parameters.
const weatherTools = `[{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now",
	"parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"], "additionalProperties": false}}},
	{"type": "function", "function": {"name": "get_time", "description": "The time of day"}}]`

// chatOf decodes a chat request body.
func chatOf(t *testing.T, body string) *chatRequest {
	t.Helper()
	var req chatRequest
	if e := decodeJSON([]byte(body), &req); e != nil {
		t.Fatalf("%s: %v", body, e)
	}
	return &req
}

// renderRequest renders a chat request's prompt as chatJob does.
func renderRequest(t *testing.T, l *loaded, body string) string {
	t.Helper()
	req := chatOf(t, body)
	msgs, e := messagesOf(req.Messages)
	if e != nil {
		t.Fatal(e)
	}
	spec, e := toolsOf(req, l.toolFormat)
	if e != nil {
		t.Fatal(e)
	}
	text, e := l.render(msgs, spec, nil)
	if e != nil {
		t.Fatal(e)
	}
	return text
}

// TestToolTemplates renders, with each family's template, a request with
// tools and a history in which the assistant called one and the tool
// answered: the tools reach the template, and the call and its result are
// written in the family's format.
func TestToolTemplates(t *testing.T) {
	history := `{"role": "user", "content": "Weather in Paris?"},
		{"role": "assistant", "content": null, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
		{"role": "tool", "tool_call_id": "abcDEF123", "content": "18 degrees"}`
	wants := map[string][]string{
		"llama3.1": {
			`"name": "get_weather"`, `"description": "The weather in a city now"`, "Environment: ipython",
			"<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>",
			"<|start_header_id|>ipython<|end_header_id|>\n\n18 degrees<|eot_id|>",
		},
		"qwen2.5": {
			"<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"The weather in a city now\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}",
			"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>",
			"<|im_start|>user\n<tool_response>\n18 degrees\n</tool_response><|im_end|>",
		},
		"mistral": {
			`[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now", "parameters": {"type": "object"`,
			`[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]</s>`,
			`[TOOL_RESULTS] {"content": 18 degrees, "call_id": "abcDEF123"}[/TOOL_RESULTS]`,
		},
	}
	for _, f := range toolFamilies() {
		t.Run(f.name, func(t *testing.T) {
			l := f.loaded(t)
			if l.toolFormat != f.format {
				t.Fatalf("format %v, want %v", l.toolFormat, f.format)
			}
			text := renderRequest(t, l, `{"tools": `+weatherTools+`, "messages": [`+history+`]}`)
			for _, w := range wants[f.name] {
				if !strings.Contains(text, w) {
					t.Errorf("the prompt lacks %q:\n%s", w, text)
				}
			}
			// tool_choice none: the tools are not shown, the history still is.
			text = renderRequest(t, l, `{"tools": `+weatherTools+`, "tool_choice": "none", "messages": [`+history+`]}`)
			if strings.Contains(text, "The weather in a city now") || !strings.Contains(text, "18 degrees") {
				t.Errorf("tool_choice none:\n%s", text)
			}
		})
	}
}

// TestGenericToolPrompt: a model without a tool format (here no template
// at all) is told the tools and the JSON to answer with in a system
// message, and its calls and the tools' results in the history read as
// that JSON.
func TestGenericToolPrompt(t *testing.T) {
	for _, tmpl := range []string{"", llama2Template} {
		tv := testVocabs()[0]
		tok, err := tokenizer.New(tv.vocab)
		if err != nil {
			t.Fatal(err)
		}
		l := newLoaded(tok, 4096, tmpl)
		if l.toolFormat != formatGeneric {
			t.Fatalf("format %v", l.toolFormat)
		}
		text := renderRequest(t, l, `{"tools": `+weatherTools+`, "parallel_tool_calls": false, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
			{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
			{"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]}`)
		for _, w := range []string{
			"Be brief.\n\nYou can call the following tools:\n" + `{"name":"get_weather","description":"The weather in a city now","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["C","F"]}},"required":["city"],"additionalProperties":false}}`,
			`{"name":"get_time","description":"The time of day","parameters":{"type":"object"}}`,
			`{"tool_call": {"name": "<tool name>", "arguments": {<the arguments>}}}`,
			`{"response": "<your answer>"}`,
			`{"tool_call":{"name":"get_weather","arguments":{"city":"Paris"}}}`,
			`{"tool_response":{"tool_call_id":"call_1","name":"get_weather","content":"18 degrees"}}`,
		} {
			if !strings.Contains(text, w) {
				t.Errorf("template %.20q: the prompt lacks %q:\n%s", tmpl, w, text)
			}
		}
		if strings.Contains(text, `"tool_calls": [`) {
			t.Errorf("parallel_tool_calls false, yet the prompt offers several calls:\n%s", text)
		}
	}
}

func TestToolFormatOf(t *testing.T) {
	for _, f := range toolFamilies() {
		src, err := os.ReadFile(filepath.Join("testdata", "tools", f.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := toolFormatOf(string(src)); got != f.format {
			t.Errorf("%s: %v, want %v", f.name, got, f.format)
		}
	}
	for _, src := range []string{"", llama2Template, llama3Template, chatMLTemplate, gemma3Template} {
		if got := toolFormatOf(src); got != formatGeneric {
			t.Errorf("%.40q: %v, want generic", src, got)
		}
	}
}

// TestParseCalls reads calls out of answers in each format.
func TestParseCalls(t *testing.T) {
	type call struct{ name, args string }
	cases := []struct {
		format  toolFormat
		text    string
		content string
		calls   []call
	}{
		{formatHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "", []call{{"get_weather", `{"city":"Paris"}`}}},
		{formatHermes, "Let me look.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call>", "Let me look.", []call{{"a", `{}`}, {"b", `{"x":[1,2]}`}}},
		{formatHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}", "", []call{{"a", `{"x":1}`}}}, // no closing tag at the end
		{formatHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}\n</tool_call> and", "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}\n</tool_call> and", nil},
		{formatHermes, "No tools needed.", "No tools needed.", nil},
		{formatLlama3, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, "", []call{{"get_weather", `{"city":"Paris"}`}}},
		{formatLlama3, `<|python_tag|>{"name": "a", "arguments": {"q": "x"}}; {"name": "b", "parameters": {}}`, "", []call{{"a", `{"q":"x"}`}, {"b", `{}`}}},
		{formatLlama3, `{"name": "a", "parameters": {"q": }`, `{"name": "a", "parameters": {"q": }`, nil},
		{formatLlama3, `{"city": "Paris"}`, `{"city": "Paris"}`, nil},
		{formatLlama3, `It is {"name": "a"}`, `It is {"name": "a"}`, nil},
		{formatMistral, `[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "z"}}]`, "", []call{{"a", `{"x":1}`}, {"b", `{"y":"z"}`}}},
		{formatMistral, ` [{"name": "a", "arguments": {"x": 1}, "id": "abcDEF123"}]`, "", []call{{"a", `{"x":1}`}}}, // [TOOL_CALLS] decodes to nothing
		{formatMistral, `[1, 2]`, `[1, 2]`, nil},
		{formatGeneric, `{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}`, "", []call{{"get_weather", `{"city":"Paris"}`}}},
		{formatGeneric, `{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\"s\": 1}"}]}`, "", []call{{"a", `{}`}, {"b", `{"s": 1}`}}},
		{formatGeneric, `{"response": "It is sunny."}`, "It is sunny.", nil},
		{formatGeneric, `{"tool_call": {"name": "a", "arguments": {"x": tru}}}`, `{"tool_call": {"name": "a", "arguments": {"x": tru}}}`, nil},
		{formatGeneric, `{"tool_call": {"arguments": {}}}`, `{"tool_call": {"arguments": {}}}`, nil},
		{formatGeneric, `Hello there`, `Hello there`, nil},
	}
	for _, tc := range cases {
		spec := &toolSpec{format: tc.format, parallel: true}
		content, calls := spec.parseCalls(tc.text)
		got := make([]call, len(calls))
		for i, c := range calls {
			got[i] = call{c.Function.Name, c.Function.Arguments}
			if c.Type != "function" || (tc.format == formatMistral && len(c.ID) != 9) || (tc.format != formatMistral && (!strings.HasPrefix(c.ID, "call_") || len(c.ID) != 29)) {
				t.Errorf("%v %q: call %d has id %q, type %q", tc.format, tc.text, i, c.ID, c.Type)
			}
		}
		if content != tc.content || !slices.Equal(got, tc.calls) {
			t.Errorf("%v %q:\ncontent %q, calls %v\nwant %q, %v", tc.format, tc.text, content, got, tc.content, tc.calls)
		}
		// Streamed in pieces of every size, the same answer.
		for size := 1; size <= 4; size++ {
			ts := newToolStream(spec)
			var streamed strings.Builder
			for i := 0; i < len(tc.text); i += size {
				streamed.WriteString(ts.add(tc.text[i:min(i+size, len(tc.text))]))
			}
			rest, scalls := ts.flush()
			streamed.WriteString(rest)
			sgot := make([]call, len(scalls))
			for i, c := range scalls {
				sgot[i] = call{c.Function.Name, c.Function.Arguments}
			}
			if strings.TrimSpace(streamed.String()) != tc.content || !slices.Equal(sgot, tc.calls) {
				t.Errorf("%v %q in pieces of %d: content %q, calls %v", tc.format, tc.text, size, streamed.String(), sgot)
			}
		}
	}
}

// TestToolStreamContent: text before a call streams as it comes, but for
// what may begin the call's opening.
func TestToolStreamContent(t *testing.T) {
	ts := newToolStream(&toolSpec{format: formatHermes})
	if got := ts.add("Let me "); got != "Let me " {
		t.Errorf("got %q", got)
	}
	if got := ts.add("check.\n<tool"); got != "check.\n" {
		t.Errorf("a partial opening was sent: %q", got)
	}
	if got := ts.add("_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>"); got != "" {
		t.Errorf("the call was sent as content: %q", got)
	}
	if rest, calls := ts.flush(); rest != "" || len(calls) != 1 {
		t.Errorf("end: %q, %v", rest, calls)
	}
	ts = newToolStream(&toolSpec{format: formatHermes})
	if got := ts.add("a <b> <tool"); got != "a <b> " {
		t.Errorf("got %q", got)
	}
	if got := ts.add("s>"); got != "<tools>" {
		t.Errorf("text that only looked like an opening: %q", got)
	}
	// The generic format's call is the whole answer: text that begins
	// otherwise streams at once.
	ts = newToolStream(&toolSpec{format: formatGeneric})
	if got := ts.add("  Hi {"); got != "  Hi {" {
		t.Errorf("generic: %q", got)
	}
}

// TestToolGrammar: with tool_choice required or a named function the
// grammar takes well-formed calls in the family's format, whose arguments
// follow the schema, and nothing else.
func TestToolGrammar(t *testing.T) {
	paris := `{"name": "get_weather", "arguments": {"city": "Paris"}}`
	timeCall := `{"name": "get_time", "arguments": {}}`
	cases := []struct {
		format   toolFormat
		choice   string
		parallel bool
		yes, no  []string
	}{
		{formatGeneric, `"required"`, false,
			[]string{`{"tool_call": ` + paris + `}`, `{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}}`, `{"tool_call": ` + timeCall + `}`},
			[]string{`{"tool_calls": [` + paris + `]}`, `{"tool_call": {"name": "get_weather", "arguments": {"unit": "C"}}}`, `{"tool_call": {"name": "get_weather", "arguments": {"city": 3}}}`, `{"response": "hi"}`, `hello`}},
		{formatGeneric, `"required"`, true,
			[]string{`{"tool_calls": [` + paris + `, ` + timeCall + `]}`, `{"tool_calls": [` + timeCall + `]}`},
			[]string{`{"tool_call": ` + paris + `}`, `{"tool_calls": []}`}},
		{formatGeneric, `{"type": "function", "function": {"name": "get_time"}}`, false,
			[]string{`{"tool_call": ` + timeCall + `}`},
			[]string{`{"tool_call": ` + paris + `}`}},
		{formatHermes, `"required"`, true,
			[]string{"<tool_call>\n" + paris + "\n</tool_call>", "<tool_call>\n" + paris + "\n</tool_call>\n<tool_call>\n" + timeCall + "\n</tool_call>"},
			[]string{paris, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>"}},
		{formatLlama3, `"required"`, false,
			[]string{`{"name": "get_weather", "parameters": {"city": "Paris"}}`},
			[]string{paris, `{"name": "get_weather", "parameters": {"city": "Paris"}}` + "\n" + `{"name": "get_time", "parameters": {}}`}},
		{formatMistral, `"required"`, true,
			[]string{`[` + paris + `]`, `[` + paris + `, ` + timeCall + `]`},
			[]string{`[]`, paris}},
	}
	for _, tc := range cases {
		req := chatOf(t, `{"messages": [{"role": "user", "content": "x"}], "tools": `+weatherTools+`, "tool_choice": `+tc.choice+`, "parallel_tool_calls": `+strconv.FormatBool(tc.parallel)+`}`)
		spec, e := toolsOf(req, tc.format)
		if e != nil {
			t.Fatal(e)
		}
		g, err := spec.grammar()
		if err != nil {
			t.Fatalf("%v %s: %v", tc.format, tc.choice, err)
		}
		for _, s := range tc.yes {
			if !g.Match(s) {
				t.Errorf("%v %s parallel %v: refuses %s", tc.format, tc.choice, tc.parallel, s)
			}
			// What the grammar takes, the parser reads back.
			if _, calls := spec.parseCalls(s); len(calls) == 0 {
				t.Errorf("%v: no calls read from %s", tc.format, s)
			}
		}
		for _, s := range tc.no {
			if g.Match(s) {
				t.Errorf("%v %s parallel %v: takes %s", tc.format, tc.choice, tc.parallel, s)
			}
		}
	}
}

func TestPrefixRules(t *testing.T) {
	src := "root ::= \"[x]\" value ( [a-z\\]] ws ){0,3} # a comment\nvalue ::= \"\\\"q\" | ws\nws ::= [ \\t]?\n"
	got, err := prefixRules(src, "t1-")
	if err != nil {
		t.Fatal(err)
	}
	want := "t1-root ::= \"[x]\" t1-value ( [a-z\\]] t1-ws ){0,3} \nt1-value ::= \"\\\"q\" | t1-ws\nt1-ws ::= [ \\t]?\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// writes stands in for a generation that writes the given pieces.
func writes(pieces ...string) func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
	return func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		for _, p := range pieces {
			if err := emit(p); err != nil {
				return outcome{}, err
			}
		}
		return outcome{finish: engine.FinishStop, completion: len(pieces)}, nil
	}
}

// TestToolAnswers checks the answers of a request with tools, whole and
// streamed, on the Qwen 2.5 template: calls in message.tool_calls, the
// text around them in content (null when there is none), finish_reason
// "tool_calls"; and OpenAI's deltas in a stream.
func TestToolAnswers(t *testing.T) {
	f := toolFamilies()[1]
	src, err := os.ReadFile(filepath.Join("testdata", "tools", f.file))
	if err != nil {
		t.Fatal(err)
	}
	tv := testVocab{name: f.name, vocab: f.vocab, template: string(src)}
	body := `{"messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}], "tools": ` + weatherTools
	for _, tc := range []struct {
		pieces  []string
		content *string
		calls   int
	}{
		{[]string{"<tool", "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n", `{"name": "get_weather", "arguments": {"city": "Oslo"}}`, "\n</tool_call>"}, nil, 2},
		{[]string{"I will look.", "\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"}, ptr("I will look."), 1},
		{[]string{"It is ", "sunny."}, ptr("It is sunny."), 0},
	} {
		s := fakeServer(t, Options{}, tv, 4096, writes(tc.pieces...))
		status, out := post(t, s, "/v1/chat/completions", body+`}`)
		var resp struct {
			Choices []struct {
				Message struct {
					Content   *string
					ToolCalls []toolCall `json:"tool_calls"`
				}
				FinishReason string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil || status != 200 {
			t.Fatalf("%d %s", status, out)
		}
		m := resp.Choices[0].Message
		wantFinish := "stop"
		if tc.calls > 0 {
			wantFinish = "tool_calls"
		}
		if len(m.ToolCalls) != tc.calls || resp.Choices[0].FinishReason != wantFinish || (m.Content == nil) != (tc.content == nil) || (m.Content != nil && *m.Content != *tc.content) {
			t.Errorf("%q: %s", tc.pieces, out)
		}
		for _, c := range m.ToolCalls {
			if !strings.HasPrefix(c.ID, "call_") || c.Type != "function" || !json.Valid([]byte(c.Function.Arguments)) {
				t.Errorf("%q: call %+v", tc.pieces, c)
			}
		}

		// Streamed: the same content and calls, as deltas.
		status, out = post(t, s, "/v1/chat/completions", body+`, "stream": true}`)
		if status != 200 {
			t.Fatalf("%d %s", status, out)
		}
		var content strings.Builder
		var calls []toolCall
		finish := ""
		for _, line := range strings.Split(out, "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var c chatChunk
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			d := c.Choices[0].Delta
			if d.Content != nil {
				content.WriteString(*d.Content)
			}
			for _, tc := range d.ToolCalls {
				if tc.Index == len(calls) {
					if tc.ID == "" || tc.Type != "function" || tc.Function.Name == "" {
						t.Errorf("the first delta of call %d: %+v", tc.Index, tc)
					}
					calls = append(calls, toolCall{ID: tc.ID, Function: toolFunction{Name: tc.Function.Name}})
				} else if tc.ID != "" || tc.Function.Name != "" {
					t.Errorf("a later delta of call %d names it again: %+v", tc.Index, tc)
				}
				calls[tc.Index].Function.Arguments += tc.Function.Arguments
			}
			if c.Choices[0].FinishReason != nil {
				finish = *c.Choices[0].FinishReason
			}
		}
		want := ""
		if tc.content != nil {
			want = *tc.content
		}
		if strings.TrimSpace(content.String()) != want || len(calls) != tc.calls || finish != wantFinish {
			t.Errorf("%q streamed: content %q, calls %+v, finish %q", tc.pieces, content.String(), calls, finish)
		}
		for i, c := range calls {
			if c.Function.Arguments != m.ToolCalls[i].Function.Arguments || c.Function.Name != m.ToolCalls[i].Function.Name {
				t.Errorf("streamed call %d %+v, whole %+v", i, c, m.ToolCalls[i])
			}
		}
	}
}

// TestToolJob: tool_choice required or named constrains the job, auto
// and none do not; none reads no calls.
func TestToolJob(t *testing.T) {
	c := &jobCapture{}
	s := fakeServer(t, Options{}, testVocabs()[0], 4096, c.gen)
	msgs := `"messages": [{"role": "user", "content": "hi"}]`
	for _, tc := range []struct {
		extra              string
		constrained, reads bool
	}{
		{`, "tools": ` + weatherTools, false, true},
		{`, "tools": ` + weatherTools + `, "tool_choice": "auto"`, false, true},
		{`, "tools": ` + weatherTools + `, "tool_choice": "none"`, false, false},
		{`, "tools": ` + weatherTools + `, "tool_choice": "required"`, true, true},
		{`, "tools": ` + weatherTools + `, "tool_choice": {"type": "function", "function": {"name": "get_time"}}, "response_format": {"type": "text"}`, true, true},
		{`, "tools": []`, false, false},
		{`, "tool_choice": "none"`, false, false},
	} {
		c.j.Store(nil)
		status, out := post(t, s, "/v1/chat/completions", `{`+msgs+tc.extra+`}`)
		j := c.j.Load()
		if status != 200 || j == nil {
			t.Fatalf("%s: %d %s", tc.extra, status, out)
		}
		if (j.grammar != nil) != tc.constrained || j.tools.parses() != tc.reads {
			t.Errorf("%s: grammar %v, reads calls %v", tc.extra, j.grammar != nil, j.tools.parses())
		}
	}
}

// TestToolBadInput: what cannot be used is a 400 that names the field.
func TestToolBadInput(t *testing.T) {
	s := fakeServer(t, Options{}, testVocabs()[0], 4096, nil)
	msgs := `"messages": [{"role": "user", "content": "hi"}]`
	fn := func(def string) string { return `[{"type": "function", "function": ` + def + `}]` }
	for _, tc := range []struct{ extra, param, msg string }{
		{`"tools": ` + fn(`{"description": "x"}`), "tools[0].function.name", "has no name"},
		{`"tools": ` + fn(`{"name": "a b"}`), "tools[0].function.name", "letters, digits"},
		{`"tools": [{"type": "retrieval", "function": {"name": "a"}}]`, "tools[0].type", `"retrieval"`},
		{`"tools": [{"function": {"name": "a"}}]`, "tools[0].type", `must be "function"`},
		{`"tools": [{"type": "function"}]`, "tools[0].function", "no function"},
		{`"tools": {"type": "function"}`, "tools", "must be an array"},
		{`"tools": ` + fn(`{"name": "a", "parameters": {"type": "object", "patternProperties": {}}}`), "tools[0].function.parameters", `unsupported keyword "patternProperties"`},
		{`"tools": ` + fn(`{"name": "a", "parameters": "object"}`), "tools[0].function.parameters", "JSON Schema object"},
		{`"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]`, "tools[1].function.name", "two tools"},
		{`"tools": ` + weatherTools + `, "tool_choice": {"type": "function", "function": {"name": "get_news"}}`, "tool_choice", `"get_news", which is not among the tools`},
		{`"tool_choice": {"type": "function", "function": {"name": "get_news"}}`, "tool_choice", "not among the tools"},
		{`"tool_choice": "required"`, "tool_choice", "has no tools"},
		{`"tools": ` + weatherTools + `, "tool_choice": "always"`, "tool_choice", `"always"`},
		{`"tools": ` + weatherTools + `, "tool_choice": 3`, "tool_choice", "must be"},
		{`"tools": ` + weatherTools + `, "tool_choice": "required", "response_format": {"type": "json_object"}`, "response_format", "both constrain"},
		{`"tools": ` + weatherTools + `, "tool_choice": {"type": "function", "function": {"name": "get_time"}}, "grammar": "root ::= \"a\""`, "grammar", "both constrain"},
		{`"parallel_tool_calls": "yes"`, "parallel_tool_calls", "true or false"},
	} {
		status, body := post(t, s, "/v1/chat/completions", `{`+msgs+`, `+tc.extra+`}`)
		var e errorBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != 400 || e.Error.Param == nil || *e.Error.Param != tc.param || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s, want 400 naming %s with %q", tc.extra, status, body, tc.param, tc.msg)
		}
	}
	// A history's tool_calls must be calls.
	status, body := post(t, s, "/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]}]}`)
	if status != 400 || !strings.Contains(body, "messages[1].tool_calls") {
		t.Errorf("a call without a name: %d %s", status, body)
	}
}

// TestToolThinking: a thinking model's block is split off first, and the
// calls are read from what follows it.
func TestToolThinking(t *testing.T) {
	f := toolFamilies()[1]
	src, err := os.ReadFile(filepath.Join("testdata", "tools", f.file))
	if err != nil {
		t.Fatal(err)
	}
	tv := testVocab{name: f.name, vocab: f.vocab, template: string(src) + "{#- <think> #}"}
	s := fakeServer(t, Options{}, tv, 4096, writes("<think>\nParis, so ", "get_weather.\n</think>\n\n<tool_call>\n", `{"name": "get_weather", "arguments": {"city": "Paris"}}`, "\n</tool_call>"))
	body := `{"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": ` + weatherTools + `}`
	status, out := post(t, s, "/v1/chat/completions", body)
	var resp chatResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil || status != 200 {
		t.Fatalf("%d %s", status, out)
	}
	m := resp.Choices[0].Message
	if m.ReasoningContent != "Paris, so get_weather." || m.Content != "" || len(m.ToolCalls) != 1 || m.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || resp.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("%s", out)
	}
	if !strings.Contains(out, `"content":null`) {
		t.Errorf("content is not null: %s", out)
	}
}
