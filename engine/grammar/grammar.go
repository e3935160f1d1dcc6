package grammar

// Element kinds of the flattened grammar.
const (
	elemEnd   = iota // ends an alternative
	elemRef          // arg: a rule
	elemClass        // arg: a character class
)

type elem struct {
	kind uint8
	arg  int32
}

// Grammar is a compiled grammar. It is immutable and safe for concurrent
// use; each generation follows it with its own Matcher.
type Grammar struct {
	elems   []elem    // every rule's alternatives, each ended by elemEnd
	alts    [][]int32 // by rule: where each alternative starts in elems
	classes []class
	root    int32
}

// Parse compiles GBNF text. A malformed grammar is a *SyntaxError with the
// line and column of the problem.
func Parse(src string) (*Grammar, error) {
	p, err := parse(src)
	if err != nil {
		return nil, err
	}
	if err := p.checkLeftRecursion(); err != nil {
		return nil, err
	}
	g := &Grammar{classes: p.classes, root: p.names["root"], alts: make([][]int32, len(p.rules))}
	for id, r := range p.rules {
		for _, alt := range r.alts {
			g.alts[id] = append(g.alts[id], int32(len(g.elems)))
			for _, it := range alt {
				if it.ref >= 0 {
					g.elems = append(g.elems, elem{elemRef, it.ref})
				} else {
					g.elems = append(g.elems, elem{elemClass, it.cls})
				}
			}
			g.elems = append(g.elems, elem{kind: elemEnd})
		}
	}
	return g, nil
}

// checkLeftRecursion refuses a rule that can reach itself without
// consuming a character: expanding it would never end.
func (p *parser) checkLeftRecursion() error {
	n := len(p.rules)
	nullable := make([]bool, n)
	for changed := true; changed; {
		changed = false
		for id, r := range p.rules {
			if nullable[id] {
				continue
			}
			for _, alt := range r.alts {
				all := true
				for _, it := range alt {
					if it.ref < 0 || !nullable[it.ref] {
						all = false
						break
					}
				}
				if all {
					nullable[id], changed = true, true
					break
				}
			}
		}
	}
	// first[id]: the rules id may expand to before any character.
	first := make([][]int32, n)
	for id, r := range p.rules {
		for _, alt := range r.alts {
			for _, it := range alt {
				if it.ref < 0 {
					break
				}
				first[id] = append(first[id], it.ref)
				if !nullable[it.ref] {
					break
				}
			}
		}
	}
	const (
		unseen = iota
		active
		done
	)
	state := make([]uint8, n)
	var visit func(id int32) int32
	visit = func(id int32) int32 {
		state[id] = active
		for _, next := range first[id] {
			switch state[next] {
			case active:
				return next
			case unseen:
				if bad := visit(next); bad >= 0 {
					return bad
				}
			}
		}
		state[id] = done
		return -1
	}
	for id := range p.rules {
		if state[id] == unseen {
			if bad := visit(int32(id)); bad >= 0 {
				r := p.rules[bad]
				return p.errAt(r.at, "rule %q is left-recursive: it can reach itself before matching a character", r.name)
			}
		}
	}
	return nil
}
