package server

import (
	"strings"
	"unicode"
)

// The thinking block of a reasoning model (Qwen3, DeepSeek-R1): the
// model writes its reasoning between <think> and </think>, then the
// answer. Chat answers carry the reasoning as reasoning_content apart
// from content, as llama-server's --reasoning-format deepseek does, so
// that clients show or keep the answer without parsing tags.
const (
	thinkOpen  = "<think>"
	thinkClose = "</think>"
)

// Reasoning formats of Options.ReasoningFormat and --reasoning-format.
const (
	ReasoningDeepSeek = "deepseek" // the default: reasoning_content apart
	ReasoningNone     = "none"     // the text as generated, in content
)

// templateThinks reports whether a chat template writes thinking blocks,
// the sign of a model that generates them: models whose template never
// mentions <think> keep their answers as they are.
func templateThinks(src string) bool { return strings.Contains(src, thinkOpen) }

// promptOpensThink reports whether a rendered chat prompt ends inside a
// thinking block: some templates (Qwen3's thinking releases) write
// "<think>\n" after the assistant's header, so the model's text begins
// with reasoning and has no opening tag.
func promptOpensThink(prompt string) bool {
	return strings.HasSuffix(strings.TrimRightFunc(prompt, unicode.IsSpace), thinkOpen)
}

// thinkState is where a thinkSplitter is in the generated text.
type thinkState int

const (
	thinkStart   thinkState = iota // before any text: an opening tag may come
	thinkInside                    // in the block
	thinkAfter                     // just past the closing tag: space is dropped
	thinkContent                   // the answer, passed through
)

// thinkSplitter separates the thinking block from the answer in text that
// arrives piece by piece. Text that could be part of a tag is held back
// until the next piece shows whether it is, so that no tag reaches either
// side when a tag is split across tokens; so is the space at the end of
// the reasoning, which is trimmed as llama-server trims it. A block
// counts only at the very start of the text (after space), or from the
// start when the prompt opened it; a <think> later in the answer is text.
type thinkSplitter struct {
	state   thinkState
	held    string
	started bool // reasoning text has been returned (its leading space is gone)
}

// newThinkSplitter returns a splitter for text that begins inside the
// block when open is true.
func newThinkSplitter(open bool) *thinkSplitter {
	if open {
		return &thinkSplitter{state: thinkInside}
	}
	return &thinkSplitter{}
}

// add takes the next piece of text and returns the reasoning and the
// content that can be sent now.
func (t *thinkSplitter) add(text string) (reasoning, content string) {
	buf := t.held + text
	t.held = ""
	switch t.state {
	case thinkStart:
		rest := strings.TrimLeftFunc(buf, unicode.IsSpace)
		switch {
		case strings.HasPrefix(rest, thinkOpen):
			t.state = thinkInside
			return t.add(rest[len(thinkOpen):])
		case strings.HasPrefix(thinkOpen, rest): // space, or a partial tag
			t.held = buf
			return "", ""
		}
		t.state = thinkContent
		return "", buf
	case thinkInside:
		if i := strings.Index(buf, thinkClose); i >= 0 {
			reasoning = t.reasoning(strings.TrimRightFunc(buf[:i], unicode.IsSpace))
			t.state = thinkAfter
			_, content = t.add(buf[i+len(thinkClose):])
			return reasoning, content
		}
		// Hold back a possible start of the closing tag and the space
		// before it.
		keep := 0
		for k := min(len(thinkClose)-1, len(buf)); k > 0; k-- {
			if strings.HasSuffix(buf, thinkClose[:k]) {
				keep = k
				break
			}
		}
		out := strings.TrimRightFunc(buf[:len(buf)-keep], unicode.IsSpace)
		t.held = buf[len(out):]
		return t.reasoning(out), ""
	case thinkAfter:
		rest := strings.TrimLeftFunc(buf, unicode.IsSpace)
		if rest != "" {
			t.state = thinkContent
		}
		return "", rest
	}
	return "", buf
}

// reasoning returns s as the next piece of reasoning, without the space
// at the start of the block.
func (t *thinkSplitter) reasoning(s string) string {
	if !t.started {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		t.started = s != ""
	}
	return s
}

// flush returns the held-back text at the end of generation: a block
// never closed is all reasoning (without its trailing space); text that
// only looked like the start of a tag is what it was.
func (t *thinkSplitter) flush() (reasoning, content string) {
	h := t.held
	t.held = ""
	switch t.state {
	case thinkStart:
		return "", h
	case thinkInside:
		return t.reasoning(strings.TrimRightFunc(h, unicode.IsSpace)), ""
	}
	return "", ""
}
