package grammar

import (
	"encoding/binary"
	"errors"
	"slices"
	"unicode/utf8"
)

// A stack is interned as a chain of nodes: its top position and the id of
// the stack below. Node 0 is the empty stack, which means the root rule is
// matched. Sharing the tails keeps a push O(1), and interning makes equal
// stacks equal ids, so that equal states are found by a map look-up.
type stackNode struct {
	pos    int32 // in Grammar.elems: an element that is not elemEnd
	parent int32
}

// A stack set is one state of the automaton. Its transitions are filled in
// as characters are tried; an entry is the next set's id, deadSet when no
// stack takes the character, or unknownSet before it is computed.
type stackSet struct {
	stacks []int32 // node ids, sorted
	canEnd bool    // holds the empty stack
	ascii  [128]int32
	other  map[rune]int32
	// loops holds the ASCII bytes that lead from the set back to itself
	// (inside a JSON string: all but '"', '\\' and controls), once
	// loopsKnown.
	loops      [2]uint64
	loopsKnown bool
	// loopsWide: every character beyond ASCII leads back to the set too.
	loopsWide bool
}

const (
	unknownSet int32 = -1
	deadSet    int32 = 0 // the empty set: nothing can follow
)

// Budget of interned states before a Matcher starts over with fresh
// tables (from its current state), so that a long generation does not
// grow them without bound.
const (
	maxNodes = 1 << 20
	maxSets  = 1 << 14
)

// automaton holds the interned stacks and sets of one Matcher.
type automaton struct {
	g       *Grammar
	nodes   []stackNode
	nodeIdx map[stackNode]int32
	sets    []*stackSet
	setIdx  map[string]int32
	key     []byte
	scratch []int32
	// seen[node] == stamp: node already expanded in this step; duplicate
	// paths through nullable rules could otherwise repeat work
	// exponentially.
	seen  []uint32
	stamp uint32
	// work counts the expansions of this step; past maxWork the grammar
	// is too ambiguous to follow in bounded time and err is set.
	work int
	err  error
}

// maxWork bounds the stacks one character may expand to: a grammar from a
// request such as ("a"?){5000} would otherwise cost millions of stack
// operations for each character, on the goroutine that runs every
// sequence's steps.
const maxWork = 1 << 16

// ErrTooAmbiguous is a grammar that can match a text in so many ways at
// once that following them all would stall generation.
var ErrTooAmbiguous = errors.New("grammar: too ambiguous: more than 65536 ways to continue at one character; rewrite the rules so that fewer alternatives match the same text")

func newAutomaton(g *Grammar) *automaton {
	a := &automaton{g: g, nodes: []stackNode{{pos: -1, parent: -1}}, nodeIdx: map[stackNode]int32{}, setIdx: map[string]int32{}}
	a.internSet(nil) // deadSet
	return a
}

func (a *automaton) push(pos, parent int32) int32 {
	n := stackNode{pos, parent}
	if id, ok := a.nodeIdx[n]; ok {
		return id
	}
	id := int32(len(a.nodes))
	a.nodes = append(a.nodes, n)
	a.nodeIdx[n] = id
	return id
}

// rest is the stack left when the element at the top of stack id is
// matched: the next element of its alternative on the stack below, or
// the stack below alone when the alternative ends.
func (a *automaton) rest(pos, parent int32) int32 {
	if a.g.elems[pos+1].kind == elemEnd {
		return parent
	}
	return a.push(pos+1, parent)
}

// expand appends to out the stacks that stack id stands for with a
// character class (or nothing: the empty stack) on top, replacing each
// rule reference on top by the rule's alternatives.
func (a *automaton) expand(id int32, out []int32) []int32 {
	if id == 0 {
		return append(out, 0)
	}
	for int(id) >= len(a.seen) {
		a.seen = append(a.seen, 0)
	}
	if a.seen[id] == a.stamp {
		return out
	}
	a.seen[id] = a.stamp
	if a.work++; a.work > maxWork {
		a.err = ErrTooAmbiguous
		return out
	}
	n := a.nodes[id]
	e := a.g.elems[n.pos]
	if e.kind == elemClass {
		return append(out, id)
	}
	below := a.rest(n.pos, n.parent)
	for _, start := range a.g.alts[e.arg] {
		if a.g.elems[start].kind == elemEnd {
			out = a.expand(below, out)
		} else {
			out = a.expand(a.push(start, below), out)
		}
	}
	return out
}

// newStep starts a fresh round of expansions.
func (a *automaton) newStep() {
	a.work = 0
	if a.stamp++; a.stamp == 0 {
		clear(a.seen)
		a.stamp = 1
	}
}

// initial returns the set that matches the root rule from its start.
func (a *automaton) initial() int32 {
	a.newStep()
	out := a.scratch[:0]
	for _, start := range a.g.alts[a.g.root] {
		if a.g.elems[start].kind == elemEnd {
			out = append(out, 0)
		} else {
			out = a.expand(a.push(start, 0), out)
		}
	}
	a.scratch = out[:0]
	return a.internSet(out)
}

// internSet returns the id of the set of the stacks in out (which it
// sorts), adding it when new.
func (a *automaton) internSet(out []int32) int32 {
	slices.Sort(out)
	out = slices.Compact(out)
	a.key = a.key[:0]
	for _, id := range out {
		a.key = binary.LittleEndian.AppendUint32(a.key, uint32(id))
	}
	if id, ok := a.setIdx[string(a.key)]; ok {
		return id
	}
	s := &stackSet{stacks: slices.Clone(out), canEnd: len(out) > 0 && out[0] == 0}
	for i := range s.ascii {
		s.ascii[i] = unknownSet
	}
	id := int32(len(a.sets))
	a.sets = append(a.sets, s)
	a.setIdx[string(a.key)] = id
	return id
}

// next returns the set after character r from set id.
// loopsOver says whether every ASCII byte in below, and with wide every
// character beyond ASCII, leads from set id back to it.
func (a *automaton) loopsOver(id int32, below [2]uint64, wide bool) bool {
	s := a.sets[id]
	if !s.loopsKnown {
		for b := range rune(128) {
			if a.next(id, b) == id {
				s.loops[b>>6] |= 1 << (b & 63)
			}
		}
		s.loopsWide = a.loopsBeyondASCII(id)
		s.loopsKnown = true
	}
	return below[0]&^s.loops[0] == 0 && below[1]&^s.loops[1] == 0 && (!wide || s.loopsWide)
}

// loopsBeyondASCII says whether every character from U+0080 on leads
// from set id back to it. Where the set goes after a character depends
// only on which of its stacks' top classes hold the character, so one
// character of each stretch between the classes' range ends stands for
// the stretch.
func (a *automaton) loopsBeyondASCII(id int32) bool {
	cuts := []rune{0x80, 0xD800, 0xE000, utf8.MaxRune + 1} // surrogates are not characters
	for _, st := range a.sets[id].stacks {
		if st == 0 {
			continue
		}
		for _, x := range a.g.classes[a.g.elems[a.nodes[st].pos].arg].ranges {
			cuts = append(cuts, x.lo, x.hi+1)
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	for i, lo := range cuts[:len(cuts)-1] {
		if lo < 0x80 || lo > utf8.MaxRune || lo >= 0xD800 && lo < 0xE000 || cuts[i+1] <= lo {
			continue
		}
		if a.next(id, lo) != id {
			return false
		}
	}
	return true
}

func (a *automaton) next(id int32, r rune) int32 {
	s := a.sets[id]
	if r >= 0 && r < 128 {
		if n := s.ascii[r]; n != unknownSet {
			return n
		}
	} else if n, ok := s.other[r]; ok {
		return n
	}
	n := a.step(s, r)
	if r >= 0 && r < 128 {
		s.ascii[r] = n
	} else {
		if s.other == nil {
			s.other = map[rune]int32{}
		}
		s.other[r] = n
	}
	return n
}

// step computes the set after r: every stack whose top class takes r,
// popped and expanded again.
func (a *automaton) step(s *stackSet, r rune) int32 {
	a.newStep()
	out := a.scratch[:0]
	for _, id := range s.stacks {
		if id == 0 {
			continue
		}
		n := a.nodes[id]
		if !a.g.classes[a.g.elems[n.pos].arg].match(r) {
			continue
		}
		out = a.expand(a.rest(n.pos, n.parent), out)
	}
	if a.err != nil {
		a.scratch = out[:0]
		return deadSet
	}
	id := a.internSet(out)
	a.scratch = out[:0]
	return id
}

// mayTake reports whether some stack of set id may take a character in
// [lo, hi]: whether a character known by its first bytes can still match.
func (a *automaton) mayTake(id int32, lo, hi rune) bool {
	for _, st := range a.sets[id].stacks {
		if st != 0 && a.g.classes[a.g.elems[a.nodes[st].pos].arg].overlaps(lo, hi) {
			return true
		}
	}
	return false
}

// full reports whether the tables have outgrown their budget.
func (a *automaton) full() bool { return len(a.nodes) > maxNodes || len(a.sets) > maxSets }

// rebase returns a fresh automaton holding set id of a, and id's number
// there.
func (a *automaton) rebase(id int32) (*automaton, int32) {
	b := newAutomaton(a.g)
	var out []int32
	for _, st := range a.sets[id].stacks {
		var chain []int32
		for n := st; n != 0; n = a.nodes[n].parent {
			chain = append(chain, a.nodes[n].pos)
		}
		var nb int32
		for i := len(chain) - 1; i >= 0; i-- {
			nb = b.push(chain[i], nb)
		}
		out = append(out, nb)
	}
	return b, b.internSet(out)
}
