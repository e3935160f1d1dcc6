package engine

import "headinfer/engine/offload"

// programs keeps recorded steps by key, at most max of them: a step is
// recorded once and run many times, and the least recently used goes
// first when a new key needs room.
type programs[K comparable] struct {
	max   int
	byKey map[K]*recorded
	tick  uint64 // counts look-ups
}

// recorded is a kept program and when it was last used.
type recorded struct {
	p    *offload.Program
	used uint64
}

func newPrograms[K comparable](max int) *programs[K] {
	return &programs[K]{max: max, byKey: map[K]*recorded{}}
}

// get returns the program of key, calling record for it on first use
// (fresh reports that it did).
func (ps *programs[K]) get(key K, record func() (*offload.Program, error)) (p *offload.Program, fresh bool, err error) {
	ps.tick++
	if e, ok := ps.byKey[key]; ok {
		e.used = ps.tick
		return e.p, false, nil
	}
	if len(ps.byKey) >= ps.max {
		var oldest K
		var at uint64
		for k, e := range ps.byKey {
			if at == 0 || e.used < at {
				oldest, at = k, e.used
			}
		}
		ps.byKey[oldest].p.Free()
		delete(ps.byKey, oldest)
	}
	if p, err = record(); err != nil {
		return nil, false, err
	}
	ps.byKey[key] = &recorded{p: p, used: ps.tick}
	return p, true, nil
}

// free releases every program; the device must be done with them.
func (ps *programs[K]) free() {
	for _, e := range ps.byKey {
		e.p.Free()
	}
	ps.byKey = nil
}
