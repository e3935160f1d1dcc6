package tokenizer

import (
	"unicode/utf8"
)

// Decoder turns a stream of ids into text as they arrive. A character that
// byte tokens spell over several ids is held back until it is complete, so
// every string returned is valid UTF-8 (bytes that can never form a
// character come out as U+FFFD).
//
// When the stream starts with BOS, the space that encoding put before the
// first word is dropped, as when a prompt is echoed; a stream that starts
// mid-text (a continuation) keeps its leading space, which is real.
type Decoder struct {
	t        Tokenizer
	inner    *tokenizer // this package's tokenizer, nil for others
	pending  []byte     // bytes of an unfinished character
	started  bool       // some text has arrived since the start or Flush
	afterBOS bool       // the stream began with BOS
	out      []byte
}

// NewDecoder returns a Decoder for ids of t. For a Tokenizer not made by New
// it decodes each id alone with t.Decode.
func NewDecoder(t Tokenizer) *Decoder {
	d := &Decoder{t: t}
	d.inner, _ = t.(*tokenizer)
	return d
}

// Add takes the next id and returns the text that is now complete, possibly "".
func (d *Decoder) Add(id int32) string {
	if bos := d.t.BOS(); bos >= 0 && id == bos {
		if !d.started {
			d.afterBOS = true
		}
		return ""
	}
	var p string
	if d.inner != nil {
		p = d.inner.piece(id)
	} else {
		p = d.t.Decode([]int32{id})
	}
	if p == "" {
		return ""
	}
	if !d.started {
		d.started = true
		if d.afterBOS && d.inner != nil && d.inner.stripsLeadingSpace() && p[0] == ' ' {
			p = p[1:]
		}
	}
	d.pending = append(d.pending, p...)
	return d.drain(false)
}

// Flush returns what is held back, an unfinished character as U+FFFD, and
// starts a new stream.
func (d *Decoder) Flush() string {
	s := d.drain(true)
	d.started, d.afterBOS = false, false
	return s
}

// drain returns the complete characters of pending and keeps the rest; with
// final it keeps nothing.
func (d *Decoder) drain(final bool) string {
	d.out = d.out[:0]
	p := d.pending
	for len(p) > 0 {
		if !final && !utf8.FullRune(p) {
			break
		}
		r, n := utf8.DecodeRune(p)
		if r == utf8.RuneError && n == 1 {
			d.out = utf8.AppendRune(d.out, utf8.RuneError)
		} else {
			d.out = append(d.out, p[:n]...)
		}
		p = p[n:]
	}
	d.pending = append(d.pending[:0], p...)
	return string(d.out)
}
