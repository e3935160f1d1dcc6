package grammar

// Prepare starts computing the mask of the current state in the
// background, so that it overlaps with the device's forward pass: the
// engine calls it after a token is accepted and before the step whose
// logits the mask will cover. Every other method waits for it first, so a
// Matcher still needs no locking by its user.
func (m *Matcher) Prepare() {
	m.wait()
	if m.done {
		return
	}
	if _, ok := m.masks[m.cur]; ok {
		return
	}
	ready := make(chan struct{})
	m.pending = ready
	go func() {
		m.mask()
		close(ready)
	}()
}

// wait lets a background mask computation finish.
func (m *Matcher) wait() {
	if m.pending != nil {
		<-m.pending
		m.pending = nil
	}
}
