package grammar

import (
	"slices"
	"strings"
	"unicode/utf8"

	"headinfer/engine/tokenizer"
)

// Vocab is a model's vocabulary as the grammar sees it: the bytes each
// token adds to the text, in a trie, and the tokens that end generation.
// Build it once per model; it is immutable and safe for concurrent use.
type Vocab struct {
	size   int
	nodes  []trieNode // nodes[0] is the root; a node's children are contiguous
	sorted []int32    // token ids ordered by their bytes; a node's tokens are a run of it
	pieces []string   // by id
	eog    []int32
}

// trieNode is one prefix of some tokens' bytes.
type trieNode struct {
	b          byte  // the last byte of the prefix
	first, n   int32 // children: nodes[first : first+n]
	tokLo, tok int32 // tokens whose bytes are exactly the prefix: sorted[tokLo : tokLo+tok]
	end        int32 // the tokens of the whole subtree are sorted[tokLo:end]
	// below holds the ASCII bytes that follow the prefix in the
	// subtree's tokens, wide whether any other byte does, and clean
	// whether what follows the prefix is whole UTF-8 characters in every
	// token: a state that every character below leads back to allows
	// the whole subtree at once (see Matcher.walk).
	below       [2]uint64
	wide, clean bool
}

// NewVocab builds a Vocab from each token's bytes (pieces, by id) and the
// ids that end generation. A token with no bytes other than those (a
// control token) is never allowed: it adds nothing the grammar could check.
func NewVocab(pieces []string, eog []int32) *Vocab {
	v := &Vocab{size: len(pieces), pieces: pieces, eog: slices.Clone(eog)}
	isEOG := make(map[int32]bool, len(eog))
	for _, id := range eog {
		isEOG[id] = true
	}
	for id, p := range pieces {
		if p != "" && !isEOG[int32(id)] {
			v.sorted = append(v.sorted, int32(id))
		}
	}
	slices.SortFunc(v.sorted, func(a, b int32) int { return strings.Compare(pieces[a], pieces[b]) })
	v.nodes = []trieNode{{}}
	v.build(0, 0, int32(len(v.sorted)), 0)
	return v
}

// VocabOf reads the vocabulary of tok: each token's piece as decoded text
// shows it mid-sentence, and its end-of-generation tokens.
func VocabOf(tok tokenizer.Tokenizer) *Vocab {
	pieces := make([]string, tok.VocabSize())
	var eog []int32
	for id := range pieces {
		if tok.IsEOG(int32(id)) {
			eog = append(eog, int32(id))
			continue
		}
		pieces[id] = tok.Piece(int32(id))
	}
	return NewVocab(pieces, eog)
}

// build fills node with the tokens sorted[lo:hi], which all share the
// node's prefix of depth bytes.
func (v *Vocab) build(node, lo, hi int32, depth int) {
	i := lo
	for i < hi && len(v.pieces[v.sorted[i]]) == depth {
		i++
	}
	v.nodes[node].tokLo, v.nodes[node].tok, v.nodes[node].end = lo, i-lo, hi
	v.nodes[node].clean = true
	for _, id := range v.sorted[i:hi] {
		if !utf8.ValidString(v.pieces[id][depth:]) {
			v.nodes[node].clean = false
			break
		}
	}
	type group struct{ lo, hi int32 }
	var groups []group
	for j := i; j < hi; {
		b := v.pieces[v.sorted[j]][depth]
		k := j + 1
		for k < hi && v.pieces[v.sorted[k]][depth] == b {
			k++
		}
		groups = append(groups, group{j, k})
		j = k
	}
	first := int32(len(v.nodes))
	v.nodes[node].first, v.nodes[node].n = first, int32(len(groups))
	for _, g := range groups {
		v.nodes = append(v.nodes, trieNode{b: v.pieces[v.sorted[g.lo]][depth]})
	}
	for k, g := range groups {
		c := first + int32(k)
		v.build(c, g.lo, g.hi, depth+1)
		n, child := &v.nodes[node], &v.nodes[c]
		n.below[0] |= child.below[0]
		n.below[1] |= child.below[1]
		n.wide = n.wide || child.wide
		if child.b < 0x80 {
			n.below[child.b>>6] |= 1 << (child.b & 63)
		} else {
			n.wide = true
		}
	}
}

// Size is the number of token ids, the length of the logits.
func (v *Vocab) Size() int { return v.size }
