package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// byteLevelVocab builds a byte-level BPE vocabulary: the 256 byte
// characters (id = byte), then the result of each merge in order, then
// extra whole-word tokens, then control tokens.
func byteLevelVocab(pre string, merges, words, control []string) Vocab {
	fwd, _ := byteRunes()
	v := Vocab{Model: ModelBPE, Pre: pre, Merges: merges, BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	seen := map[string]bool{}
	add := func(s string, typ int32) {
		if !seen[s] {
			seen[s] = true
			v.Tokens = append(v.Tokens, s)
			v.Types = append(v.Types, typ)
		}
	}
	for _, r := range fwd {
		add(string(r), TypeNormal)
	}
	for _, m := range merges {
		l, r, _ := splitMerge(m)
		add(l+r, TypeNormal)
	}
	for _, w := range words {
		add(w, TypeNormal)
	}
	for _, c := range control {
		add(c, TypeControl)
	}
	return v
}

func mustNew(t *testing.T, v Vocab) Tokenizer {
	t.Helper()
	tok, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// texts returns the token texts of ids, for readable failures.
func texts(tok Tokenizer, ids []int32) []string {
	var s []string
	for _, id := range ids {
		s = append(s, tok.TokenText(id))
	}
	return s
}

func TestBPEMergeOrder(t *testing.T) {
	cases := []struct {
		merges []string
		text   string
		want   []string
	}{
		// The lower rank merges first, which decides the split.
		{[]string{"a b", "b c"}, "abc", []string{"ab", "c"}},
		{[]string{"b c", "a b"}, "abc", []string{"a", "bc"}},
		// A repeated merge keeps its first (best) rank.
		{[]string{"b c", "a b", "b c"}, "abc", []string{"a", "bc"}},
		// A merged symbol merges again when its pair has a rank.
		{[]string{"b c", "a b", "a bc"}, "abc", []string{"abc"}},
		{[]string{"a b", "ab c"}, "abcabc", []string{"abc", "abc"}},
		// Equal ranks (the same merge twice) go leftmost first.
		{[]string{"a a"}, "aaa", []string{"aa", "a"}},
		{[]string{"a a", "aa aa"}, "aaaaa", []string{"aaaa", "a"}},
		// The space is the byte character Ġ and stays with the following word.
		{[]string{"Ġ a", "Ġa b"}, "x abc", []string{"x", "Ġab", "c"}},
		// Unmerged multi-byte characters are one token per byte.
		{nil, "é", []string{"Ã", "©"}},
		{[]string{"Ã ©"}, "café", []string{"c", "a", "f", "Ã©"}},
	}
	for _, c := range cases {
		tok := mustNew(t, byteLevelVocab("smaug-bpe", c.merges, nil, nil))
		ids := tok.Encode(c.text, true)
		if got := texts(tok, ids); !slices.Equal(got, c.want) {
			t.Errorf("merges %q: Encode(%q) = %q, want %q", c.merges, c.text, got, c.want)
		}
		if got := tok.Decode(ids); got != c.text {
			t.Errorf("merges %q: Decode = %q, want %q", c.merges, got, c.text)
		}
	}
}

func TestBPEIgnoreMerges(t *testing.T) {
	// "xyz" is a token that no merge reaches. Llama 3 takes a word that is a
	// token as it is; other pre-tokenizers merge it by the rules.
	for pre, want := range map[string][]string{
		"llama-bpe": {"xyz", "Ġxy"},
		"smaug-bpe": {"xy", "z", "Ġxy"},
	} {
		tok := mustNew(t, byteLevelVocab(pre, []string{"x y", "Ġ xy"}, []string{"xyz"}, nil))
		if got := texts(tok, tok.Encode("xyz xy", false)); !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", pre, got, want)
		}
	}
}

func TestBPESpecialTokens(t *testing.T) {
	v := byteLevelVocab("llama-bpe", []string{"h i", "Ġ hi"}, nil, []string{"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eot|>"})
	bos, eos := int32(len(v.Tokens)-4), int32(len(v.Tokens)-3)
	eot, short := eos+1, eos+2
	v.BOS, v.EOS, v.AddBOS = bos, eos, true
	tok := mustNew(t, v)

	got := tok.EncodeSpecial("hi<|eot_id|> hi<|eot|><|eot_id", true)
	hi, spHi := int32(256), int32(257)
	want := []int32{bos, hi, eot, spHi, short}
	want = append(want, tok.Encode("<|eot_id", false)...) // an unfinished name is text
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v %q, want %v", got, texts(tok, got), want)
	}
	if s := tok.Decode(got); s != "hi hi<|eot_id" {
		t.Errorf("Decode = %q, want control tokens to print as nothing", s)
	}
	// EOS is EOG; <|eot_id|> is found by name; the BOS and others are not.
	for id, w := range map[int32]bool{eos: true, eot: true, bos: false, short: false, hi: false} {
		if tok.IsEOG(id) != w {
			t.Errorf("IsEOG(%q) = %v, want %v", tok.TokenText(id), !w, w)
		}
	}

	// The longest special token at a position wins.
	v = byteLevelVocab("llama-bpe", nil, nil, []string{"<a>", "<a>b"})
	tok = mustNew(t, v)
	if got := texts(tok, tok.EncodeSpecial("<a>b<a>c", false)); !slices.Equal(got, []string{"<a>b", "<a>", "c"}) {
		t.Errorf("got %q, want [<a>b <a> c]", got)
	}
}

func TestBPERoundTrip(t *testing.T) {
	merges := []string{"Ġ t", "h e", "Ġt he", "Ġ q", "u i", "Ġq ui", "Ã ©", "1 2", "12 3", "Ġ Ġ", "ĠĠ ĠĠ", "Ċ Ċ"}
	r := rand.New(rand.NewPCG(3, 4))
	for _, pre := range []string{"llama-bpe", "qwen2", "gpt2"} {
		tok := mustNew(t, byteLevelVocab(pre, merges, []string{"Ġquick"}, nil))
		for range 1000 {
			s := randomText(r)
			ids := tok.Encode(s, false)
			if got := tok.Decode(ids); got != s {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", pre, s, got)
			}
		}
	}
}

// The expected splits are worked out by hand from the patterns (and agree
// with a backtracking regex engine).
var splitCases = []struct {
	text                string
	llama3, qwen2, gpt2 []string
}{
	{"I'm here", []string{"I", "'m", " here"}, nil, []string{"I", "'m", " here"}},
	{"HE'LL go", []string{"HE", "'LL", " go"}, nil, []string{"HE", "'", "LL", " go"}},
	{"I'M", []string{"I", "'M"}, nil, []string{"I", "'", "M"}},
	{"don't", []string{"don", "'t"}, nil, []string{"don", "'t"}},
	{"'sup", []string{"'s", "up"}, nil, []string{"'s", "up"}},
	{"'Sup", []string{"'S", "up"}, nil, []string{"'", "Sup"}},
	{"a'b", []string{"a", "'b"}, nil, []string{"a", "'", "b"}},
	{"12345678", []string{"123", "456", "78"}, []string{"1", "2", "3", "4", "5", "6", "7", "8"}, []string{"12345678"}},
	{"3.14", []string{"3", ".", "14"}, []string{"3", ".", "1", "4"}, []string{"3", ".", "14"}},
	{" 123 abc", []string{" ", "123", " abc"}, []string{" ", "1", "2", "3", " abc"}, []string{" 123", " abc"}},
	{"café's 2024", []string{"café", "'s", " ", "202", "4"}, []string{"café", "'s", " ", "2", "0", "2", "4"}, []string{"café", "'s", " 2024"}},
	{"$5", []string{"$", "5"}, nil, []string{"$", "5"}},
	{"(hi)", []string{"(hi", ")"}, nil, []string{"(", "hi", ")"}},
	{"a  b", []string{"a", " ", " b"}, nil, []string{"a", " ", " b"}},
	{"hello   world", []string{"hello", "  ", " world"}, nil, []string{"hello", "  ", " world"}},
	{"end.  ", []string{"end", ".", "  "}, nil, []string{"end", ".", "  "}},
	{"  ", []string{"  "}, nil, []string{"  "}},
	{"x\n\ny", []string{"x", "\n\n", "y"}, nil, []string{"x", "\n", "\n", "y"}},
	{"x \n y", []string{"x", " \n", " y"}, nil, []string{"x", " \n", " y"}},
	{"one\r\ntwo", []string{"one", "\r\n", "two"}, nil, []string{"one", "\r", "\n", "two"}},
	{" ...!?\n\nok", []string{" ...!?\n\n", "ok"}, nil, []string{" ...!?", "\n", "\n", "ok"}},
	{"!!\n", []string{"!!\n"}, nil, []string{"!!", "\n"}},
	{"\thello", []string{"\thello"}, nil, []string{"\t", "hello"}},
	{"tab\t\tx", []string{"tab", "\t", "\tx"}, nil, []string{"tab", "\t", "\t", "x"}},
	{"日本語 text", []string{"日本語", " text"}, nil, []string{"日本語", " text"}},
	{"x\u3000\u3000y", []string{"x", "\u3000", "\u3000y"}, nil, []string{"x", "\u3000", "\u3000", "y"}},
	{"\u00a0word", []string{"\u00a0word"}, nil, []string{"\u00a0", "word"}},
	{"", nil, nil, nil},
}

func TestPreTokenizerSplits(t *testing.T) {
	split := func(pre, s string) []string {
		sp, err := splitterFor(pre)
		if err != nil {
			t.Fatal(err)
		}
		var w []string
		sp.each(s, func(x string) { w = append(w, x) })
		return w
	}
	for _, c := range splitCases {
		qwen2 := c.qwen2
		if qwen2 == nil {
			qwen2 = c.llama3 // the patterns differ only in digit runs
		}
		for _, x := range []struct {
			pre  string
			want []string
		}{{"llama-bpe", c.llama3}, {"qwen2", qwen2}, {"gpt2", c.gpt2}} {
			if got := split(x.pre, c.text); !slices.Equal(got, x.want) {
				t.Errorf("%s %q: got %q, want %q", x.pre, c.text, got, x.want)
			}
		}
	}
	// Whatever the text, the words cover it exactly and none is empty.
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		s := randomText(r)
		if r.IntN(4) == 0 {
			s += string([]byte{0xff, 'a', 0xc3}) // invalid UTF-8
		}
		for _, pre := range []string{"llama-bpe", "qwen2", "gpt2"} {
			w := split(pre, s)
			if strings.Join(w, "") != s || slices.Contains(w, "") {
				t.Fatalf("%s: %q split into %q", pre, s, w)
			}
		}
	}
}
