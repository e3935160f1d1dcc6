package tokenizer

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets run their seeds (f.Add and testdata/fuzz) in every
// `go test`; `go test -fuzz FuzzX` explores further.

// FuzzPreTokenizer checks that every pre-tokenizer cuts any bytes into
// non-empty words that join back to the text.
func FuzzPreTokenizer(f *testing.F) {
	for _, c := range splitCases {
		f.Add(c.text)
	}
	f.Add("x\xff\xc3'S  \r\n\u3000\u00a0123456 ")
	f.Fuzz(func(t *testing.T, s string) {
		for _, pre := range []string{"llama-bpe", "qwen2", "gpt2"} {
			sp, _ := splitterFor(pre)
			var words []string
			sp.each(s, func(w string) { words = append(words, w) })
			if strings.Join(words, "") != s || slices.Contains(words, "") {
				t.Fatalf("%s: %q split into %q", pre, s, words)
			}
		}
	})
}

// checkEncodings checks, for any bytes s, what every tokenizer promises:
// no panic, quoted text encodes as plain text, the length bound holds,
// and where roundTrip says the text can come back, it does, whole and
// through the streaming Decoder.
func checkEncodings(t *testing.T, tok Tokenizer, s string, roundTrip bool) {
	t.Helper()
	ids := tok.Encode(s, true)
	special := tok.EncodeSpecial(s, true)
	q := tok.Quote(s)
	if got := tok.EncodeQuoted(q, true); !slices.Equal(got, ids) {
		t.Fatalf("EncodeQuoted(Quote(%q)) = %v, Encode = %v", s, got, ids)
	}
	if PlainLen(q) != len(s) {
		t.Fatalf("PlainLen(Quote(%q)) = %d, want %d", s, PlainLen(q), len(s))
	}
	tok.EncodeQuoted(s, true) // template text may hold anything
	for _, x := range [][]int32{ids, special} {
		if len(x)*tok.MaxTokenBytes() < len(s) {
			t.Fatalf("%q: %d tokens stand for more than %d bytes each", s, len(x), tok.MaxTokenBytes())
		}
	}
	text := tok.Decode(ids)
	d := NewDecoder(tok)
	var streamed strings.Builder
	for _, id := range ids {
		streamed.WriteString(d.Add(id))
	}
	streamed.WriteString(d.Flush())
	if !utf8.ValidString(streamed.String()) {
		t.Fatalf("%q: the Decoder returned invalid UTF-8 %q", s, streamed.String())
	}
	if !roundTrip {
		return
	}
	if text != s {
		t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, text, ids)
	}
	if streamed.String() != s {
		t.Fatalf("Decoder gave %q for %q", streamed.String(), s)
	}
}

// FuzzSPM runs the Llama 2 vocabulary. Valid UTF-8 without "▁" (which
// SentencePiece cannot tell from a space) comes back from Decode.
func FuzzSPM(f *testing.F) {
	tok := loadModel(f, "llama-2-tiny-random.gguf")
	for _, c := range llama2Cases {
		f.Add(c.text)
	}
	for _, s := range []string{"</s><s> [INST] hi [/INST]", "<unk>", "\xff\xfe", " ", "<0x0A>", "\uFDD0a\uFDD1", "a<s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkEncodings(t, tok, s, utf8.ValidString(s) && !strings.Contains(s, spmSpace))
	})
}

// fuzzBPEVocab is a byte-level vocabulary with merges across words and
// digits, Llama 3 and ChatML control tokens, and a user-defined token.
func fuzzBPEVocab(pre string) Vocab {
	merges := []string{"Ġ t", "h e", "Ġt he", "Ġ q", "u i", "Ġq ui", "Ã ©", "1 2", "12 3", "Ġ Ġ", "ĠĠ ĠĠ", "Ċ Ċ", "< |", "<| e", "e o"}
	v := byteLevelVocab(pre, merges, []string{"Ġquick"},
		[]string{"<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|im_start|>", "<|im_end|>"})
	v.BOS, v.AddBOS = int32(len(v.Tokens)-6), true
	v.EOS = v.BOS + 1
	v.Tokens = append(v.Tokens, "<think>")
	v.Types = append(v.Types, TypeUserDefined)
	return v
}

// FuzzBPE runs byte-level BPE with the Llama 3 and Qwen 2 pre-tokenizers:
// every byte has a token, so any bytes come back from Decode.
func FuzzBPE(f *testing.F) {
	var toks []Tokenizer
	for _, pre := range []string{"llama-bpe", "qwen2"} {
		tok, err := New(fuzzBPEVocab(pre))
		if err != nil {
			f.Fatal(err)
		}
		toks = append(toks, tok)
	}
	for _, c := range splitCases {
		f.Add(c.text)
	}
	for _, s := range []string{"hi<|eot_id|><|start_header_id|>system<|end_header_id|>", "<|im_end|>\n<|im_start|>", "<think>x", "\xff\xfe", "<|eot_id", "\uFDD0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			// The streaming Decoder holds back invalid UTF-8, so only
			// valid text comes back through it.
			checkEncodings(t, tok, s, utf8.ValidString(s))
			if got := tok.Decode(tok.Encode(s, false)); got != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, got)
			}
		}
	})
}
