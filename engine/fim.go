package engine

// FIM are a code model's fill-in-the-middle tokens: the prompt
// PRE prefix SUF suffix MID asks for what goes between prefix and suffix.
// SEP (and REP), where the model has them, separate files of context. An
// id is -1 where the model has no such token.
type FIM struct {
	Pre, Suf, Mid, Sep, Rep int32
}

// Complete says whether the model can fill in the middle.
func (f FIM) Complete() bool { return f.Pre >= 0 && f.Suf >= 0 && f.Mid >= 0 }

// fimNames are the texts code models give their FIM tokens, for files
// whose metadata does not name them: Qwen2.5-Coder and StarCoder,
// DeepSeek-Coder, CodeLlama.
var fimNames = [][3]string{
	{"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"},
	{"<fim_prefix>", "<fim_suffix>", "<fim_middle>"},
	{"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"},
	{"▁<PRE>", "▁<SUF>", "▁<MID>"},
}

// FIM is the model's fill-in-the-middle tokens: the
// tokenizer.ggml.fim_*_token_id keys (or the older prefix_, suffix_ and
// middle_token_id), else tokens with the usual names. They are looked up
// once, on first use.
func (m *Model) FIM() FIM {
	return m.fim()
}

// findFIM looks the model's FIM tokens up.
func (m *Model) findFIM() FIM {
	n := m.Tokenizer.VocabSize()
	id := func(keys ...string) int32 {
		for _, k := range keys {
			if v, ok := m.file.Uint("tokenizer.ggml." + k); ok && v < uint64(n) {
				return int32(v)
			}
		}
		return -1
	}
	f := FIM{Pre: id("fim_pre_token_id", "prefix_token_id"), Suf: id("fim_suf_token_id", "suffix_token_id"),
		Mid: id("fim_mid_token_id", "middle_token_id"), Sep: id("fim_sep_token_id"), Rep: id("fim_rep_token_id")}
	if f.Complete() {
		return f
	}
	byText := map[string]int32{}
	for i := range int32(n) {
		byText[m.Tokenizer.TokenText(i)] = i
	}
	for _, names := range fimNames {
		pre, ok1 := byText[names[0]]
		suf, ok2 := byText[names[1]]
		mid, ok3 := byText[names[2]]
		if ok1 && ok2 && ok3 {
			f.Pre, f.Suf, f.Mid = pre, suf, mid
			if sep, ok := byText["<|file_sep|>"]; ok && f.Sep < 0 {
				f.Sep = sep
			}
			return f
		}
	}
	return f
}
