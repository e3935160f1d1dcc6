package grammar

import (
	"strconv"
	"unicode/utf8"
)

// Limits that keep a grammar from a request within bounded memory: a
// repetition {m,n} is written out m + (n−m) times, so its counts and the
// grammar's total size are capped.
const (
	maxRepeat = 10000
	maxItems  = 1 << 20
	maxDepth  = 256 // nested groups
)

// item is one element of an alternative: a reference to a rule, or (ref
// < 0) the character class cls.
type item struct {
	ref int32
	cls int32
}

// ruleDef is a rule as parsed: its alternatives, each a sequence of items.
type ruleDef struct {
	name    string
	alts    [][]item
	defined bool
	at      int // where it is defined, or first referenced while undefined
}

// parser reads GBNF text into rules. Groups and repetitions become rules of
// their own, named after the rule they appear in, so that every item is a
// character class or a reference.
type parser struct {
	src     string
	pos     int
	rules   []*ruleDef
	names   map[string]int32
	classes []class
	items   int
	depth   int
	cur     string // the rule being parsed, for naming generated rules
	anon    int
}

// parse reads src. Every error is a *SyntaxError.
func parse(src string) (*parser, error) {
	p := &parser{src: src, names: map[string]int32{}}
	p.skipSpace(true)
	for p.pos < len(p.src) {
		if err := p.parseRule(); err != nil {
			return nil, err
		}
		p.skipSpace(true)
	}
	for _, r := range p.rules {
		if !r.defined {
			return nil, p.errAt(r.at, "rule %q is used but not defined", r.name)
		}
	}
	if _, ok := p.names["root"]; !ok {
		return nil, p.errAt(0, "the grammar has no root rule")
	}
	return p, nil
}

func (p *parser) errAt(off int, format string, args ...any) error {
	return errorAt(p.src, off, format, args...)
}

// skipSpace skips blanks and comments, and line ends when newlines is set
// (inside groups, and between rules).
func (p *parser) skipSpace(newlines bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '\n' && newlines:
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func (p *parser) parseName() string {
	start := p.pos
	for p.pos < len(p.src) && isWordChar(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

// ruleID returns the id of the rule called name, creating it (undefined)
// when it is first seen.
func (p *parser) ruleID(name string, at int) int32 {
	if id, ok := p.names[name]; ok {
		return id
	}
	id := int32(len(p.rules))
	p.rules = append(p.rules, &ruleDef{name: name, at: at})
	p.names[name] = id
	return id
}

// newRule adds a generated rule with alts.
func (p *parser) newRule(alts [][]item, at int) int32 {
	p.anon++
	name := p.cur + "_" + strconv.Itoa(p.anon)
	id := p.ruleID(name, at)
	r := p.rules[id]
	r.alts, r.defined = alts, true
	return id
}

func (p *parser) parseRule() error {
	at := p.pos
	name := p.parseName()
	if name == "" {
		return p.errAt(p.pos, "expected a rule name, found %s", p.found())
	}
	p.skipSpace(false)
	if !hasPrefixAt(p.src, p.pos, "::=") {
		return p.errAt(p.pos, "expected ::= after rule name %q, found %s", name, p.found())
	}
	p.pos += 3
	p.skipSpace(true)
	id := p.ruleID(name, at)
	r := p.rules[id]
	if r.defined {
		return p.errAt(at, "rule %q is defined twice", name)
	}
	r.defined, r.at = true, at
	p.cur, p.anon = name, 0
	alts, err := p.parseAlternates(false)
	if err != nil {
		return err
	}
	r.alts = alts
	if p.pos < len(p.src) && p.src[p.pos] != '\n' {
		return p.errAt(p.pos, "unexpected %s in rule %q", p.found(), name)
	}
	return nil
}

func hasPrefixAt(s string, i int, prefix string) bool {
	return len(s)-i >= len(prefix) && s[i:i+len(prefix)] == prefix
}

// found describes what is at the current position, for errors.
func (p *parser) found() string {
	if p.pos >= len(p.src) {
		return "the end of the grammar"
	}
	r, _ := utf8.DecodeRuneInString(p.src[p.pos:])
	if r == '\n' {
		return "the end of the line"
	}
	return strconv.QuoteRune(r)
}

// parseAlternates reads sequences separated by |. At the top level a line
// end ends the rule, unless the next line goes on with |.
func (p *parser) parseAlternates(nested bool) ([][]item, error) {
	var alts [][]item
	for {
		seq, err := p.parseSequence(nested)
		if err != nil {
			return nil, err
		}
		alts = append(alts, seq)
		if !nested && p.pos < len(p.src) && p.src[p.pos] == '\n' {
			save := p.pos
			p.skipSpace(true)
			if p.pos >= len(p.src) || p.src[p.pos] != '|' {
				p.pos = save
			}
		}
		if p.pos >= len(p.src) || p.src[p.pos] != '|' {
			return alts, nil
		}
		p.pos++
		p.skipSpace(true)
	}
}

// parseSequence reads atoms, each with its postfix operators, until |, ),
// or (at the top level) the end of the line.
func (p *parser) parseSequence(nested bool) ([]item, error) {
	var seq []item
	for p.pos < len(p.src) {
		start := p.pos
		last := len(seq)
		c := p.src[p.pos]
		switch {
		case c == '"':
			p.pos++
			for {
				if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
					return nil, p.errAt(start, "unterminated string literal")
				}
				if p.src[p.pos] == '"' {
					p.pos++
					break
				}
				r, err := p.parseChar()
				if err != nil {
					return nil, err
				}
				seq = append(seq, p.addClass(class{ranges: []runeRange{{r, r}}}))
			}
		case c == '[':
			cls, err := p.parseClass()
			if err != nil {
				return nil, err
			}
			seq = append(seq, p.addClass(cls))
		case c == '.':
			p.pos++
			seq = append(seq, p.addClass(class{neg: true}))
		case c == '(':
			p.pos++
			if p.depth++; p.depth > maxDepth {
				return nil, p.errAt(start, "groups nested deeper than %d", maxDepth)
			}
			p.skipSpace(true)
			alts, err := p.parseAlternates(true)
			if err != nil {
				return nil, err
			}
			p.depth--
			if p.pos >= len(p.src) || p.src[p.pos] != ')' {
				return nil, p.errAt(p.pos, "expected ) to close the group at %s, found %s", p.posString(start), p.found())
			}
			p.pos++
			seq = append(seq, item{ref: p.newRule(alts, start)})
		case isWordChar(c):
			name := p.parseName()
			seq = append(seq, item{ref: p.ruleID(name, start)})
		case c == '|' || c == ')' || c == '\n':
			return seq, nil
		default:
			return nil, p.errAt(p.pos, "unexpected %s", p.found())
		}
		p.skipSpace(nested)
		// Postfix operators apply to the atom just read.
		for p.pos < len(p.src) {
			min, max := 0, 0
			opAt := p.pos
			switch p.src[p.pos] {
			case '*':
				min, max = 0, -1
				p.pos++
			case '+':
				min, max = 1, -1
				p.pos++
			case '?':
				min, max = 0, 1
				p.pos++
			case '{':
				var err error
				if min, max, err = p.parseBraces(); err != nil {
					return nil, err
				}
			default:
				min = -2
			}
			if min == -2 {
				break
			}
			if last == len(seq) {
				return nil, p.errAt(opAt, "repetition with nothing to repeat")
			}
			rep, err := p.repeat(seq[last:], min, max, opAt)
			if err != nil {
				return nil, err
			}
			seq = append(seq[:last], rep...)
			p.skipSpace(nested)
		}
		if p.items += len(seq) - last; p.items > maxItems {
			return nil, p.errAt(start, "the grammar is too large (over %d elements once repetitions are written out)", maxItems)
		}
	}
	return seq, nil
}

func (p *parser) posString(off int) string {
	e := errorAt(p.src, off, "")
	return strconv.Itoa(e.Line) + ":" + strconv.Itoa(e.Col)
}

func (p *parser) addClass(c class) item {
	p.classes = append(p.classes, c)
	return item{ref: -1, cls: int32(len(p.classes) - 1)}
}

// parseBraces reads {m}, {m,}, {,n} or {m,n}; max −1 is unbounded.
func (p *parser) parseBraces() (int, int, error) {
	start := p.pos
	p.pos++
	num := func() (int, bool) {
		p.skipSpace(false)
		s := p.pos
		for p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.pos++
		}
		if s == p.pos {
			return 0, false
		}
		n, err := strconv.Atoi(p.src[s:p.pos])
		if err != nil || n > maxRepeat {
			return maxRepeat + 1, true
		}
		return n, true
	}
	lo, hasLo := num()
	hi := lo
	p.skipSpace(false)
	if p.pos < len(p.src) && p.src[p.pos] == ',' {
		p.pos++
		var hasHi bool
		if hi, hasHi = num(); !hasHi {
			hi = -1
		}
		if !hasLo && !hasHi {
			return 0, 0, p.errAt(start, "repetition {,} needs a minimum or a maximum")
		}
	} else if !hasLo {
		return 0, 0, p.errAt(p.pos, "expected a number in the repetition, found %s", p.found())
	}
	p.skipSpace(false)
	if p.pos >= len(p.src) || p.src[p.pos] != '}' {
		return 0, 0, p.errAt(p.pos, "expected } to close the repetition, found %s", p.found())
	}
	p.pos++
	switch {
	case lo > maxRepeat || hi > maxRepeat:
		return 0, 0, p.errAt(start, "repetition counts above %d are not supported", maxRepeat)
	case hi >= 0 && hi < lo:
		return 0, 0, p.errAt(start, "repetition {%d,%d}: the maximum is below the minimum", lo, hi)
	}
	return lo, hi, nil
}

// repeat writes x{min,max} out: x min times, then x* as a right-recursive
// rule, or max−min nested optional rules (x (x (x)?)?)?, so that the
// automaton needs no counters.
func (p *parser) repeat(x []item, min, max, at int) ([]item, error) {
	unit := x[0]
	if len(x) != 1 {
		unit = item{ref: p.newRule([][]item{append([]item(nil), x...)}, at)}
	}
	if p.items += min + max; p.items > maxItems {
		return nil, p.errAt(at, "the grammar is too large (over %d elements once repetitions are written out)", maxItems)
	}
	out := make([]item, 0, min+1)
	for range min {
		out = append(out, unit)
	}
	switch {
	case max < 0:
		id := p.newRule(nil, at)
		p.rules[id].alts = [][]item{{unit, {ref: id}}, {}}
		out = append(out, item{ref: id})
	case max > min:
		var prev int32 = -1
		for range max - min {
			alt := []item{unit}
			if prev >= 0 {
				alt = append(alt, item{ref: prev})
			}
			prev = p.newRule([][]item{alt, {}}, at)
		}
		out = append(out, item{ref: prev})
	}
	return out, nil
}

// parseClass reads [...] or [^...].
func (p *parser) parseClass() (class, error) {
	start := p.pos
	p.pos++
	var c class
	if p.pos < len(p.src) && p.src[p.pos] == '^' {
		c.neg = true
		p.pos++
	}
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return c, p.errAt(start, "unterminated character class")
		}
		if p.src[p.pos] == ']' {
			p.pos++
			return c, nil
		}
		lo, err := p.parseChar()
		if err != nil {
			return c, err
		}
		hi := lo
		if hasPrefixAt(p.src, p.pos, "-") && p.pos+1 < len(p.src) && p.src[p.pos+1] != ']' {
			dash := p.pos
			p.pos++
			if hi, err = p.parseChar(); err != nil {
				return c, err
			}
			if hi < lo {
				return c, p.errAt(dash, "character range %q-%q is reversed", lo, hi)
			}
		}
		c.ranges = append(c.ranges, runeRange{lo, hi})
	}
}

// parseChar reads one character of a literal or class, with its escape.
func (p *parser) parseChar() (rune, error) {
	start := p.pos
	if p.src[p.pos] != '\\' {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		if r == utf8.RuneError && n == 1 {
			return 0, p.errAt(p.pos, "invalid UTF-8 in the grammar")
		}
		p.pos += n
		return r, nil
	}
	p.pos++
	if p.pos >= len(p.src) {
		return 0, p.errAt(start, "unfinished escape")
	}
	e := p.src[p.pos]
	p.pos++
	hex := 0
	switch e {
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case '\\', '"', '[', ']', '-', '^', '/', '\'', '.':
		return rune(e), nil
	case 'x':
		hex = 2
	case 'u':
		hex = 4
	case 'U':
		hex = 8
	default:
		return 0, p.errAt(start, "unknown escape \\%c", e)
	}
	if len(p.src)-p.pos < hex {
		return 0, p.errAt(start, "escape \\%c needs %d hexadecimal digits", e, hex)
	}
	v, err := strconv.ParseUint(p.src[p.pos:p.pos+hex], 16, 32)
	if err != nil {
		return 0, p.errAt(start, "escape \\%c needs %d hexadecimal digits", e, hex)
	}
	p.pos += hex
	if v > utf8.MaxRune {
		return 0, p.errAt(start, "escape \\%c%s is beyond Unicode", e, p.src[p.pos-hex:p.pos])
	}
	return rune(v), nil
}
