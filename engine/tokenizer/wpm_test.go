package tokenizer

import (
	"slices"
	"testing"
)

// wpmVocab is a small respelled WordPiece vocabulary: control tokens, word
// starts with "▁", continuations bare.
func wpmVocab(t *testing.T) Tokenizer {
	t.Helper()
	tokens := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
		"▁the", "▁play", "ing", "▁re", "▁un", "play", "able", "▁,", "▁.", "▁!", "▁'", "▁s",
		"▁caf", "e", "▁日", "▁本", "▁$", "▁a", "b", "▁ab", "▁x", "▁hello"}
	types := make([]int32, len(tokens))
	for i := range types {
		types[i] = TypeNormal
		if i < 5 {
			types[i] = TypeControl
		}
	}
	tok, err := New(Vocab{Model: ModelWPM, Tokens: tokens, Types: types, BOS: 2, EOS: -1, UNK: 1, PAD: 0, SEP: 3,
		AddBOS: true, AddSEP: true})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestWordPieceEncode(t *testing.T) {
	tok := wpmVocab(t)
	for _, tc := range []struct {
		text string
		ids  []int32
	}{
		// Lower-cased; a word's first piece is a word start, the rest
		// continuations, longest first ("▁play" before "▁un"+...).
		{"The playing", []int32{5, 6, 7}},
		{"unplayable", []int32{9, 10, 11}},
		// Punctuation is a word of its own, with or without spaces.
		{"the, playing.", []int32{5, 12, 6, 7, 13}},
		{"the's!", []int32{5, 15, 16, 14}},
		// An ASCII symbol too; a word that cannot be spelled to its
		// end is one UNK, not its spellable start.
		{"$the", []int32{21, 5}},
		{"thex", []int32{1}},
		{"zzz the", []int32{1, 5}},
		// CJK ideographs are words of their own; control characters
		// go; runs of white space of any kind separate.
		{"日本", []int32{19, 20}},
		{"the\u0000\u200b\tplaying\u3000the", []int32{5, 6, 7, 5}},
		// Accents go, precomposed or written apart.
		{"café", []int32{17, 18}},
		{"Cafe\u0301", []int32{17, 18}},
		// Longest first: "▁ab" then "b", not "▁a" "b" "b".
		{"abb", []int32{24, 23}},
		{"", nil},
	} {
		got := tok.Encode(tc.text, false)
		if !slices.Equal(got, tc.ids) {
			t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.ids)
		}
	}
	if got := tok.Encode("hello", true); !slices.Equal(got, []int32{2, 26, 3}) {
		t.Errorf("Encode with specials = %v, want [CLS] hello [SEP]", got)
	}
	// Control tokens written in text are text.
	if got := tok.Encode("[CLS]", false); slices.Contains(got, 2) {
		t.Errorf("Encode(\"[CLS]\") = %v: read as the control token", got)
	}
	if got := tok.EncodeSpecial("[CLS] the", false); !slices.Equal(got, []int32{2, 5}) {
		t.Errorf("EncodeSpecial(\"[CLS] the\") = %v, want [2 5]", got)
	}
	if s := tok.Decode([]int32{2, 5, 6, 7, 12, 9, 10, 11, 3}); s != "the playing , unplayable" {
		t.Errorf("Decode = %q", s)
	}
}

func TestWordPieceNeedsSEP(t *testing.T) {
	if _, err := New(Vocab{Model: ModelWPM, Tokens: []string{"[CLS]", "▁a"}, BOS: 0, EOS: -1, UNK: -1, PAD: -1, SEP: -1, AddSEP: true}); err == nil {
		t.Error("AddSEP without a SEP token was accepted")
	}
}
