package grammar

import (
	"fmt"
	"unicode/utf8"
)

// Matcher follows one generation through a grammar: Mask says which tokens
// may come next, Accept takes the token drawn. It is not safe for
// concurrent use; a batch gives each sequence its own.
type Matcher struct {
	v       *Vocab
	a       *automaton
	cur     state
	allowed []bool
	done    bool // an end-of-generation token was accepted

	// The allowed tokens of a state depend on the state alone, and a
	// generation returns to the same states again and again (inside a
	// string, between the members of an object), so masks are kept.
	masks map[state]bitset
	bits  bitset // the mask being filled by walk
	none  bitset // nothing allowed: after the end

	pending chan struct{} // closed when Prepare's computation is done
}

// state is where the automaton stands: a set of stacks, and the character
// begun by the bytes so far when the last token ended inside one.
type state struct {
	set  int32
	part uint32 // the bits of the unfinished character read so far
	need uint8  // its continuation bytes still to come
	size uint8  // its length in bytes
}

// minRune is the least character of each UTF-8 length: a shorter one
// written longer (an overlong form, such as 0xE0 0x81 0xBB for "{") is
// not UTF-8, and must not sneak a character past the grammar.
var minRune = [5]rune{0, 0, 0x80, 0x800, 0x10000}

// NewMatcher starts at the beginning of g's root rule, over vocabulary v.
func NewMatcher(g *Grammar, v *Vocab) *Matcher {
	a := newAutomaton(g)
	return &Matcher{v: v, a: a, cur: state{set: a.initial()}, allowed: make([]bool, v.size),
		masks: map[state]bitset{}, none: make(bitset, (v.size+63)/64)}
}

// byteStep advances s by byte b; ok is false when the grammar (or UTF-8)
// does not allow b there.
func (m *Matcher) byteStep(s state, b byte) (state, bool) {
	if s.need == 0 {
		switch {
		case b < 0x80:
			n := m.a.next(s.set, rune(b))
			return state{set: n}, n != deadSet
		case b >= 0xC2 && b <= 0xDF:
			s.part, s.need, s.size = uint32(b&0x1F), 1, 2
		case b >= 0xE0 && b <= 0xEF:
			s.part, s.need, s.size = uint32(b&0x0F), 2, 3
		case b >= 0xF0 && b <= 0xF4:
			s.part, s.need, s.size = uint32(b&0x07), 3, 4
		default:
			return s, false
		}
	} else {
		if b&0xC0 != 0x80 {
			return s, false
		}
		s.part, s.need = s.part<<6|uint32(b&0x3F), s.need-1
		if s.need == 0 {
			r := rune(s.part)
			if !utf8.ValidRune(r) || r < minRune[s.size] {
				return s, false
			}
			n := m.a.next(s.set, r)
			return state{set: n}, n != deadSet
		}
	}
	shift := 6 * uint32(s.need)
	lo := rune(s.part << shift)
	hi := min(lo|rune(1<<shift-1), utf8.MaxRune)
	lo = max(lo, minRune[s.size])
	return s, lo <= hi && m.a.mayTake(s.set, lo, hi)
}

// Accept advances past token id. It fails, leaving the state as it was,
// when the grammar does not allow the token.
func (m *Matcher) Accept(id int32) error {
	m.wait()
	if id < 0 || int(id) >= m.v.size {
		return fmt.Errorf("grammar: token %d is outside the vocabulary of %d tokens", id, m.v.size)
	}
	if m.done {
		return fmt.Errorf("grammar: token %d after the end of generation", id)
	}
	for _, e := range m.v.eog {
		if e == id {
			if m.cur.need != 0 || !m.a.sets[m.cur.set].canEnd {
				return fmt.Errorf("grammar: the text is not complete, it cannot end here")
			}
			m.done = true
			return nil
		}
	}
	p := m.v.pieces[id]
	if p == "" {
		return fmt.Errorf("grammar: token %d has no text the grammar could match", id)
	}
	s, err := m.advance(m.cur, p)
	if m.a.err != nil {
		return m.a.err
	}
	if err != nil {
		return fmt.Errorf("grammar: token %d (%q) %w", id, p, err)
	}
	m.cur = s
	m.compact()
	return nil
}

// AcceptString advances past the bytes of text, as if tokens spelling it
// had been drawn.
func (m *Matcher) AcceptString(text string) error {
	m.wait()
	s, err := m.advance(m.cur, text)
	if m.a.err != nil {
		return m.a.err
	}
	if err != nil {
		return fmt.Errorf("grammar: %q %w", text, err)
	}
	m.cur = s
	m.compact()
	return nil
}

func (m *Matcher) advance(s state, text string) (state, error) {
	for i := 0; i < len(text); i++ {
		var ok bool
		if s, ok = m.byteStep(s, text[i]); !ok {
			return s, fmt.Errorf("is not allowed by the grammar at byte %d", i)
		}
	}
	return s, nil
}

// CanEnd reports whether the text so far is a complete sentence of the
// grammar, so that generation may stop.
func (m *Matcher) CanEnd() bool {
	m.wait()
	return m.cur.need == 0 && m.a.sets[m.cur.set].canEnd
}

// compact starts the interned tables over when they have grown past their
// budget, keeping the current state.
func (m *Matcher) compact() {
	if m.a.full() {
		m.a, m.cur.set = m.a.rebase(m.cur.set)
		clear(m.masks) // their states' numbers are gone
	}
}

// Match reports whether text is a complete sentence of g.
func (g *Grammar) Match(text string) bool {
	m := &Matcher{a: newAutomaton(g)}
	m.cur = state{set: m.a.initial()}
	s, err := m.advance(m.cur, text)
	return err == nil && s.need == 0 && m.a.sets[s.set].canEnd
}
