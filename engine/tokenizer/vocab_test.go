package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := Vocab{
		Model:  ModelSPM,
		Tokens: []string{"<unk>", "<s>", "</s>", "a"},
		Scores: []float32{0, 0, 0, -1},
		Types:  []int32{2, 3, 3, 1},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1,
		AddBOS: true,
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("good vocabulary: %v", err)
	}
	bpe := byteLevelVocab("llama-bpe", []string{"a b"}, nil, nil)
	if err := bpe.Validate(); err != nil {
		t.Fatalf("good BPE vocabulary: %v", err)
	}
	cases := []struct {
		name   string
		edit   func(v *Vocab)
		errHas string
	}{
		{"model", func(v *Vocab) { v.Model = "wordpiece" }, "model"},
		{"no tokens", func(v *Vocab) {
			v.Tokens = nil
			v.Scores = nil
			v.Types = nil
			v.BOS, v.EOS, v.UNK = -1, -1, -1
			v.AddBOS = false
		}, "no tokens"},
		{"scores", func(v *Vocab) { v.Scores = v.Scores[:2] }, "scores"},
		{"types", func(v *Vocab) { v.Types = append(v.Types, 1) }, "types"},
		{"type value", func(v *Vocab) { v.Types[3] = 9 }, "type 9"},
		{"bos range", func(v *Vocab) { v.BOS = 4 }, "BOS"},
		{"eos negative", func(v *Vocab) { v.EOS = -2 }, "EOS"},
		{"unk range", func(v *Vocab) { v.UNK = 100 }, "UNK"},
		{"pad range", func(v *Vocab) { v.PAD = 4 }, "PAD"},
		{"add bos", func(v *Vocab) { v.BOS = -1 }, "AddBOS"},
		{"add eos", func(v *Vocab) { v.EOS = -1; v.AddEOS = true }, "AddEOS"},
		{"eot", func(v *Vocab) { v.EOT = []int32{2, 7} }, "end-of-generation"},
		{"pre", func(v *Vocab) { v.Model = ModelBPE; v.Pre = "mystery" }, "pre-tokenizer"},
		{"merge", func(v *Vocab) { v.Model = ModelBPE; v.Pre = "qwen2"; v.Merges = []string{"ab"} }, "merge 0"},
		{"merge space", func(v *Vocab) { v.Model = ModelBPE; v.Pre = "qwen2"; v.Merges = []string{"a b", "a "} }, "merge 1"},
	}
	for _, c := range cases {
		v := good
		v.Scores = append([]float32(nil), good.Scores...)
		v.Types = append([]int32(nil), good.Types...)
		c.edit(&v)
		err := v.Validate()
		if err == nil || !strings.Contains(err.Error(), c.errHas) {
			t.Errorf("%s: Validate() = %v, want an error mentioning %q", c.name, err, c.errHas)
		}
		if _, err2 := New(v); err2 == nil {
			t.Errorf("%s: New accepted the vocabulary", c.name)
		}
	}
}

// Random vocabularies, valid or not, and random ids never panic.
func TestNoPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	pieces := []string{"", "a", "b", "ab", "▁", "▁a", "<0x41>", "<0xZZ>", "<s>", "Ġ", "Ġa", "a b", " ", "é"}
	built := 0
	for range 500 {
		n := r.IntN(8)
		v := Vocab{Model: []string{ModelSPM, ModelBPE}[r.IntN(2)], Pre: "llama-bpe",
			BOS: int32(r.IntN(n+1)) - 1, EOS: int32(r.IntN(n+1)) - 1, UNK: int32(r.IntN(n+2)) - 1, PAD: -1,
			AddBOS: r.IntN(2) == 0, AddSpacePrefix: r.IntN(2) == 0}
		for range n {
			v.Tokens = append(v.Tokens, pieces[r.IntN(len(pieces))])
			v.Types = append(v.Types, int32(r.IntN(7)))
			v.Scores = append(v.Scores, float32(r.NormFloat64()))
			v.Merges = append(v.Merges, pieces[r.IntN(len(pieces))])
		}
		tok, err := New(v)
		if err != nil {
			continue
		}
		built++
		for range 5 {
			s := randomText(r) + "<s>a b"
			ids := tok.Encode(s, true)
			tok.EncodeSpecial(s, true)
			tok.EncodeQuoted(tok.Quote(s)+s, true)
			ids = append(ids, int32(r.IntN(20))-5)
			tok.Decode(ids)
			d := NewDecoder(tok)
			for _, id := range ids {
				d.Add(id)
			}
			d.Flush()
			tok.TokenText(int32(r.IntN(20)) - 5)
			tok.IsEOG(int32(r.IntN(20)) - 5)
		}
	}
	if built < 50 {
		t.Errorf("only %d of 500 random vocabularies were valid; the test exercises too little", built)
	}
}
