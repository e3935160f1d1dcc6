package tokenizer

import (
	"strings"
)

// spmSpace is SentencePiece's visible space, U+2581, which stands for " "
// inside tokens.
const spmSpace = "\u2581"

func (t *tokenizer) initSPM() {
	for i := range t.byteTok {
		t.byteTok[i] = -1
	}
	for i, s := range t.v.Tokens {
		if t.v.Types != nil && t.types[i] != TypeByte {
			continue
		}
		if b, ok := parseByteToken(s); ok {
			t.byteTok[b] = int32(i)
		}
	}
}

// encodeSPM appends the SentencePiece ids of run. Pairs merge when their
// concatenation is a token, highest score first; characters that no token
// covers fall back to their UTF-8 bytes as <0xNN> tokens, or to UNK.
func (t *tokenizer) encodeSPM(out []int32, run string, spacePrefix bool) []int32 {
	if run == "" {
		return out
	}
	s := strings.ReplaceAll(run, " ", spmSpace)
	if spacePrefix {
		s = spmSpace + s
	}
	lookup := func(p string) int32 {
		if id, ok := t.byText[p]; ok {
			return id
		}
		return -1
	}
	syms := initSymbols(make([]symbol, 0, len(s)), s, lookup)
	mergeSymbols(syms, make(candidateHeap, 0, len(syms)), func(l, r *symbol) (uint32, int32, bool) {
		// s[l.start:r.end] is a substring, so this lookup does not allocate.
		id, ok := t.byText[s[l.start:r.end]]
		if !ok {
			return 0, 0, false
		}
		var score float32
		if t.v.Scores != nil {
			score = t.v.Scores[id]
		}
		return scorePrio(score), id, true
	})
	for i := int32(0); i >= 0 && int(i) < len(syms); i = syms[i].next {
		sym := syms[i]
		if sym.id >= 0 {
			out = append(out, sym.id)
			continue
		}
		out = t.byteFallback(out, s[sym.start:sym.end])
	}
	return out
}

// byteFallback appends the byte tokens of a character missing from the
// vocabulary, or one UNK if the vocabulary lacks any of its byte tokens.
func (t *tokenizer) byteFallback(out []int32, char string) []int32 {
	for i := 0; i < len(char); i++ {
		if t.byteTok[char[i]] < 0 {
			if t.v.UNK >= 0 {
				out = append(out, t.v.UNK)
			}
			return out
		}
	}
	for i := 0; i < len(char); i++ {
		out = append(out, t.byteTok[char[i]])
	}
	return out
}

// parseByteToken reads SentencePiece's byte token spelling "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
