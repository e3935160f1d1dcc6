package grammar

// runeRange is an inclusive range of characters.
type runeRange struct{ lo, hi rune }

// class is a set of characters: the union of its ranges, or with neg
// everything else. A literal character is a class of one range, so the
// automaton has one kind of terminal.
type class struct {
	neg    bool
	ranges []runeRange
}

func (c *class) match(r rune) bool {
	for _, x := range c.ranges {
		if r >= x.lo && r <= x.hi {
			return !c.neg
		}
	}
	return c.neg
}

// overlaps reports whether some character of [lo, hi] is in c: whether a
// character of which only the first bytes are known may still match.
func (c *class) overlaps(lo, hi rune) bool {
	if !c.neg {
		for _, x := range c.ranges {
			if x.lo <= hi && x.hi >= lo {
				return true
			}
		}
		return false
	}
	// Negated: some character of [lo, hi] escapes every range. Walk lo
	// upward past the ranges that cover it.
	for moved := true; moved; {
		moved = false
		for _, x := range c.ranges {
			if lo >= x.lo && lo <= x.hi {
				if x.hi >= hi {
					return false
				}
				lo, moved = x.hi+1, true
			}
		}
	}
	return true
}
