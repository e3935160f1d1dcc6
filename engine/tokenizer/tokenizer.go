package tokenizer

import (
	"strings"
)

// Tokenizer encodes text to token ids and decodes ids to text. It is safe
// for concurrent use.
type Tokenizer interface {
	// Encode returns the ids of text. With addSpecial it adds BOS and EOS as
	// the vocabulary asks (AddBOS, AddEOS). Special tokens written in the
	// text, such as "<|eot_id|>" or "</s>", are always read as those tokens.
	Encode(text string, addSpecial bool) []int32
	// Decode returns the text of ids. Control tokens print as nothing, and
	// for SentencePiece the space that Encode put in front is removed, so
	// Decode(Encode(s, b)) == s for text without special tokens. Byte
	// tokens are copied as bytes, so a cut-off sequence may end in invalid
	// UTF-8; Decoder handles streams.
	Decode(ids []int32) string
	// TokenText returns the vocabulary's text for id ("▁Hello", "<0x0A>",
	// "Ġworld"), or "" for an id outside the vocabulary.
	TokenText(id int32) string
	// IsEOG reports whether id ends generation: EOS or any EOT id.
	IsEOG(id int32) bool
	// BOS returns the beginning-of-sequence id, or -1.
	BOS() int32
	// EOS returns the end-of-sequence id, or -1.
	EOS() int32
	// VocabSize returns the number of tokens.
	VocabSize() int
}

// unknownPiece is what an unknown token prints as: a visible block rather
// than nothing, so lost text shows.
const unknownPiece = "\u2585"

// tokenizer is the shared part of both vocabulary kinds; encodeText is the
// kind-specific step applied to each run of text between special tokens.
type tokenizer struct {
	v        Vocab
	types    []int32          // by id, TypeNormal where the vocabulary gave none
	byText   map[string]int32 // token text → id; the last duplicate wins
	specials specialIndex
	eog      map[int32]bool
	pieces   []string // decoded text by id, computed once

	// SentencePiece: ids of <0xNN> tokens, -1 when missing.
	byteTok [256]int32
	// BPE state.
	bpe *bpeState
}

// New checks v (see Vocab.Validate) and builds its tokenizer. The
// tokenizer keeps v's slices, which must not change afterwards.
func New(v Vocab) (Tokenizer, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	n := len(v.Tokens)
	t := &tokenizer{
		v:      v,
		types:  make([]int32, n),
		byText: make(map[string]int32, n),
		eog:    map[int32]bool{},
	}
	for i, s := range v.Tokens {
		t.types[i] = TypeNormal
		if v.Types != nil && v.Types[i] != TypeUndefined {
			t.types[i] = v.Types[i]
		}
		if s != "" {
			t.byText[s] = int32(i)
		}
	}
	if v.Types == nil {
		// Without types the special ids are still control tokens.
		for _, id := range append([]int32{v.BOS, v.EOS, v.PAD}, v.EOT...) {
			if id >= 0 {
				t.types[id] = TypeControl
			}
		}
		if v.UNK >= 0 {
			t.types[v.UNK] = TypeUnknown
		}
	}
	if v.EOS >= 0 {
		t.eog[v.EOS] = true
	}
	for _, id := range v.EOT {
		t.eog[id] = true
	}
	for i, s := range v.Tokens {
		if eotNames[s] && (t.types[i] == TypeControl || t.types[i] == TypeUserDefined) {
			t.eog[int32(i)] = true
		}
	}
	t.specials = newSpecialIndex(v.Tokens, t.types)

	switch v.Model {
	case ModelSPM:
		t.initSPM()
	case ModelBPE:
		if err := t.initBPE(); err != nil {
			return nil, err
		}
	}
	t.pieces = make([]string, n)
	for i := range t.pieces {
		t.pieces[i] = t.makePiece(int32(i))
	}
	return t, nil
}

func (t *tokenizer) BOS() int32          { return t.v.BOS }
func (t *tokenizer) EOS() int32          { return t.v.EOS }
func (t *tokenizer) VocabSize() int      { return len(t.v.Tokens) }
func (t *tokenizer) IsEOG(id int32) bool { return t.eog[id] }

func (t *tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.v.Tokens) {
		return ""
	}
	return t.v.Tokens[id]
}

func (t *tokenizer) Encode(text string, addSpecial bool) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.v.AddBOS {
		out = append(out, t.v.BOS)
	}
	// SentencePiece puts the space prefix at the start and after every
	// special token, since each text run is encoded as if it began a text.
	atStart := true
	t.specials.split(text, func(run string, special int32) {
		if special >= 0 {
			out = append(out, special)
			atStart = true
			return
		}
		out = t.encodeText(out, run, atStart)
		atStart = false
	})
	if addSpecial && t.v.AddEOS {
		out = append(out, t.v.EOS)
	}
	return out
}

// encodeText appends the ids of run, a piece of text with no special tokens.
func (t *tokenizer) encodeText(out []int32, run string, atStart bool) []int32 {
	if t.bpe != nil {
		return t.encodeBPE(out, run)
	}
	return t.encodeSPM(out, run, atStart && t.v.AddSpacePrefix)
}

func (t *tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	first := true
	for _, id := range ids {
		p := t.piece(id)
		if p == "" {
			continue
		}
		if first && t.stripsLeadingSpace() {
			p = strings.TrimPrefix(p, " ")
		}
		first = false
		b.WriteString(p)
	}
	return b.String()
}

// stripsLeadingSpace reports whether decoding drops the first space of a
// text, the one that encoding added.
func (t *tokenizer) stripsLeadingSpace() bool {
	return t.bpe == nil && t.v.AddSpacePrefix
}

// piece returns the text that id prints as.
func (t *tokenizer) piece(id int32) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

func (t *tokenizer) makePiece(id int32) string {
	s := t.v.Tokens[id]
	switch t.types[id] {
	case TypeControl, TypeUnused:
		return ""
	case TypeUnknown:
		return unknownPiece
	case TypeUserDefined:
		return s
	}
	if t.bpe != nil {
		return t.bpe.unmapBytes(s)
	}
	if b, ok := parseByteToken(s); ok && t.byteTok[b] == id {
		return string([]byte{b})
	}
	return strings.ReplaceAll(s, spmSpace, " ")
}
