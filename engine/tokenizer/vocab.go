// Package tokenizer turns text into token ids and back for the
// vocabulary kinds that Llama-family GGUF files carry: SentencePiece
// ("llama", merged by score with byte fallback), byte-level BPE ("gpt2",
// merged by rank after a regex pre-tokenizer), and the WordPiece of BERT
// embedding models ("bert", longest match first).
//
// The package is built from plain vocabulary arrays (Vocab) rather than from
// a GGUF file, so it can be tested and reused without the file format.
package tokenizer

import (
	"fmt"
	"math"
	"strings"
)

// Token types as stored in GGUF tokenizer.ggml.token_type.
const (
	TypeUndefined   = 0
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// Vocab is everything needed to build a Tokenizer: the GGUF tokenizer.ggml.*
// arrays and flags, with absent ids written as -1.
type Vocab struct {
	Model  string    // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
	Pre    string    // BPE pre-tokenizer name (tokenizer.ggml.pre), e.g. "llama-bpe", "qwen2"
	Tokens []string  // token text by id
	Scores []float32 // SentencePiece merge scores by id; may be nil
	Types  []int32   // token types by id (Type* constants); may be nil
	Merges []string  // BPE merges "left right", highest priority first
	// Special ids; -1 when the vocabulary has none.
	BOS, EOS, UNK, PAD int32
	// AddBOS and AddEOS say whether Encode(text, true) adds BOS and EOS.
	AddBOS, AddEOS bool
	// SEP is the separator that ends a WordPiece input ([SEP]; -1 for
	// none), which Encode(text, true) adds after it with AddSEP. Other
	// models ignore both.
	SEP    int32
	AddSEP bool
	// AddSpacePrefix makes SentencePiece encoding start each text run with a
	// space, as the model was trained ("Hello" is encoded as "▁Hello").
	// It has no effect on BPE.
	AddSpacePrefix bool
	// EOT lists extra end-of-generation ids besides EOS. New adds the
	// control and user-defined tokens named like well-known end-of-turn
	// markers (<|eot_id|>, <|im_end|>, …; see eotNames).
	EOT []int32
}

// Supported Model values.
const (
	ModelSPM = "llama"
	ModelBPE = "gpt2"
	ModelWPM = "bert"
)

// Validate reports the first inconsistency in v: unknown model, array
// lengths that disagree, ids out of range, malformed merges, or a BPE
// pre-tokenizer this package does not implement.
func (v Vocab) Validate() error {
	n := len(v.Tokens)
	switch v.Model {
	case ModelSPM, ModelBPE, ModelWPM:
	default:
		return fmt.Errorf("tokenizer: model %q is not supported (want %q, %q or %q)", v.Model, ModelSPM, ModelBPE, ModelWPM)
	}
	if n == 0 {
		return fmt.Errorf("tokenizer: vocabulary has no tokens")
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("tokenizer: vocabulary has %d tokens, more than int32 ids allow", n)
	}
	if v.Scores != nil && len(v.Scores) != n {
		return fmt.Errorf("tokenizer: %d scores for %d tokens", len(v.Scores), n)
	}
	if v.Types != nil {
		if len(v.Types) != n {
			return fmt.Errorf("tokenizer: %d token types for %d tokens", len(v.Types), n)
		}
		for i, t := range v.Types {
			if t < TypeUndefined || t > TypeByte {
				return fmt.Errorf("tokenizer: token %d has type %d, want 0..6", i, t)
			}
		}
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}, {"PAD", v.PAD}, {"SEP", v.sep()}} {
		if s.id < -1 || int(s.id) >= n {
			return fmt.Errorf("tokenizer: %s id %d is outside the vocabulary of %d tokens (use -1 for none)", s.name, s.id, n)
		}
	}
	if v.AddBOS && v.BOS < 0 {
		return fmt.Errorf("tokenizer: AddBOS is set but the vocabulary has no BOS token")
	}
	if v.AddEOS && v.EOS < 0 {
		return fmt.Errorf("tokenizer: AddEOS is set but the vocabulary has no EOS token")
	}
	if v.AddSEP && v.Model == ModelWPM && v.SEP < 0 {
		return fmt.Errorf("tokenizer: AddSEP is set but the vocabulary has no SEP token")
	}
	for _, id := range v.EOT {
		if id < 0 || int(id) >= n {
			return fmt.Errorf("tokenizer: end-of-generation id %d is outside the vocabulary of %d tokens", id, n)
		}
	}
	if v.Model == ModelBPE {
		if _, err := splitterFor(v.Pre); err != nil {
			return err
		}
		for i, m := range v.Merges {
			if _, _, ok := splitMerge(m); !ok {
				return fmt.Errorf("tokenizer: merge %d %q is not two parts separated by a space", i, m)
			}
		}
	}
	return nil
}

// sep is the separator id that the model uses: SEP for WordPiece, -1
// (none) for the others, whatever the field holds.
func (v Vocab) sep() int32 {
	if v.Model != ModelWPM {
		return -1
	}
	return v.SEP
}

// splitMerge splits a BPE merge "left right" at its first space. Byte-level
// vocabularies never contain a raw space, so the first one is the separator.
func splitMerge(m string) (left, right string, ok bool) {
	i := strings.IndexByte(m, ' ')
	if i <= 0 || i == len(m)-1 {
		return "", "", false
	}
	return m[:i], m[i+1:], true
}

// eotNames are token texts that end a turn in common chat formats. GGUF files
// often record only one EOS id, while chat models stop on these as well.
var eotNames = map[string]bool{
	"<|eot_id|>":      true, // Llama 3 instruct
	"<|eom_id|>":      true, // Llama 3.1 tool call
	"<|end_of_text|>": true, // Llama 3 base
	"<|im_end|>":      true, // ChatML (Qwen)
	"<|endoftext|>":   true, // GPT-2, Qwen base
	"<|end|>":         true, // Phi-3
	"<end_of_turn>":   true, // Gemma
	"<EOT>":           true, // code infill
}
