package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// A splitter is a BPE pre-tokenizer: it cuts text into the words that BPE
// merges within. The patterns are the regular expressions the models were
// trained with, hand-coded because Go's regexp has no lookahead; each match
// function follows its pattern's alternatives in order, as a backtracking
// engine would.
//
// Llama 3 (digits ≤ 3) and Qwen 2 (digits = 1):
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//	 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// GPT-2:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
type splitter struct {
	gpt2         bool // GPT-2 pattern rather than Llama 3's
	maxDigits    int  // longest digit run in one word (Llama 3 style only)
	ignoreMerges bool // see bpeState
}

// splitterFor maps tokenizer.ggml.pre names to their pattern.
func splitterFor(pre string) (splitter, error) {
	switch pre {
	case "llama3", "llama-v3", "llama-bpe":
		return splitter{maxDigits: 3, ignoreMerges: true}, nil
	case "smaug-bpe", "dbrx":
		return splitter{maxDigits: 3}, nil
	case "qwen2", "deepseek-r1-qwen":
		return splitter{maxDigits: 1}, nil
	case "gpt-2", "gpt2":
		return splitter{gpt2: true}, nil
	}
	return splitter{}, fmt.Errorf("tokenizer: BPE pre-tokenizer %q is not supported (supported: llama-bpe, llama3, smaug-bpe, dbrx, qwen2, deepseek-r1-qwen, gpt-2)", pre)
}

// each calls fn with each word of text in order; the words concatenate to text.
func (sp splitter) each(text string, fn func(word string)) {
	for i := 0; i < len(text); {
		var end int
		if sp.gpt2 {
			end = matchGPT2(text, i)
		} else {
			end = matchLlama3(text, i, sp.maxDigits)
		}
		fn(text[i:end])
		i = end
	}
}

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }
func isS(r rune) bool { return unicode.IsSpace(r) }

// isP is [^\s\p{L}\p{N}]: punctuation, symbols and anything else.
func isP(r rune) bool { return r >= 0 && !isS(r) && !isL(r) && !isN(r) }

func isCRLF(r rune) bool { return r == '\r' || r == '\n' }

// at decodes the character at s[i:]. At the end of s it returns -1, which
// is in no class, and size 0; an invalid byte is utf8.RuneError of size 1.
func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	return utf8.DecodeRuneInString(s[i:])
}

// span returns the end of the run of characters in class starting at i.
func span(s string, i int, class func(rune) bool) int {
	for i < len(s) {
		r, n := at(s, i)
		if !class(r) {
			break
		}
		i += n
	}
	return i
}

// contraction returns the length of 's, 't, 're, 've, 'm, 'll or 'd at
// s[i:], or 0. With fold, ASCII case is ignored.
func contraction(s string, i int, fold bool) int {
	if i >= len(s) || s[i] != '\'' {
		return 0
	}
	lower := func(k int) byte {
		if k >= len(s) {
			return 0
		}
		c := s[k]
		if fold && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		return c
	}
	switch c := lower(i + 1); c {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if lower(i+2) == 'e' {
			return 3
		}
	case 'l':
		if lower(i+2) == 'l' {
			return 3
		}
	}
	return 0
}

// spaceEnd matches \s+(?!\S)|\s+ at a whitespace character: the whole run
// if it ends the text or is one character long, otherwise all of it but the
// last character, which then leads the next word.
func spaceEnd(s string, i int) int {
	last, end := i, i
	for end < len(s) {
		r, n := at(s, end)
		if !isS(r) {
			break
		}
		last = end
		end += n
	}
	if end == len(s) || last == i {
		return end
	}
	return last
}

// matchLlama3 returns the end of the Llama 3 / Qwen 2 word starting at i.
func matchLlama3(s string, i int, maxDigits int) int {
	if n := contraction(s, i, true); n > 0 {
		return i + n
	}
	r, n := at(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(r) {
		return span(s, i+n, isL)
	}
	if !isCRLF(r) && !isN(r) {
		if r2, n2 := at(s, i+n); isL(r2) {
			return span(s, i+n+n2, isL)
		}
	}
	// \p{N}{1,maxDigits}
	if isN(r) {
		end := i
		for k := 0; k < maxDigits; k++ {
			r, n := at(s, end)
			if !isN(r) {
				break
			}
			end += n
		}
		return end
	}
	//  ?[^\s\p{L}\p{N}]+[\r\n]*
	j := i
	if r == ' ' {
		if r2, _ := at(s, i+n); isP(r2) {
			j = i + n
		}
	}
	if r2, _ := at(s, j); isP(r2) {
		return span(s, span(s, j, isP), isCRLF)
	}
	// \s*[\r\n]+ : the whitespace run up to its last line break.
	runEnd, lastBreak := i, -1
	for runEnd < len(s) {
		r, n := at(s, runEnd)
		if !isS(r) {
			break
		}
		runEnd += n
		if isCRLF(r) {
			lastBreak = runEnd
		}
	}
	if lastBreak > 0 {
		return lastBreak
	}
	return spaceEnd(s, i)
}

// matchGPT2 returns the end of the GPT-2 word starting at i.
func matchGPT2(s string, i int) int {
	if n := contraction(s, i, false); n > 0 {
		return i + n
	}
	r, n := at(s, i)
	j := i
	next, _ := at(s, i+n)
	if r == ' ' && !isS(next) {
		j = i + n // the optional leading space of the next three alternatives
		r = next
	}
	switch {
	case isL(r):
		return span(s, j, isL)
	case isN(r):
		return span(s, j, isN)
	case isP(r):
		return span(s, j, isP)
	}
	return spaceEnd(s, i)
}
