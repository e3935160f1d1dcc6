package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Quoting is how text from a request passes through a chat template
// without becoming control tokens. The template is rendered on the real
// text, so that its own logic (content.strip(), role tests, "if content")
// sees what it expects; only the characters that could start or complete a
// guarded token (see special.go) are replaced, each by
//
//	U+FDD0, the hex digits of its UTF-8 bytes, U+FDD1
//
// Those are Unicode noncharacters, reserved for such internal use, and no
// token's text contains them. EncodeQuoted then reads control tokens in the
// template's own text and turns each quoted character back into its bytes,
// encoded as plain text together with the text around it, so a request's
// text gets exactly the ids Encode would give it.
//
// Quoted: every character where a guarded token is written in full; at the
// ends of the text (before and after trimming spaces, as templates trim)
// every character that begins a guarded token that the text leaves
// unfinished, or that continues one the template's text might have begun;
// and the markers themselves. A template that rewrites content beyond
// trimming (replace, slicing) could split a quoted character, which then
// reads as nothing; it cannot assemble a guarded token out of quoted text.
const (
	quoteOpen  = "\uFDD0"
	quoteClose = "\uFDD1"
)

// guards holds what Quote needs to find beyond the guarded index: the
// proper suffixes of guarded tokens by first byte, longest first.
type guards struct {
	index    specialIndex
	suffixes [256][]string
}

func newGuards(tokens []string, guarded func(id int32) bool) guards {
	g := guards{index: newSpecialIndex(tokens, guarded)}
	seen := map[string]bool{}
	for i, s := range tokens {
		if s == "" || !guarded(int32(i)) {
			continue
		}
		for k := 1; k < len(s); k++ {
			if suf := s[k:]; !seen[suf] {
				seen[suf] = true
				g.suffixes[suf[0]] = append(g.suffixes[suf[0]], suf)
			}
		}
	}
	return g
}

func (t *tokenizer) Quote(s string) string {
	core := strings.TrimLeftFunc(s, unicode.IsSpace)
	coreStart := len(s) - len(core)
	coreEnd := coreStart + len(strings.TrimRightFunc(core, unicode.IsSpace))
	var b []byte // nil until a character needs quoting
	for i := 0; i < len(s); {
		_, n := utf8.DecodeRuneInString(s[i:])
		if t.mustQuote(s, i, coreStart, coreEnd) {
			if b == nil {
				b = append(make([]byte, 0, len(s)+32), s[:i]...)
			}
			b = appendQuoted(b, s[i:i+n])
		} else if b != nil {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	if b == nil {
		return s
	}
	return string(b)
}

// mustQuote reports whether the character at s[i:] must be quoted.
func (t *tokenizer) mustQuote(s string, i, coreStart, coreEnd int) bool {
	if strings.HasPrefix(s[i:], quoteOpen) || strings.HasPrefix(s[i:], quoteClose) {
		return true
	}
	g := &t.guards
	for _, c := range g.index.byFirst[s[i]] {
		if strings.HasPrefix(s[i:], c.text) {
			return true // a guarded token in full
		}
		// Unfinished at an end of the text: the template's next text
		// could finish it.
		for _, end := range [2]int{coreEnd, len(s)} {
			if i < end && end-i < len(c.text) && strings.HasPrefix(c.text, s[i:end]) {
				return true
			}
		}
	}
	if i == 0 || i == coreStart {
		// The end of a guarded token whose start the template's text
		// might have written just before.
		for _, suf := range g.suffixes[s[i]] {
			if strings.HasPrefix(s[i:], suf) {
				return true
			}
		}
	}
	return false
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends the quoted form of the bytes of one character.
func appendQuoted(b []byte, char string) []byte {
	b = append(b, quoteOpen...)
	for i := 0; i < len(char); i++ {
		b = append(b, hexDigits[char[i]>>4], hexDigits[char[i]&15])
	}
	return append(b, quoteClose...)
}

// unquoteAt reads the quoted character that starts at text[i:] (with
// quoteOpen) and returns its bytes and the length of its quoted form. A
// malformed one, as a template that cut or changed it leaves, yields no
// bytes, and only its opening marker is consumed.
func unquoteAt(text string, i int) (char []byte, n int) {
	j := i + len(quoteOpen)
	for k := j; ; k += 2 {
		if strings.HasPrefix(text[k:], quoteClose) {
			if k == j {
				break
			}
			return char, k + len(quoteClose) - i
		}
		if k+2 > len(text) {
			break
		}
		hi, ok1 := hexDigit(text[k])
		lo, ok2 := hexDigit(text[k+1])
		if !ok1 || !ok2 {
			break
		}
		char = append(char, hi<<4|lo)
	}
	return nil, len(quoteOpen)
}

// PlainLen returns the length in bytes of the text that EncodeQuoted reads
// from quoted, a template's output: quoted characters count as the bytes
// they stand for. Like the text's length for Encode, it bounds the number
// of tokens from below (see Tokenizer.MaxTokenBytes).
func PlainLen(quoted string) int {
	n := 0
	for i := 0; i < len(quoted); {
		switch {
		case strings.HasPrefix(quoted[i:], quoteOpen):
			char, k := unquoteAt(quoted, i)
			n += len(char)
			i += k
		case strings.HasPrefix(quoted[i:], quoteClose):
			i += len(quoteClose)
		default:
			n++
			i++
		}
	}
	return n
}

func (t *tokenizer) EncodeQuoted(text string, addSpecial bool) []int32 {
	e := t.newEncoding(len(text), addSpecial)
	var plain []byte // text read as plain since the last control token
	flush := func() {
		if len(plain) > 0 {
			e.text(string(plain), &t.plain)
			plain = plain[:0]
		}
	}
	for i := 0; i < len(text); {
		switch {
		case strings.HasPrefix(text[i:], quoteOpen):
			char, n := unquoteAt(text, i)
			plain = append(plain, char...)
			i += n
		case strings.HasPrefix(text[i:], quoteClose):
			i += len(quoteClose) // stray: what it closed was cut off
		default:
			// Only guarded tokens are read here; user-defined ones are
			// left to the plain text, which reads them as Encode does,
			// so EncodeQuoted(Quote(s)) == Encode(s).
			if id, n := t.guards.index.matchAt(text, i); n > 0 {
				flush()
				e.token(id)
				i += n
				continue
			}
			plain = append(plain, text[i])
			i++
		}
	}
	flush()
	return e.finish()
}

// Unquote turns text with Quote's marked characters back into plain
// text, as EncodeQuoted reads it: for showing a rendered prompt.
func Unquote(text string) string {
	if !strings.Contains(text, quoteOpen) {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		if strings.HasPrefix(text[i:], quoteOpen) {
			char, n := unquoteAt(text, i)
			b.WriteString(string(char))
			i += n
			continue
		}
		b.WriteByte(text[i])
		i++
	}
	return b.String()
}
