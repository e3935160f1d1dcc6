package grammar

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// ErrNoToken is a grammar that requires what no token of the vocabulary
// spells (or nothing, where the vocabulary has no end-of-generation token).
var ErrNoToken = errors.New("grammar: no token of the vocabulary can continue the text here")

// bitset holds one bit per token id.
type bitset []uint64

func (b bitset) set(id int32)    { b[id>>6] |= 1 << (id & 63) }
func (b bitset) has(id int) bool { return b[id>>6]&(1<<(id&63)) != 0 }

// maxMasks bounds the masks a Matcher keeps (4 KiB each at a 32K
// vocabulary); past it they are dropped and recomputed as needed.
const maxMasks = 64

// mask returns the tokens allowed in the current state.
func (m *Matcher) mask() bitset {
	m.compact()
	if m.done {
		return m.none
	}
	if b, ok := m.masks[m.cur]; ok {
		return b
	}
	m.bits = make(bitset, len(m.none))
	m.walk(0, m.cur)
	if m.a.err != nil {
		return m.none // and the error stays for Mask to report
	}
	if m.cur.need == 0 && m.a.sets[m.cur.set].canEnd {
		for _, id := range m.v.eog {
			m.bits.set(id)
		}
	}
	if len(m.masks) >= maxMasks {
		clear(m.masks)
	}
	m.masks[m.cur] = m.bits
	return m.bits
}

// walk marks the tokens below trie node n, reached in state s, that the
// grammar allows, skipping every subtree whose first byte it refuses.
func (m *Matcher) walk(n int32, s state) {
	nodes := m.v.nodes
	node := &nodes[n]
	for _, id := range m.v.sorted[node.tokLo : node.tokLo+node.tok] {
		m.bits.set(id)
	}
	var set *stackSet
	if s.need == 0 {
		set = m.a.sets[s.set]
	}
	for c := node.first; c < node.first+node.n; c++ {
		b := nodes[c].b
		if set != nil && b < 0x80 {
			// The common case, inlined: an ASCII byte from a known set.
			next := set.ascii[b]
			if next == unknownSet {
				next = m.a.next(s.set, rune(b))
			}
			if next == deadSet {
				continue
			}
			if child := &nodes[c]; next == s.set && child.clean && m.a.loopsOver(s.set, child.below, child.wide) {
				// Every character below leads back here too (inside a
				// string, most of the vocabulary): all the subtree's
				// tokens are allowed, without walking it.
				for _, id := range m.v.sorted[child.tokLo:child.end] {
					m.bits.set(id)
				}
				continue
			}
			m.walk(c, state{set: next})
			continue
		}
		if ns, ok := m.byteStep(s, b); ok {
			m.walk(c, ns)
		}
	}
}

// Allowed fills (and returns) a slice, by token id, of the tokens that may
// come next. End-of-generation tokens are allowed when the text so far is
// a complete sentence of the grammar.
func (m *Matcher) Allowed() []bool {
	m.wait()
	b := m.mask()
	for id := range m.allowed {
		m.allowed[id] = b.has(id)
	}
	return m.allowed
}

// Mask sets the logits of the tokens the grammar does not allow next to
// −Inf; logits has one entry per token of the vocabulary. It fails when
// no token is allowed, which happens when the vocabulary cannot spell
// what the grammar requires.
func (m *Matcher) Mask(logits []float32) error {
	if len(logits) != m.v.size {
		return fmt.Errorf("grammar: %d logits for a vocabulary of %d tokens", len(logits), m.v.size)
	}
	m.wait()
	b := m.mask()
	if m.a.err != nil {
		return m.a.err
	}
	inf := float32(math.Inf(-1))
	any := false
	for w, word := range b {
		any = any || word != 0
		if word == ^uint64(0) {
			continue
		}
		base := w * 64
		for zeros := ^word; zeros != 0; zeros &= zeros - 1 {
			if id := base + bits.TrailingZeros64(zeros); id < len(logits) {
				logits[id] = inf
			}
		}
	}
	if !any {
		return ErrNoToken
	}
	return nil
}
