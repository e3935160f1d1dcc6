package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// feed adds ids one at a time and returns what each Add returned, then Flush.
func feed(d *Decoder, ids []int32) []string {
	var out []string
	for _, id := range ids {
		out = append(out, d.Add(id))
	}
	return append(out, d.Flush())
}

func TestDecoderHoldsPartialCharacters(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	// "😀👍" are byte tokens F0 9F 98 80 and F0 9F 91 8D (id = 3 + byte) after
	// "▁" (29871); "!" is 29991.
	ids := []int32{1, 29871, 243, 162, 155, 131, 243, 162, 148, 144, 29991}
	got := feed(NewDecoder(tok), ids)
	want := []string{"", "", "", "", "", "😀", "", "", "", "👍", "!", ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("pieces %q, want %q", got, want)
	}
}

func TestDecoderLeadingSpace(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	hello, world := int32(15043), int32(3186) // "▁Hello", "▁world"
	cases := []struct {
		ids  []int32
		want string
	}{
		{[]int32{1, hello, world}, "Hello world"}, // a prompt: the added space goes
		{[]int32{hello, world}, " Hello world"},   // a continuation: the space is text
	}
	for _, c := range cases {
		d := NewDecoder(tok)
		if got := strings.Join(feed(d, c.ids), ""); got != c.want {
			t.Errorf("%v: got %q, want %q", c.ids, got, c.want)
		}
		// After Flush the decoder starts a new stream.
		if got := strings.Join(feed(d, c.ids), ""); got != c.want {
			t.Errorf("%v after Flush: got %q, want %q", c.ids, got, c.want)
		}
	}
}

func TestDecoderInvalidBytes(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	b := func(x byte) int32 { return 3 + int32(x) }
	cases := []struct {
		ids  []int32
		want []string
	}{
		// A lone continuation byte can never be a character.
		{[]int32{b(0x80), b('a')}, []string{"\uFFFD", "a", ""}},
		// A start byte followed by ASCII: the start byte is bad, the ASCII is not.
		{[]int32{b(0xE6), b('a')}, []string{"", "\uFFFDa", ""}},
		// A character cut off at the end comes out at Flush.
		{[]int32{b('a'), b(0xE6), b(0x97)}, []string{"a", "", "", "\uFFFD\uFFFD"}},
	}
	for _, c := range cases {
		got := feed(NewDecoder(tok), c.ids)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%v: pieces %q, want %q", c.ids, got, c.want)
		}
	}
}

// The streamed text of an encoded prompt is the prompt, and every piece is
// valid UTF-8.
func TestDecoderMatchesDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	spm := loadModel(t, "llama-2-tiny-random.gguf")
	bpe := mustNew(t, byteLevelVocab("llama-bpe", []string{"Ã ©", "Ġ t"}, nil, nil))
	for _, tok := range []Tokenizer{spm, bpe} {
		d := NewDecoder(tok)
		for range 500 {
			s := randomText(r)
			if strings.Contains(s, "<s>") {
				continue
			}
			ids := tok.Encode(s, true)
			var b strings.Builder
			for _, p := range feed(d, ids) {
				if !utf8.ValidString(p) {
					t.Fatalf("%q: piece %q is not valid UTF-8", s, p)
				}
				b.WriteString(p)
			}
			if b.String() != tok.Decode(ids) {
				t.Fatalf("%q: streamed %q, Decode %q", s, b.String(), tok.Decode(ids))
			}
		}
	}
}

// TestPiece checks that pieces are each token's share of decoded text:
// the leading space that Decode drops at the start of a text is kept, a
// byte token is its byte, and a control token is nothing.
func TestPiece(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	hello := int32(15043) // "▁Hello"
	cases := []struct {
		id   int32
		want string
	}{
		{hello, " Hello"},
		{3 + 0xE2, "\xe2"},
		{1, ""}, {2, ""}, // <s>, </s>
		{-1, ""}, {int32(tok.VocabSize()), ""},
	}
	for _, c := range cases {
		if got := tok.Piece(c.id); got != c.want {
			t.Errorf("Piece(%d) = %q, want %q", c.id, got, c.want)
		}
	}
	if got := tok.Decode([]int32{hello}); got != "Hello" {
		t.Errorf("Decode = %q: the test's premise (a leading space dropped) does not hold", got)
	}
	const s = "Once upon a time, 日本 there was"
	var b strings.Builder
	for _, id := range tok.Encode(s, true) {
		b.WriteString(tok.Piece(id))
	}
	if b.String() != " "+s {
		t.Errorf("pieces of %q join to %q", s, b.String())
	}
}
