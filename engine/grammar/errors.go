package grammar

import "fmt"

// SyntaxError is a malformed grammar, with where the problem is so that
// the author can find it.
type SyntaxError struct {
	Line, Col int // 1-based; Col counts characters
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("grammar: %d:%d: %s", e.Line, e.Col, e.Msg)
}

// errorAt makes a SyntaxError for byte offset off of src.
func errorAt(src string, off int, format string, args ...any) *SyntaxError {
	off = min(max(off, 0), len(src))
	line, col := 1, 1
	for _, r := range src[:off] {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &SyntaxError{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}
