package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// WordPiece ("bert"), as BERT-family GGUF files carry it and llama.cpp
// reads it. The converter respells the original vocabulary: a piece that
// starts a word gets the U+2581 that stands for the space before it
// ("the" becomes "▁the") and a continuation loses its "##" ("##ing"
// becomes "ing"); control tokens ([CLS], [SEP], …) stay as they are. So
// a word is encoded as "▁" + word, matched greedily from the left, longest
// piece first, against the respelled vocabulary: its first piece is a
// word start and the rest are continuations, as WordPiece has it.
//
// Before matching, each code point of the text is replaced by the first
// of its canonical decomposition (NFD) and nonspacing marks are dropped,
// which strips accents whether a letter comes precomposed or not ("é" and
// "e" + U+0301 read as "e", as uncased BERT vocabularies spell it, and as
// llama.cpp reads them); then text is lower-cased, split at white space,
// with every punctuation mark, ASCII symbol and CJK ideograph a word of
// its own, and control characters dropped. A word that cannot be matched
// to the end is one UNK.

// wpmSpace is the word-start marker of a respelled WordPiece vocabulary.
const wpmSpace = "\u2581"

// encodeWPM appends the WordPiece ids of run.
func (t *tokenizer) encodeWPM(out []int32, run string) []int32 {
	for _, w := range wpmWords(run) {
		word := wpmSpace + w
		start := len(out)
		for i := 0; i < len(word); {
			// The longest piece from byte i; pieces are matched as
			// bytes, as the vocabulary's lengths are counted.
			j := min(len(word), i+t.maxBytes)
			for ; j > i; j-- {
				if id, ok := t.byText[word[i:j]]; ok {
					out = append(out, id)
					break
				}
			}
			if j == i {
				out = out[:start] // the word cannot be spelled: one UNK
				break
			}
			i = j
		}
		if len(out) == start && t.v.UNK >= 0 {
			out = append(out, t.v.UNK)
		}
	}
	return out
}

// wpmWords normalises text and splits it into words as WordPiece reads
// it (see above).
func wpmWords(text string) []string {
	var words []string
	var cur strings.Builder
	end := func() {
		if cur.Len() > 0 {
			words = append(words, cur.String())
			cur.Reset()
		}
	}
	var buf [utf8.UTFMax]byte
	for _, r := range text {
		if r >= utf8.RuneSelf {
			d := norm.NFD.Append(buf[:0], []byte(string(r))...)
			r, _ = utf8.DecodeRune(d)
		}
		switch {
		case unicode.IsSpace(r):
			end()
		case r == 0 || r == utf8.RuneError || unicode.Is(unicode.C, r) || unicode.Is(unicode.Mn, r):
			// dropped
		case unicode.IsPunct(r) || r < 0x7f && unicode.IsSymbol(r) || wpmCJK(r):
			end()
			words = append(words, string(unicode.ToLower(r)))
		default:
			cur.WriteRune(unicode.ToLower(r))
		}
	}
	end()
	return words
}

// wpmCJK reports whether r is a CJK ideograph, which BERT's tokenizer
// makes a word of its own (the ranges of the original BERT tokenizer's
// _is_chinese_char, with the Extension E/F bound as Hugging Face's Rust
// tokenizer and llama.cpp have it).
func wpmCJK(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF || r >= 0x20000 && r <= 0x2A6DF ||
		r >= 0x2A700 && r <= 0x2B73F || r >= 0x2B740 && r <= 0x2B81F || r >= 0x2B920 && r <= 0x2CEAF ||
		r >= 0xF900 && r <= 0xFAFF || r >= 0x2F800 && r <= 0x2FA1F
}
