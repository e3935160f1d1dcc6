package server

import "strings"

// stopper cuts generated text before the first stop string. Text that
// could be the start of a stop string is held back until the next piece
// shows whether it is, so that a stop string split across tokens never
// reaches a stream.
type stopper struct {
	stops []string
	held  string
	hit   string // the stop string found, once found
}

// add takes the next piece of text and returns what can be sent now. When
// a stop string is complete it returns the text before it and true; add
// must not be called again.
func (s *stopper) add(text string) (out string, stopped bool) {
	if len(s.stops) == 0 {
		return text, false
	}
	buf := s.held + text
	cut := -1
	for _, st := range s.stops {
		if i := strings.Index(buf, st); i >= 0 && (cut < 0 || i < cut) {
			cut, s.hit = i, st
		}
	}
	if cut >= 0 {
		s.held = ""
		return buf[:cut], true
	}
	// Hold back the longest end of buf that begins a stop string.
	keep := 0
	for _, st := range s.stops {
		for k := min(len(st)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, st[:k]) {
				keep = k
				break
			}
		}
	}
	s.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the held-back text at the end of generation.
func (s *stopper) flush() string {
	h := s.held
	s.held = ""
	return h
}
