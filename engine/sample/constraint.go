package sample

import "fmt"

// Constraint restricts which tokens may come next, as a grammar does
// (package grammar's Matcher is one). It holds the state of one
// generation.
type Constraint interface {
	// Mask sets the logits of the tokens that may not come next to −Inf.
	// It fails when no token may come next.
	Mask(logits []float32) error
	// Accept advances past the token drawn.
	Accept(id int32) error
}

// Preparer is a Constraint that can compute its next mask in the
// background: the engine calls Prepare after a token is accepted and
// before the forward pass whose logits the mask applies to, so that the
// mask costs no time when the pass takes longer.
type Preparer interface {
	Prepare()
}

// SampleConstrained is Sample over the tokens c allows: it masks a copy
// of logits (the caller's stay the raw model's, for logprobs), draws or,
// when greedy, takes the best allowed token, and advances c past it.
// Greedy decoding under a constraint cannot use the device's argmax of
// the raw logits, which may be a token the constraint forbids.
func (s *Sampler) SampleConstrained(logits []float32, history []int32, c Constraint) (int32, error) {
	if len(logits) == 0 {
		return -1, fmt.Errorf("sample: no logits")
	}
	s.masked = append(s.masked[:0], logits...)
	if err := c.Mask(s.masked); err != nil {
		return -1, err
	}
	id := s.Sample(s.masked, history)
	if err := c.Accept(id); err != nil {
		return -1, err
	}
	return id, nil
}
