package server

import (
	"strings"
	"testing"
)

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
