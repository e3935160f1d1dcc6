package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"headinfer/engine"
)

// qwen3Template is Qwen3's ChatML with its thinking switch: with
// enable_thinking false the generation prompt holds an empty block.
const qwen3Template = `{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endfor %}` +
	`{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}`

// qwen3OpenTemplate opens the block in the prompt, as Qwen3's thinking
// releases do: the model's text begins inside it.
const qwen3OpenTemplate = `{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endfor %}` +
	`{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{%- endif %}`

func TestThinkSplitter(t *testing.T) {
	cases := []struct {
		name, text         string
		open               bool
		reasoning, content string
	}{
		{"block", "<think>\nLet me see.\n</think>\n\nThe answer.", false, "Let me see.", "The answer."},
		{"space before the block", " \n<think>a b</think>c", false, "a b", "c"},
		{"prompt opened it", "\nLet me see.\n</think>\n\nThe answer.", true, "Let me see.", "The answer."},
		{"empty block", "<think>\n\n</think>\n\nHi.", false, "", "Hi."},
		{"no closing tag", "<think>\nStill thinking \n", false, "Still thinking", ""},
		{"opened, no closing tag", "thinking", true, "thinking", ""},
		{"no block", "Hello there.", false, "", "Hello there."},
		{"text before <think>", "Hello <think>x</think> y", false, "", "Hello <think>x</think> y"},
		{"a later block is content", "<think>a</think>b<think>c</think>", false, "a", "b<think>c</think>"},
		{"a tag's start that is not one", "<thin", false, "", "<thin"},
		{"inside, a closing tag's start", "a </thi", true, "a </thi", ""},
		{"inside, not a tag", "a </thinx> b</think>c", true, "a </thinx> b", "c"},
		{"only space", "  ", false, "", "  "},
		{"nothing", "", false, "", ""},
	}
	for _, c := range cases {
		check := func(how string, pieces []string) {
			t.Helper()
			s := newThinkSplitter(c.open)
			var r, ct strings.Builder
			for _, p := range pieces {
				a, b := s.add(p)
				r.WriteString(a)
				ct.WriteString(b)
			}
			a, b := s.flush()
			r.WriteString(a)
			ct.WriteString(b)
			if r.String() != c.reasoning || ct.String() != c.content {
				t.Errorf("%s, %s %q: reasoning %q, content %q; want %q, %q", c.name, how, pieces, r.String(), ct.String(), c.reasoning, c.content)
			}
		}
		check("whole", []string{c.text})
		var bytes []string
		for i := range len(c.text) {
			bytes = append(bytes, c.text[i:i+1])
		}
		check("byte by byte", bytes)
		for i := range len(c.text) + 1 {
			for k := i; k <= len(c.text); k++ {
				check("in three", []string{c.text[:i], c.text[i:k], c.text[k:]})
			}
		}
	}
}

func TestPromptOpensThink(t *testing.T) {
	for p, want := range map[string]bool{
		"<|im_start|>assistant\n<think>\n":             true,
		"<|im_start|>assistant\n":                      false,
		"<|im_start|>assistant\n<think>\n\n</think>\n": false,
	} {
		if promptOpensThink(p) != want {
			t.Errorf("promptOpensThink(%q) = %v", p, !want)
		}
	}
}

// emitting is a generation stand-in that sends pieces, one per token.
func emitting(pieces ...string) func(context.Context, *loaded, *job, func(string) error) (outcome, error) {
	return func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
		for _, p := range pieces {
			if err := emit(p); err != nil {
				return outcome{}, err
			}
		}
		return outcome{finish: engine.FinishStop, completion: len(pieces)}, nil
	}
}

// chatVocab is the ChatML test vocabulary with template tmpl.
func chatVocab(tmpl string) testVocab {
	tv := testVocabs()[2]
	tv.template = tmpl
	return tv
}

// thinkPieces are a Qwen3 answer's tokens, tags split across them.
var thinkPieces = []string{"<th", "ink>\n", "Two and two", " make four.\n</", "think", ">\n", "\n", "Four."}

// chatAnswer posts a chat with stream as given and returns the reasoning
// and the content of the answer, joined from the deltas of a stream.
func chatAnswer(t *testing.T, s *Server, stream bool, extra string) (reasoning, content string) {
	t.Helper()
	body := `{"messages":[{"role":"user","content":"2+2?"}],"stream":` + map[bool]string{true: "true", false: "false"}[stream] + extra + `}`
	status, out := post(t, s, "/v1/chat/completions", body)
	if status != 200 {
		t.Fatalf("status %d: %s", status, out)
	}
	if !stream {
		var r chatResponse
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, `"reasoning_content":""`) {
			t.Errorf("an empty reasoning_content is sent: %s", out)
		}
		return r.Choices[0].Message.ReasoningContent, r.Choices[0].Message.Content
	}
	var rb, cb strings.Builder
	for _, line := range strings.Split(out, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c chatChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.Choices {
			d := ch.Delta
			if d.ReasoningContent != nil && d.Content != nil {
				t.Errorf("a delta with both reasoning and content: %s", data)
			}
			if d.ReasoningContent != nil {
				rb.WriteString(*d.ReasoningContent)
			}
			if d.Content != nil {
				cb.WriteString(*d.Content)
			}
		}
	}
	return rb.String(), cb.String()
}

func TestChatReasoningContent(t *testing.T) {
	opened := append([]string{}, thinkPieces[2:]...)
	cases := []struct {
		name               string
		opt                Options
		tmpl               string
		pieces             []string
		reasoning, content string
	}{
		{"qwen3", Options{}, qwen3Template, thinkPieces, "Two and two make four.", "Four."},
		{"deepseek named", Options{ReasoningFormat: ReasoningDeepSeek}, qwen3Template, thinkPieces, "Two and two make four.", "Four."},
		{"opened by the prompt", Options{}, qwen3OpenTemplate, opened, "Two and two make four.", "Four."},
		{"reasoning format none", Options{ReasoningFormat: ReasoningNone}, qwen3Template, thinkPieces, "", strings.Join(thinkPieces, "")},
		{"template without <think>", Options{}, chatMLTemplate, thinkPieces, "", strings.Join(thinkPieces, "")},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			s := fakeServer(t, c.opt, chatVocab(c.tmpl), 1<<16, emitting(c.pieces...))
			r, ct := chatAnswer(t, s, stream, "")
			if r != c.reasoning || ct != c.content {
				t.Errorf("%s, stream %v: reasoning %q, content %q; want %q, %q", c.name, stream, r, ct, c.reasoning, c.content)
			}
		}
	}
}

// TestCompletionKeepsThink checks that /v1/completions answers the text
// as generated, tags included.
func TestCompletionKeepsThink(t *testing.T) {
	s := fakeServer(t, Options{}, chatVocab(qwen3Template), 1<<16, emitting(thinkPieces...))
	status, out := post(t, s, "/v1/completions", `{"prompt":"2+2?"}`)
	var r completionResponse
	if err := json.Unmarshal([]byte(out), &r); status != 200 || err != nil || r.Choices[0].Text != strings.Join(thinkPieces, "") {
		t.Fatalf("status %d: %s", status, out)
	}
}

// TestEnableThinkingFalse checks that chat_template_kwargs.enable_thinking
// reaches the template, which then writes its empty block into the
// prompt, and that the answer after it is content.
func TestEnableThinkingFalse(t *testing.T) {
	for _, kw := range []string{"", `,"chat_template_kwargs":{"enable_thinking":false}`} {
		var prompt string
		gen := func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
			prompt = l.tok.Decode(j.prompt)
			return emitting("Four.")(ctx, l, j, emit)
		}
		s := fakeServer(t, Options{}, chatVocab(qwen3Template), 1<<16, gen)
		r, c := chatAnswer(t, s, false, kw)
		wantEnd := "assistant\n"
		if kw != "" {
			wantEnd += "<think>\n\n</think>\n\n"
		}
		if !strings.HasSuffix(prompt, wantEnd) {
			t.Errorf("kwargs %q: prompt %q does not end with %q", kw, prompt, wantEnd)
		}
		if r != "" || c != "Four." {
			t.Errorf("kwargs %q: reasoning %q, content %q", kw, r, c)
		}
	}
}

// TestChatGrammarNoReasoning: under a constraint the answer is all
// content, even where the prompt opened a thinking block, since the
// grammar holds from the first token.
func TestChatGrammarNoReasoning(t *testing.T) {
	for _, stream := range []bool{false, true} {
		s := fakeServer(t, Options{}, chatVocab(qwen3OpenTemplate), 1<<16, emitting(`{"a"`, `: 1}`))
		r, c := chatAnswer(t, s, stream, `,"response_format":{"type":"json_object"}`)
		if r != "" || c != `{"a": 1}` {
			t.Errorf("stream %v: reasoning %q, content %q", stream, r, c)
		}
	}
}
