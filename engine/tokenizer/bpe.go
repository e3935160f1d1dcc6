package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// bpeState holds what byte-level BPE needs beyond the shared tables.
type bpeState struct {
	split        splitter
	ignoreMerges bool             // a word that is itself a token is not merged (Llama 3)
	ranks        map[uint64]int32 // (left id, right id) → merge rank
	byteRune     [256]rune        // byte → the character standing for it in tokens
	runeByte     map[rune]byte    // the inverse
}

// byteRunes is GPT-2's byte ↔ character table: printable Latin-1 bytes stand
// for themselves, and the rest (controls, space, 0x7F-0xA0, 0xAD) are moved
// to U+0100 onwards in byte order, so that every token is printable text.
func byteRunes() (fwd [256]rune, inv map[rune]byte) {
	inv = make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			fwd[b] = rune(b)
		} else {
			fwd[b] = next
			next++
		}
		inv[fwd[b]] = byte(b)
	}
	return fwd, inv
}

// ByteLevelText spells b as byte-level BPE vocabularies write token text
// (GPT-2's table: " " is "Ġ", "\n" is "Ċ"), as needed to build one.
func ByteLevelText(b []byte) string {
	fwd, _ := byteRunes()
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = fwd[c]
	}
	return string(r)
}

func (t *tokenizer) initBPE() error {
	split, err := splitterFor(t.v.Pre)
	if err != nil {
		return err
	}
	st := &bpeState{
		split:        split,
		ignoreMerges: split.ignoreMerges,
		ranks:        make(map[uint64]int32, len(t.v.Merges)),
	}
	st.byteRune, st.runeByte = byteRunes()
	for rank, m := range t.v.Merges {
		l, r, _ := splitMerge(m) // checked by Validate
		li, ok1 := t.byText[l]
		ri, ok2 := t.byText[r]
		if !ok1 || !ok2 {
			continue // a merge of non-tokens can never apply to token symbols
		}
		key := pairKey(li, ri)
		if _, dup := st.ranks[key]; !dup {
			st.ranks[key] = int32(rank)
		}
	}
	t.bpe = st
	return nil
}

func pairKey(l, r int32) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

// encodeBPE appends the ids of run: split into words by the pre-tokenizer,
// each word's bytes spelled with byteRune, then merged by rank.
func (t *tokenizer) encodeBPE(out []int32, run string) []int32 {
	st := t.bpe
	var mapped strings.Builder
	var syms []symbol
	var queue candidateHeap
	lookup := func(p string) int32 {
		if id, ok := t.byText[p]; ok {
			return id
		}
		return -1
	}
	st.split.each(run, func(word string) {
		mapped.Reset()
		for i := 0; i < len(word); i++ {
			mapped.WriteRune(st.byteRune[word[i]])
		}
		w := mapped.String()
		if st.ignoreMerges {
			if id, ok := t.byText[w]; ok {
				out = append(out, id)
				return
			}
		}
		syms = initSymbols(syms, w, lookup)
		queue = mergeSymbols(syms, queue, func(l, r *symbol) (uint32, int32, bool) {
			if l.id < 0 || r.id < 0 {
				return 0, 0, false
			}
			rank, ok := st.ranks[pairKey(l.id, r.id)]
			if !ok {
				return 0, 0, false
			}
			return uint32(rank), lookup(w[l.start:r.end]), true
		})
		for i := int32(0); i >= 0 && int(i) < len(syms); i = syms[i].next {
			sym := syms[i]
			if sym.id >= 0 {
				out = append(out, sym.id)
				continue
			}
			out = t.bpeFallback(out, w[sym.start:sym.end])
		}
	})
	return out
}

// bpeFallback appends one-character tokens for a merged run that is not
// itself a token (a merge whose result is missing from the vocabulary), and
// UNK for characters without a token.
func (t *tokenizer) bpeFallback(out []int32, s string) []int32 {
	for _, r := range s {
		if id, ok := t.byText[string(r)]; ok {
			out = append(out, id)
		} else if t.v.UNK >= 0 {
			out = append(out, t.v.UNK)
		}
	}
	return out
}

// unmapBytes turns a byte-level token back into the bytes it spells.
// Characters outside the byte table are kept as their own UTF-8.
func (st *bpeState) unmapBytes(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if c, ok := st.runeByte[r]; ok {
			b = append(b, c)
		} else {
			b = utf8.AppendRune(b, r)
		}
	}
	return string(b)
}
