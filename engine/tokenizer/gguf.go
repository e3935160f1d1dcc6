package tokenizer

import (
	"fmt"

	"headinfer/engine/gguf"
)

// FromGGUF builds a model's tokenizer from its tokenizer.ggml.* keys.
func FromGGUF(f *gguf.File) (Tokenizer, error) {
	var v Vocab
	var ok bool
	if v.Model, ok = f.String("tokenizer.ggml.model"); !ok {
		return nil, fmt.Errorf("model has no tokenizer (tokenizer.ggml.model is missing)")
	}
	if v.Tokens, ok = f.Strings("tokenizer.ggml.tokens"); !ok {
		return nil, fmt.Errorf("model has no tokenizer.ggml.tokens")
	}
	v.Pre, _ = f.String("tokenizer.ggml.pre")
	v.Scores, _ = f.Floats32("tokenizer.ggml.scores")
	if types, ok := f.Ints("tokenizer.ggml.token_type"); ok {
		v.Types = make([]int32, len(types))
		for i, t := range types {
			v.Types[i] = int32(t)
		}
	}
	v.Merges, _ = f.Strings("tokenizer.ggml.merges")
	id := func(key string) int32 {
		if x, ok := f.Uint("tokenizer.ggml." + key); ok && x < uint64(len(v.Tokens)) {
			return int32(x)
		}
		return -1
	}
	v.BOS, v.EOS, v.UNK, v.PAD = id("bos_token_id"), id("eos_token_id"), id("unknown_token_id"), id("padding_token_id")
	v.SEP = -1
	wpm := v.Model == ModelWPM
	if wpm {
		// A BERT input is [CLS] text [SEP]: CLS as its BOS, where the
		// file names it apart only.
		if v.BOS < 0 {
			v.BOS = id("cls_token_id")
		}
		v.SEP = id("seperator_token_id") // sic: the GGUF key's spelling
	}
	flag := func(key string, def bool) bool {
		if b, ok := f.Bool("tokenizer.ggml." + key); ok {
			return b
		}
		return def
	}
	spm := v.Model == ModelSPM
	v.AddBOS = flag("add_bos_token", spm || wpm)
	v.AddEOS = flag("add_eos_token", false)
	v.AddSEP = wpm && v.SEP >= 0 && flag("add_sep_token", true)
	v.AddSpacePrefix = flag("add_space_prefix", spm)
	return New(v)
}
