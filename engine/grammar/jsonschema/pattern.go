package jsonschema

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// pattern writes the inside of a JSON string whose decoded text matches
// the regular expression re (see the package comment for the subset).
// Without ^ or $ the match may sit anywhere in the string.
func (c *converter) pattern(re string) (string, error) {
	p := &regexParser{src: re, c: c}
	anchoredStart := strings.HasPrefix(re, "^")
	if anchoredStart {
		p.pos = 1
	}
	body, err := p.alternation(0)
	if err != nil {
		return "", err
	}
	anchoredEnd := false
	if p.pos < len(p.src) && p.src[p.pos] == '$' {
		anchoredEnd = true
		p.pos++
	}
	if p.pos < len(p.src) {
		return "", p.errorf("unexpected %q", p.src[p.pos:p.pos+1])
	}
	any := c.prim("pchar") + "*"
	if !anchoredStart {
		body = any + " " + body
	}
	if !anchoredEnd {
		body += " " + any
	}
	return body, nil
}

type regexParser struct {
	src   string
	pos   int
	c     *converter
	depth int
}

func (p *regexParser) errorf(format string, args ...any) error {
	return fmt.Errorf("pattern %q at offset %d: %s", p.src, p.pos, fmt.Sprintf(format, args...))
}

func (p *regexParser) alternation(depth int) (string, error) {
	if depth > 64 {
		return "", p.errorf("groups nested too deep")
	}
	var alts []string
	for {
		seq, err := p.sequence(depth)
		if err != nil {
			return "", err
		}
		alts = append(alts, seq)
		if p.pos >= len(p.src) || p.src[p.pos] != '|' {
			break
		}
		p.pos++
	}
	return alt(alts), nil
}

// atEnd reports whether a $ here ends the pattern (the only place an
// anchor is supported).
func (p *regexParser) atEnd() bool {
	return p.src[p.pos] == '$' && p.pos == len(p.src)-1
}

func (p *regexParser) sequence(depth int) (string, error) {
	var parts []string
	for p.pos < len(p.src) {
		ch := p.src[p.pos]
		if ch == '|' || ch == ')' || p.atEnd() {
			break
		}
		atom, err := p.atom(depth)
		if err != nil {
			return "", err
		}
		atom, err = p.quantifier(atom)
		if err != nil {
			return "", err
		}
		parts = append(parts, atom)
	}
	if len(parts) == 0 {
		return `""`, nil
	}
	return strings.Join(parts, " "), nil
}

func (p *regexParser) atom(depth int) (string, error) {
	switch ch := p.src[p.pos]; ch {
	case '(':
		p.pos++
		if strings.HasPrefix(p.src[p.pos:], "?:") {
			p.pos += 2
		} else if strings.HasPrefix(p.src[p.pos:], "?") {
			return "", p.errorf("group (%s…) is not supported (lookaround, named groups, flags)", p.src[p.pos-1:min(p.pos+2, len(p.src))])
		}
		inner, err := p.alternation(depth + 1)
		if err != nil {
			return "", err
		}
		if p.pos >= len(p.src) || p.src[p.pos] != ')' {
			return "", p.errorf("missing )")
		}
		p.pos++
		return "( " + inner + " )", nil
	case '[':
		return p.class()
	case '.':
		p.pos++
		return p.c.prim("pchar"), nil
	case '^', '$':
		return "", p.errorf("anchor %c is supported only at the start (^) or the end ($) of the pattern", ch)
	case '*', '+', '?', '{':
		if ch != '{' || p.braces() != nil {
			return "", p.errorf("quantifier %c with nothing to repeat", ch)
		}
	case '\\':
		set, r, err := p.escape(false)
		if err != nil {
			return "", err
		}
		if set != nil {
			return set.gbnf(p.c), nil
		}
		return charLit(r), nil
	}
	r, n := utf8.DecodeRuneInString(p.src[p.pos:])
	p.pos += n
	return charLit(r), nil
}

// braces reads {m}, {m,} or {m,n} at the current position without moving,
// returning nil when it is not a quantifier.
func (p *regexParser) braces() []int {
	end := strings.IndexByte(p.src[p.pos:], '}')
	if end < 0 {
		return nil
	}
	inner := p.src[p.pos+1 : p.pos+end]
	lo, hi, comma := strings.Cut(inner, ",")
	m, err := strconv.Atoi(lo)
	if err != nil || m < 0 {
		return nil
	}
	n := m
	if comma {
		if hi == "" {
			n = -1
		} else if n, err = strconv.Atoi(hi); err != nil || n < m {
			return nil
		}
	}
	return []int{m, n, end + 1}
}

func (p *regexParser) quantifier(atom string) (string, error) {
	if p.pos >= len(p.src) {
		return atom, nil
	}
	var out string
	switch p.src[p.pos] {
	case '*':
		out = atom + "*"
		p.pos++
	case '+':
		out = atom + "+"
		p.pos++
	case '?':
		out = atom + "?"
		p.pos++
	case '{':
		b := p.braces()
		if b == nil {
			return atom, nil // a literal {, as in most regex dialects
		}
		if b[0] > maxCount || b[1] > maxCount {
			return "", p.errorf("repetition count above %d", maxCount)
		}
		p.pos += b[2]
		out = "( " + atom + " )" + strings.TrimPrefix(repeat("x", b[0], b[1]), "x")
		if b[0] == 0 && b[1] == 0 {
			out = `""`
		}
	default:
		return atom, nil
	}
	if p.pos < len(p.src) && p.src[p.pos] == '?' {
		p.pos++ // lazy: the same language
	}
	if p.pos < len(p.src) && strings.ContainsRune("*+?", rune(p.src[p.pos])) {
		return "", p.errorf("quantifier after a quantifier")
	}
	return out, nil
}

// charSet is a set of characters: ranges, or everything but them.
type charSet struct {
	neg    bool
	ranges [][2]rune
}

// gbnf writes the set as JSON string content: a negated set never
// produces ", \ or control characters; a positive one produces " and \
// escaped, and tab, newline and carriage return as their escapes.
func (s *charSet) gbnf(c *converter) string {
	var b strings.Builder
	if s.neg {
		b.WriteString(`[^"\\\x7F\x00-\x1F`)
		for _, r := range s.ranges {
			b.WriteString(classRange(r))
		}
		b.WriteString("]")
		return b.String()
	}
	var alts []string
	var plain []string
	for _, r := range s.ranges {
		// Split around the characters that JSON escapes.
		lo, hi := r[0], r[1]
		for _, sp := range []rune{'\t', '\n', '\r', '"', '\\'} {
			if sp >= lo && sp <= hi {
				alts = append(alts, charLit(sp))
			}
		}
		for _, seg := range cutOut(lo, hi, [][2]rune{{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0x7F, 0x7F}}) {
			plain = append(plain, classRange(seg))
		}
	}
	if len(plain) > 0 {
		alts = append([]string{"[" + strings.Join(plain, "") + "]"}, alts...)
	}
	if len(alts) == 0 {
		return `[^\x00-\U0010FFFF]` // matches nothing
	}
	return alt(alts)
}

// cutOut returns [lo, hi] less the holes.
func cutOut(lo, hi rune, holes [][2]rune) [][2]rune {
	segs := [][2]rune{{lo, hi}}
	for _, h := range holes {
		var next [][2]rune
		for _, s := range segs {
			if h[1] < s[0] || h[0] > s[1] {
				next = append(next, s)
				continue
			}
			if s[0] < h[0] {
				next = append(next, [2]rune{s[0], h[0] - 1})
			}
			if s[1] > h[1] {
				next = append(next, [2]rune{h[1] + 1, s[1]})
			}
		}
		segs = next
	}
	return segs
}

func classRange(r [2]rune) string {
	if r[0] == r[1] {
		return classChar(r[0])
	}
	return classChar(r[0]) + "-" + classChar(r[1])
}

// charLit writes one character of the decoded string as its JSON form.
func charLit(r rune) string {
	switch r {
	case '"':
		return lit(`\"`)
	case '\\':
		return lit(`\\`)
	case '\n':
		return lit(`\n`)
	case '\t':
		return lit(`\t`)
	case '\r':
		return lit(`\r`)
	}
	if r < 0x20 || r == 0x7F {
		return lit(fmt.Sprintf(`\u%04x`, r))
	}
	return lit(string(r))
}

var (
	digitSet = [][2]rune{{'0', '9'}}
	wordSet  = [][2]rune{{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}
	spaceSet = [][2]rune{{'\t', '\n'}, {'\r', '\r'}, {' ', ' '}}
)

// escape reads a backslash escape: a class (\d, \w, \s and their
// negations) as set, or a character as r.
func (p *regexParser) escape(inClass bool) (set *charSet, r rune, err error) {
	p.pos++
	if p.pos >= len(p.src) {
		return nil, 0, p.errorf("pattern ends with \\")
	}
	e, n := utf8.DecodeRuneInString(p.src[p.pos:])
	p.pos += n
	switch e {
	case 'd':
		return &charSet{ranges: digitSet}, 0, nil
	case 'D':
		return &charSet{neg: true, ranges: digitSet}, 0, nil
	case 'w':
		return &charSet{ranges: wordSet}, 0, nil
	case 'W':
		return &charSet{neg: true, ranges: wordSet}, 0, nil
	case 's':
		return &charSet{ranges: spaceSet}, 0, nil
	case 'S':
		return &charSet{neg: true, ranges: spaceSet}, 0, nil
	case 'n':
		return nil, '\n', nil
	case 't':
		return nil, '\t', nil
	case 'r':
		return nil, '\r', nil
	case 'u':
		if len(p.src)-p.pos < 4 {
			return nil, 0, p.errorf("\\u needs 4 hexadecimal digits")
		}
		v, err := strconv.ParseUint(p.src[p.pos:p.pos+4], 16, 32)
		if err != nil {
			return nil, 0, p.errorf("\\u needs 4 hexadecimal digits")
		}
		p.pos += 4
		return nil, rune(v), nil
	}
	if e < 0x80 && (e >= 'a' && e <= 'z' || e >= 'A' && e <= 'Z' || e >= '0' && e <= '9') {
		return nil, 0, p.errorf("escape \\%c is not supported", e)
	}
	return nil, e, nil
}

// class reads [...] or [^...].
func (p *regexParser) class() (string, error) {
	p.pos++
	s := &charSet{}
	if p.pos < len(p.src) && p.src[p.pos] == '^' {
		s.neg = true
		p.pos++
	}
	first := true
	for {
		if p.pos >= len(p.src) {
			return "", p.errorf("missing ]")
		}
		if p.src[p.pos] == ']' && !first {
			p.pos++
			break
		}
		first = false
		var lo rune
		if p.src[p.pos] == '\\' {
			set, r, err := p.escape(true)
			if err != nil {
				return "", err
			}
			if set != nil {
				if set.neg {
					return "", p.errorf("negated escapes (\\D, \\W, \\S) inside a class are not supported")
				}
				s.ranges = append(s.ranges, set.ranges...)
				continue
			}
			lo = r
		} else {
			r, n := utf8.DecodeRuneInString(p.src[p.pos:])
			p.pos += n
			lo = r
		}
		hi := lo
		if p.pos+1 < len(p.src) && p.src[p.pos] == '-' && p.src[p.pos+1] != ']' {
			p.pos++
			if p.src[p.pos] == '\\' {
				set, r, err := p.escape(true)
				if err != nil {
					return "", err
				}
				if set != nil {
					return "", p.errorf("a class escape cannot end a range")
				}
				hi = r
			} else {
				r, n := utf8.DecodeRuneInString(p.src[p.pos:])
				p.pos += n
				hi = r
			}
			if hi < lo {
				return "", p.errorf("range %q-%q is reversed", lo, hi)
			}
		}
		s.ranges = append(s.ranges, [2]rune{lo, hi})
	}
	return s.gbnf(p.c), nil
}
