package tokenizer

import (
	"math"
	"unicode/utf8"
)

// Both vocabulary kinds encode a word the same way: start from one symbol per
// character, then repeatedly merge the adjacent pair with the best priority
// (leftmost on ties) until no pair may merge. Only how a pair is ranked
// differs, so the loop lives here. A heap keeps it O(n log n), which matters
// for SentencePiece, where a whole paragraph is one "word".
//
// Memory: a long SentencePiece prompt holds one symbol and up to about two
// queued candidates per character at once, so both are kept to 32-bit
// fields (20 and 16 bytes). Texts are bounded well below 2 GiB by the
// server's body limit; Encode splits longer runs (see maxRun).

// symbol is a run of the working string; symbols form a linked list in text
// order.
type symbol struct {
	start, end int32 // byte range; end == -1 once merged into its left neighbour
	prev, next int32 // neighbour indexes, -1 at the ends
	id         int32 // token id of the run, -1 if it is not a token
}

// rankFunc says whether the adjacent symbols l and r (covering s[l.start:r.end])
// may merge, with what priority (lower merges first) and resulting id.
type rankFunc func(l, r *symbol) (prio uint32, id int32, ok bool)

// candidate is a pair queued for merging, checked against the current
// symbols when popped because earlier merges may have consumed either side.
// The right symbol is not stored: while the left one is unchanged its right
// neighbour is the same symbol, and size tells whether that one has grown.
type candidate struct {
	prio uint32
	left int32
	size int32 // bytes covered by the pair when queued
	id   int32
}

// scorePrio turns a SentencePiece score (higher merges first) into a
// priority (lower merges first) that orders as the float does.
func scorePrio(score float32) uint32 {
	if score == 0 {
		score = 0 // -0 ties with 0, as the scores compare
	}
	b := math.Float32bits(score)
	if b&(1<<31) != 0 {
		b = ^b // negative: larger magnitude is smaller
	} else {
		b |= 1 << 31
	}
	return ^b
}

// initSymbols appends one symbol per UTF-8 character of s (one per byte for
// invalid bytes), with ids looked up by lookup.
func initSymbols(syms []symbol, s string, lookup func(string) int32) []symbol {
	syms = syms[:0]
	for i := 0; i < len(s); {
		_, n := utf8.DecodeRuneInString(s[i:])
		k := int32(len(syms))
		syms = append(syms, symbol{start: int32(i), end: int32(i + n), prev: k - 1, next: k + 1, id: lookup(s[i : i+n])})
		i += n
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// mergeSymbols runs the merge loop over syms in place. h is scratch space
// for the queue, returned for reuse.
func mergeSymbols(syms []symbol, h candidateHeap, rank rankFunc) candidateHeap {
	h = h[:0]
	push := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		if prio, id, ok := rank(&syms[l], &syms[r]); ok {
			h.push(candidate{prio: prio, left: l, size: syms[r].end - syms[l].start, id: id})
		}
	}
	for i := int32(0); int(i)+1 < len(syms); i++ {
		push(i, i+1)
	}
	for len(h) > 0 {
		c := h.pop()
		l := &syms[c.left]
		if l.end < 0 || l.next < 0 || syms[l.next].end-l.start != c.size {
			continue // stale: one side has merged since this pair was queued
		}
		r := &syms[l.next]
		l.end = r.end
		l.id = c.id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = c.left
		}
		r.end = -1
		push(l.prev, c.left)
		push(c.left, l.next)
	}
	return h
}

// candidateHeap is a binary min-heap ordered by (prio, left). It is written
// out rather than built on container/heap, whose Push and Pop take the
// element as an interface value and so allocate once per candidate.
type candidateHeap []candidate

func (h candidateHeap) less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio < h[j].prio
	}
	return h[i].left < h[j].left
}

func (h *candidateHeap) push(c candidate) {
	*h = append(*h, c)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *candidateHeap) pop() candidate {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(a) {
			break
		}
		m := l
		if r := l + 1; r < len(a) && a.less(r, l) {
			m = r
		}
		if !a.less(m, i) {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}
