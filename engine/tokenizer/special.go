package tokenizer

import (
	"cmp"
	"slices"
	"strings"
)

// specialIndex finds special tokens (control, user-defined, unknown) written
// in text, so "<|eot_id|>" in a prompt becomes one id rather than the
// pieces of its spelling.
type specialIndex struct {
	byFirst [256][]specialToken // candidates by first byte, longest first
}

type specialToken struct {
	text string
	id   int32
}

func newSpecialIndex(tokens []string, types []int32) specialIndex {
	var x specialIndex
	for i, s := range tokens {
		switch types[i] {
		case TypeControl, TypeUserDefined, TypeUnknown:
		default:
			continue
		}
		if s == "" {
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

// split calls fn for each run of ordinary text (special = -1) and each
// special token (run = "") in text order, taking at each position the
// longest special token that starts there.
func (x *specialIndex) split(text string, fn func(run string, special int32)) {
	start := 0
	for i := 0; i < len(text); i++ {
		for _, c := range x.byFirst[text[i]] {
			if !strings.HasPrefix(text[i:], c.text) {
				continue
			}
			if start < i {
				fn(text[start:i], -1)
			}
			fn("", c.id)
			i += len(c.text) - 1
			start = i + 1
			break
		}
	}
	if start < len(text) {
		fn(text[start:], -1)
	}
}
