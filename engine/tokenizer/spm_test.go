package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStoriesEncode(t *testing.T) {
	tok := loadModel(t, "stories260K.gguf")
	if tok.VocabSize() != 512 || tok.BOS() != 1 || tok.EOS() != 2 {
		t.Fatalf("vocab %d bos %d eos %d, want 512 1 2", tok.VocabSize(), tok.BOS(), tok.EOS())
	}
	// From shared/models/reference_greedy.json.
	got := tok.Encode("Once upon a time", true)
	want := []int32{1, 403, 407, 261, 378}
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != "Once upon a time" {
		t.Errorf("Decode = %q", s)
	}
}

// The expected ids come from the Llama 2 SentencePiece model (checked with
// an independent implementation of it); the vocabulary in
// llama-2-tiny-random.gguf is the real one.
var llama2Cases = []struct {
	text string
	ids  []int32
}{
	{"Hello world", []int32{1, 15043, 3186}},
	{" Hello", []int32{1, 29871, 15043}},
	{"\n", []int32{1, 29871, 13}},
	{"Once upon a time", []int32{1, 9038, 2501, 263, 931}},
	{"Hello world!", []int32{1, 15043, 3186, 29991}},
	{"I've been there, haven't you?", []int32{1, 306, 29915, 345, 1063, 727, 29892, 7359, 29915, 29873, 366, 29973}},
	{"  leading", []int32{1, 259, 8236}},
	{"trailing  ", []int32{1, 25053, 259}},
	{"a\n\nb", []int32{1, 263, 13, 13, 29890}},
	{"2024-11-25 12:34:56", []int32{1, 29871, 29906, 29900, 29906, 29946, 29899, 29896, 29896, 29899, 29906, 29945, 29871, 29896, 29906, 29901, 29941, 29946, 29901, 29945, 29953}},
	{"¡Hola! ¿Qué tal?", []int32{1, 28534, 29950, 2963, 29991, 18613, 2182, 29948, 5969, 29973}},
	{"日本語のテキスト", []int32{1, 29871, 30325, 30346, 30968, 30199, 30572, 30454, 30255, 30279}},
	{"Привет, мир", []int32{1, 7203, 7616, 29892, 4157, 29927}},
	// Emoji are not in the vocabulary: their UTF-8 bytes are <0xNN> tokens (id = 3 + byte).
	{"😀👍🏽", []int32{1, 29871, 243, 162, 155, 131, 243, 162, 148, 144, 243, 162, 146, 192}},
	{"tab\there", []int32{1, 4434, 12, 4150}},
	{"The café is naïve.", []int32{1, 450, 274, 28059, 338, 1055, 30085, 345, 29889}},
	{"x  \n  y", []int32{1, 921, 259, 13, 29871, 343}},
	{"def f(x):\n    return x**2\n", []int32{1, 822, 285, 29898, 29916, 1125, 13, 1678, 736, 921, 1068, 29906, 13}},
	{"3.14159265358979", []int32{1, 29871, 29941, 29889, 29896, 29946, 29896, 29945, 29929, 29906, 29953, 29945, 29941, 29945, 29947, 29929, 29955, 29929}},
}

func TestLlama2Encode(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	if tok.VocabSize() != 32000 {
		t.Fatalf("VocabSize = %d, want 32000", tok.VocabSize())
	}
	for _, c := range llama2Cases {
		if got := tok.Encode(c.text, true); !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
		}
		if got := tok.Encode(c.text, false); !slices.Equal(got, c.ids[1:]) {
			t.Errorf("Encode(%q, false) = %v, want %v", c.text, got, c.ids[1:])
		}
		if got := tok.Decode(c.ids); got != c.text {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.text)
		}
	}
}

func TestSPMWithoutSpacePrefix(t *testing.T) {
	v := readGGUFVocab(t, modelPath(t, "llama-2-tiny-random.gguf"))
	v.AddSpacePrefix = false
	tok := mustNew(t, v)
	for text, want := range map[string][]int32{
		"Hello world": {1, 10994, 3186}, // "Hello" without "▁"
		" Hello":      {1, 15043},
	} {
		ids := tok.Encode(text, true)
		if !slices.Equal(ids, want) {
			t.Errorf("Encode(%q) = %v, want %v", text, ids, want)
		}
		if got := tok.Decode(ids); got != text {
			t.Errorf("Decode(%v) = %q, want %q: no space was added, so none is removed", ids, got, text)
		}
	}
}

func TestLlama2TokenText(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	for id, want := range map[int32]string{0: "<unk>", 1: "<s>", 2: "</s>", 13: "<0x0A>", 15043: "▁Hello", 29871: "▁", -1: "", 32000: ""} {
		if got := tok.TokenText(id); got != want {
			t.Errorf("TokenText(%d) = %q, want %q", id, got, want)
		}
	}
	if !tok.IsEOG(2) || tok.IsEOG(1) || tok.IsEOG(13) {
		t.Errorf("IsEOG: only </s> should end generation")
	}
}

func TestLlama2SpecialTokensInText(t *testing.T) {
	tok := loadModel(t, "llama-2-tiny-random.gguf")
	// Special tokens in text are read as such, and the text after one starts
	// afresh with a space prefix.
	got := tok.EncodeSpecial("Hello</s><s>Hello", false)
	want := []int32{15043, 2, 1, 15043}
	if !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != "Hello Hello" {
		t.Errorf("Decode = %q, want %q (control tokens print as nothing)", s, "Hello Hello")
	}
	if got := tok.Encode("", true); !slices.Equal(got, []int32{1}) {
		t.Errorf("Encode(\"\", true) = %v, want [1]", got)
	}
	if got := tok.Encode("", false); len(got) != 0 {
		t.Errorf("Encode(\"\", false) = %v, want []", got)
	}
}

// randomText returns text drawn from pieces that exercise spaces, line
// breaks, byte fallback and multi-byte characters.
func randomText(r *rand.Rand) string {
	atoms := []string{"the", " quick", "Brown", " ", "  ", "\n", "\t", "\r\n", "'s", "123", "4", ".", "!?", "(", "é", "naïve",
		"日本", "語", "Ω", "∑", "😀", "👍🏽", "\u00a0", "\u3000", "x", "Z", "ﬁ", "ǅ", "Ⅻ", "<", ">", "s>", "<0x0A>"}
	var b strings.Builder
	for range 1 + r.IntN(15) {
		if r.IntN(8) == 0 {
			b.WriteRune(rune(0x20 + r.IntN(0x3000))) // anything, including unassigned code points
			continue
		}
		b.WriteString(atoms[r.IntN(len(atoms))])
	}
	return b.String()
}

func TestSPMRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		tok := loadModel(t, name)
		for range 2000 {
			s := randomText(r)
			if strings.Contains(s, spmSpace) {
				// SentencePiece cannot tell "▁" from the space it
				// stands for.
				continue
			}
			if !utf8.ValidString(s) {
				t.Fatalf("bad test text %q", s)
			}
			for _, add := range []bool{true, false} {
				ids := tok.Encode(s, add)
				if got := tok.Decode(ids); got != s {
					t.Fatalf("%s: Decode(Encode(%q, %v)) = %q (ids %v)", name, s, add, got, ids)
				}
			}
		}
	}
}

// TestSPMScoreOrder checks the merge order on a vocabulary small enough to
// follow by hand.
func TestSPMScoreOrder(t *testing.T) {
	base := Vocab{
		Model:  ModelSPM,
		Tokens: []string{"<unk>", "a", "b", "c", "ab", "bc", "abc"},
		BOS:    -1, EOS: -1, UNK: 0, PAD: -1,
	}
	cases := []struct {
		scores []float32
		text   string
		want   []int32
	}{
		// "ab" outscores "bc": a+b first, then ab+c.
		{[]float32{0, 0, 0, 0, -1, -2, -3}, "abc", []int32{6}},
		{[]float32{0, 0, 0, 0, -1, -2, -3}, "abab", []int32{4, 4}},
		// Characters without a token and no byte tokens become UNK.
		{[]float32{0, 0, 0, 0, -1, -2, -3}, "axb", []int32{1, 0, 2}},
	}
	for _, c := range cases {
		v := base
		v.Scores = c.scores
		tok, err := New(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Encode(c.text, false); !slices.Equal(got, c.want) {
			t.Errorf("scores %v: Encode(%q) = %v, want %v", c.scores, c.text, got, c.want)
		}
	}

	// Here the order decides the result: with "bc" first, "a"+"bc" has no
	// token, so the text stays a, bc; with "ab" first it becomes ab, c.
	v := base
	v.Tokens = []string{"<unk>", "a", "b", "c", "ab", "bc"}
	v.Scores = []float32{0, 0, 0, 0, -2, -1}
	tok, _ := New(v)
	if got := tok.Encode("abc", false); !slices.Equal(got, []int32{1, 5}) {
		t.Errorf("bc first: got %v, want [1 5]", got)
	}
	v.Scores = []float32{0, 0, 0, 0, -1, -2}
	tok, _ = New(v)
	if got := tok.Encode("abc", false); !slices.Equal(got, []int32{4, 3}) {
		t.Errorf("ab first: got %v, want [4 3]", got)
	}

	// Equal scores merge leftmost first: "aaa" is aa, a, not a, aa.
	v = Vocab{Model: ModelSPM, Tokens: []string{"a", "aa"}, BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	tok, _ = New(v)
	if got := tok.Encode("aaa", false); !slices.Equal(got, []int32{1, 0}) {
		t.Errorf("tie: got %v, want [1 0]", got)
	}
}
