package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and decodes ids to text. It is safe
// for concurrent use.
type Tokenizer interface {
	// Encode returns the ids of text read as plain text. With addSpecial
	// it adds BOS and EOS as the vocabulary asks (AddBOS, AddEOS). Control
	// tokens written in the text, such as "<|eot_id|>" or "</s>", are
	// spelled out as the text they are; user-defined tokens that do not
	// end generation are read as themselves (see special.go). This is the
	// encoding for text that comes from a request.
	Encode(text string, addSpecial bool) []int32
	// EncodeSpecial is Encode for text whose control tokens are meant:
	// every control, unknown and user-defined token written in it is read
	// as that token. It is for what the operator types (`generate -p`)
	// and for clients that ask for it explicitly.
	EncodeSpecial(text string, addSpecial bool) []int32
	// Quote prepares text from a request for a chat template: it returns s
	// with the characters that could make or complete a control token
	// replaced by a marked form that no token matches, which EncodeQuoted
	// turns back into plain text (see quote.go). s is returned unchanged
	// when nothing needs it.
	Quote(s string) string
	// EncodeQuoted encodes a rendered chat template: control tokens in
	// the template's own text are read as tokens, and text that passed
	// through Quote is read as Encode reads it, in one piece with the
	// text around it.
	EncodeQuoted(text string, addSpecial bool) []int32
	// MaxTokenBytes returns the most bytes of text that one token stands
	// for, so text of n bytes has at least n/MaxTokenBytes() tokens. It
	// lets a caller refuse text that cannot fit a context before encoding
	// it.
	MaxTokenBytes() int
	// Decode returns the text of ids. Control tokens print as nothing, and
	// for SentencePiece the space that Encode put in front is removed, so
	// Decode(Encode(s, b)) == s for valid UTF-8 text that the vocabulary
	// covers (all of it with byte tokens or byte-level BPE), except that
	// SentencePiece reads "▁" as the space it stands for. Byte tokens are
	// copied as bytes, so a cut-off sequence may end in invalid UTF-8;
	// Decoder handles streams.
	Decode(ids []int32) string
	// Piece returns the bytes id stands for in decoded text, as Decode
	// writes them in the middle of a text: SentencePiece's "▁" as a space
	// (a leading one kept), a byte token as its one byte, a control token
	// as "". It is one token's share of a text, as logprobs and
	// /tokenize's pieces show it; "" for an id outside the vocabulary.
	Piece(id int32) string
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
	special  specialIndex     // tokens read in special text
	plain    specialIndex     // tokens read in plain text
	guards   guards           // tokens plain text must not produce
	eog      map[int32]bool
	pieces   []string // decoded text by id, computed once
	maxBytes int      // see MaxTokenBytes

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
		for _, id := range append([]int32{v.BOS, v.EOS, v.PAD, v.sep()}, v.EOT...) {
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
	t.special = newSpecialIndex(v.Tokens, t.isSpecial)
	t.plain = newSpecialIndex(v.Tokens, t.inPlainText)
	t.guards = newGuards(v.Tokens, func(id int32) bool { return t.isSpecial(id) && !t.inPlainText(id) })
	// A token stands for at most its own text's bytes: SentencePiece's
	// "▁" is three bytes for one space, a byte-level BPE character one or
	// two for one byte. An unknown token stands for one character.
	t.maxBytes = utf8.UTFMax
	for _, s := range v.Tokens {
		t.maxBytes = max(t.maxBytes, len(s))
	}

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

func (t *tokenizer) MaxTokenBytes() int { return t.maxBytes }

// isSpecial reports whether id is read as itself in special text.
func (t *tokenizer) isSpecial(id int32) bool {
	switch t.types[id] {
	case TypeControl, TypeUserDefined, TypeUnknown:
		return true
	}
	return false
}

// inPlainText reports whether id is read as itself in plain text.
func (t *tokenizer) inPlainText(id int32) bool {
	if t.types[id] != TypeUserDefined || t.eog[id] {
		return false
	}
	return id != t.v.BOS && id != t.v.EOS && id != t.v.PAD && id != t.v.sep()
}

func (t *tokenizer) Encode(text string, addSpecial bool) []int32 {
	e := t.newEncoding(len(text), addSpecial)
	e.text(text, &t.plain)
	return e.finish()
}

func (t *tokenizer) EncodeSpecial(text string, addSpecial bool) []int32 {
	e := t.newEncoding(len(text), addSpecial)
	e.text(text, &t.special)
	return e.finish()
}

// encoding collects the ids of one Encode call.
type encoding struct {
	t          *tokenizer
	out        []int32
	addSpecial bool
	// SentencePiece puts the space prefix at the start and after every
	// token read as itself, since each text run is encoded as if it began
	// a text.
	atStart bool
}

func (t *tokenizer) newEncoding(textLen int, addSpecial bool) *encoding {
	e := &encoding{t: t, out: make([]int32, 0, textLen/3+2), addSpecial: addSpecial, atStart: true}
	if addSpecial && t.v.AddBOS {
		e.out = append(e.out, t.v.BOS)
	}
	return e
}

// text appends the ids of text, reading the tokens of idx as themselves.
func (e *encoding) text(text string, idx *specialIndex) {
	idx.split(text, func(run string, special int32) {
		if special >= 0 {
			e.token(special)
			return
		}
		e.out = e.t.encodeText(e.out, run, e.atStart)
		e.atStart = false
	})
}

// token appends id, a token read as itself.
func (e *encoding) token(id int32) {
	e.out = append(e.out, id)
	e.atStart = true
}

func (e *encoding) finish() []int32 {
	if e.addSpecial && e.t.v.AddEOS {
		e.out = append(e.out, e.t.v.EOS)
	}
	if e.addSpecial && e.t.v.AddSEP && e.t.v.sep() >= 0 {
		e.out = append(e.out, e.t.v.SEP)
	}
	return e.out
}

// encodeText appends the ids of run, a piece of text with no special tokens.
func (t *tokenizer) encodeText(out []int32, run string, atStart bool) []int32 {
	// The merge keeps 32-bit offsets: a run beyond maxRun (only a caller
	// without a size limit can pass one) is encoded in pieces cut at
	// character boundaries, which may tokenize differently at the cuts.
	for len(run) > maxRun {
		cut := maxRun
		for cut > maxRun-utf8.UTFMax && !utf8.RuneStart(run[cut]) {
			cut--
		}
		out = t.encodeText(out, run[:cut], atStart)
		run, atStart = run[cut:], false
	}
	if t.bpe != nil {
		return t.encodeBPE(out, run)
	}
	if t.v.Model == ModelWPM {
		return t.encodeWPM(out, run)
	}
	return t.encodeSPM(out, run, atStart && t.v.AddSpacePrefix)
}

// maxRun is the longest text encoded in one piece; a SentencePiece run
// grows by up to 3x when its spaces become "▁".
const maxRun = 1 << 29

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
	return t.bpe == nil && (t.v.AddSpacePrefix || t.v.Model == ModelWPM)
}

func (t *tokenizer) Piece(id int32) string { return t.piece(id) }

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
