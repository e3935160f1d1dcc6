package tokenizer

import (
	"cmp"
	"slices"
	"strings"
)

// Which tokens written in text are read as themselves rather than spelled
// out piece by piece:
//
//   - plain text (Encode): user-defined tokens, the vocabulary's extra words
//     ("<think>", runs of spaces) that the model saw as one token in any
//     text, except those that end generation or stand for BOS, EOS or PAD;
//   - special text (EncodeSpecial, a template's own text): every control,
//     unknown and user-defined token.
//
// The difference, the guarded tokens, is what text from a request must
// never produce: "</s>", "<|eot_id|>", "<|im_start|>" would let a user end
// the assistant's turn or forge a system turn.

// specialIndex finds tokens written in text, so "<|eot_id|>" in a prompt
// becomes one id rather than the pieces of its spelling.
type specialIndex struct {
	byFirst [256][]specialToken // candidates by first byte, longest first
}

type specialToken struct {
	text string
	id   int32
}

// newSpecialIndex indexes the tokens for which keep is true.
func newSpecialIndex(tokens []string, keep func(id int32) bool) specialIndex {
	var x specialIndex
	for i, s := range tokens {
		if s == "" || !keep(int32(i)) {
			continue
		}
		x.byFirst[s[0]] = append(x.byFirst[s[0]], specialToken{s, int32(i)})
	}
	for i := range x.byFirst {
		// Longest first so "<|end|>" does not cut "<|endoftext|>" short;
		// among equal lengths the lower id wins, for a fixed result.
		slices.SortStableFunc(x.byFirst[i], func(a, b specialToken) int {
			if c := cmp.Compare(len(b.text), len(a.text)); c != 0 {
				return c
			}
			return cmp.Compare(a.id, b.id)
		})
	}
	return x
}

// matchAt returns the longest token written at text[i:] and its length,
// or (-1, 0).
func (x *specialIndex) matchAt(text string, i int) (id int32, n int) {
	for _, c := range x.byFirst[text[i]] {
		if strings.HasPrefix(text[i:], c.text) {
			return c.id, len(c.text)
		}
	}
	return -1, 0
}

// split calls fn for each run of ordinary text (special = -1) and each
// indexed token (run = "") in text order, taking at each position the
// longest token that starts there.
func (x *specialIndex) split(text string, fn func(run string, special int32)) {
	start := 0
	for i := 0; i < len(text); i++ {
		id, n := x.matchAt(text, i)
		if n == 0 {
			continue
		}
		if start < i {
			fn(text[start:i], -1)
		}
		fn("", id)
		i += n - 1
		start = i + 1
	}
	if start < len(text) {
		fn(text[start:], -1)
	}
}
