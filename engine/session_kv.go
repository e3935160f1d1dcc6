package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"headinfer/engine/gguf"
)

// KVLayout describes the KV cache a session exports and imports: slot
// by slot, layer-major, each KV head's K slot and then its V slot, each
// slot positions × HeadDim elements of Type (K) or TypeV (V), little-endian;
// a Q8_0 or Q4_0 row is HeadDim/32 blocks, as the slots hold it. A slot of
// n positions holds all of them, or, in a layer whose slots are rings
// (Windows), only the last Positions(l, n).
type KVLayout struct {
	Type  gguf.Type // keys: F16, F32, Q8_0 or Q4_0
	TypeV gguf.Type // values

	Layers  int
	KVHeads int
	HeadDim int
	Ctx     int // positions the cache holds at most
	// Windows is, per layer, the sliding window of a layer whose slots
	// are rings, 0 for a layer that holds every position; nil when no
	// layer has a ring (Plan.Rings).
	Windows []int
}

// Positions is how many of a sequence's n positions layer l's slots
// export: the last window of them in a ring layer, else all.
func (g KVLayout) Positions(l, n int) int {
	if g.Windows != nil && g.Windows[l] > 0 {
		return min(n, g.Windows[l])
	}
	return n
}

// Same reports whether g and o describe the same slots.
func (g KVLayout) Same(o KVLayout) bool {
	return g.Type == o.Type && g.TypeV == o.TypeV && g.Layers == o.Layers && g.KVHeads == o.KVHeads && g.HeadDim == o.HeadDim &&
		g.Ctx == o.Ctx && slices.Equal(g.Windows, o.Windows)
}

// Slots is the number of slots: two (K, V) per layer and KV head.
func (g KVLayout) Slots() int { return 2 * g.Layers * g.KVHeads }

// SlotBytes is the size of one V (isV) or K slot of n positions.
func (g KVLayout) SlotBytes(n int, isV bool) int {
	t := g.Type
	if isV {
		t = g.TypeV
	}
	return n * t.RowBytes(g.HeadDim)
}

// slotBuf is room for either slot of n positions.
func (g KVLayout) slotBuf(n int) []byte {
	return make([]byte, max(g.SlotBytes(n, false), g.SlotBytes(n, true)))
}

// KVLayout is the session's KV cache geometry.
func (se *Session) KVLayout() KVLayout {
	c, rings := se.m.Config, se.m.plan.Rings
	g := KVLayout{Type: se.m.kvType.K, TypeV: se.m.kvType.V, Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Ctx: se.s.ctx}
	if rings != nil {
		g.Windows = make([]int, c.Layers)
		for l, r := range rings {
			if r > 0 {
				g.Windows[l] = c.Window(l)
			}
		}
	}
	return g
}

// CanKeep reports whether the session's KV can be cut back to its first
// n positions and continued from there, or exported as n positions. It
// always can when no layer's slots are rings. A ring keeps only its
// latest positions (the ones a sliding window needs), so a sequence can
// be continued from n only when the rings still hold the window before n:
// after running to position P, n at most a ring's slack (about a chunk)
// before P. n = 0 always works.
func (se *Session) CanKeep(n int) bool {
	if n == 0 {
		return true
	}
	if n < 0 || n > len(se.tokens) {
		return false
	}
	for l, r := range se.m.plan.Rings {
		if r > 0 && max(0, n-se.m.Config.Window(l)) < se.ringsFrom {
			return false
		}
	}
	return true
}

// ringsWrote notes that positions up to end were written: the rings then
// hold none before end − their size.
func (se *Session) ringsWrote(end int) {
	for _, r := range se.m.plan.Rings {
		if r > 0 {
			se.ringsFrom = max(se.ringsFrom, end-r)
		}
	}
}

// ExportKV passes the KV of positions [0, n) to put, slot by slot in
// KVLayout's order (a ring layer's slot holds the last positions only);
// put must not keep the slice. The KV lives wherever the plan put it
// (device slots are read back, streamed slots are read from the host
// store); exporting changes nothing in the session.
func (se *Session) ExportKV(n int, put func(slot []byte) error) error {
	if n < 0 || n > len(se.tokens) {
		return fmt.Errorf("export of %d KV positions: the session holds %d", n, len(se.tokens))
	}
	if !se.CanKeep(n) {
		return se.ringsLost(n)
	}
	g := se.KVLayout()
	buf := g.slotBuf(n)
	for l := range g.Layers {
		keep := g.Positions(l, n)
		for h := range g.KVHeads {
			for _, isV := range []bool{false, true} {
				slot := buf[:g.SlotBytes(keep, isV)]
				if keep > 0 {
					if err := se.s.kv.Read(l, h, isV, n-keep, slot); err != nil {
						return err
					}
				}
				if err := put(slot); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ringsLost is the error of using the KV of n positions that the rings
// no longer hold.
func (se *Session) ringsLost(n int) error {
	return fmt.Errorf("the KV of the first %d positions is no longer whole: the sliding-window layers keep only their latest positions (from %d on); run with --swa-full to keep them all",
		n, se.ringsFrom)
}

// ImportKV replaces the session's contents by tokens, whose KV get fills
// slot by slot in KVLayout's order (into a slice of SlotBytes(len(tokens),
// isV) it must fill whole). When get fails, or anything else does, the session
// is left empty, so that no partly written KV is ever used; the error is
// returned.
func (se *Session) ImportKV(tokens []int32, get func(slot []byte) error) (err error) {
	g := se.KVLayout()
	if len(tokens) > g.Ctx {
		return fmt.Errorf("import of %d KV positions: the context holds %d", len(tokens), g.Ctx)
	}
	for _, id := range tokens {
		if id < 0 || int(id) >= se.m.Config.Vocab {
			return fmt.Errorf("import: token id %d is outside the vocabulary (0..%d)", id, se.m.Config.Vocab-1)
		}
	}
	se.Reset()
	if len(tokens) == 0 {
		return nil
	}
	n := len(tokens)
	buf := g.slotBuf(n)
	for l := range g.Layers {
		keep := g.Positions(l, n)
		for h := range g.KVHeads {
			for _, isV := range []bool{false, true} {
				slot := buf[:g.SlotBytes(keep, isV)]
				if err := get(slot); err != nil {
					return err
				}
				if err := se.s.kv.Write(l, h, isV, n-keep, slot); err != nil {
					return err
				}
			}
		}
	}
	se.tokens = append(se.tokens, tokens...)
	for l := range g.Layers {
		se.ringsFrom = max(se.ringsFrom, n-g.Positions(l, n))
	}
	return nil
}

// ReusePrefix keeps the KV of PrefixLen(tokens, prompt) tokens (none
// when the rings no longer hold that prefix; see CanKeep), dropping the
// rest, and returns the length kept: the caller prefills prompt[kept:]
// (Generate does, given it).
func (se *Session) ReusePrefix(prompt []int32) int {
	return se.Truncate(PrefixLen(se.Reusable(), prompt))
}

// CopyPrefix replaces the session's contents by the first n tokens of
// src (a session of the same model with the same KV layout) and their KV,
// copied slot by slot wherever each lives: a prefix another sequence
// computed need not be prefilled again. On failure the session is left
// empty.
func (se *Session) CopyPrefix(src *Session, n int) error {
	if src.m != se.m || !src.KVLayout().Same(se.KVLayout()) {
		return fmt.Errorf("copy of KV between sessions of different models or layouts")
	}
	if n < 0 || n > len(src.tokens) {
		return fmt.Errorf("copy of %d KV positions: the source holds %d", n, len(src.tokens))
	}
	if !src.CanKeep(n) {
		se.Reset()
		return src.ringsLost(n)
	}
	g := se.KVLayout()
	l, h, isV := 0, 0, false // the slot get fills next, in KVLayout's order
	return se.ImportKV(src.tokens[:n], func(buf []byte) error {
		if len(buf) > 0 {
			if err := src.s.kv.Read(l, h, isV, n-g.Positions(l, n), buf); err != nil {
				return err
			}
		}
		if isV = !isV; !isV {
			if h++; h == g.KVHeads {
				h, l = 0, l+1
			}
		}
		return nil
	})
}

// PrefixLen is the number of prompt tokens whose KV a sequence of held
// tokens can give: their common prefix, less the last prompt token,
// which always runs (its step gives the next token's logits).
func PrefixLen(held, prompt []int32) int {
	n := 0
	for n < len(held) && n < len(prompt)-1 && held[n] == prompt[n] {
		n++
	}
	return n
}

// Truncate drops the tokens from position n on, or all of them when the
// rings no longer hold the window before n (see CanKeep), and returns
// how many are left. The dropped positions' KV is overwritten by later
// steps (a step attends to its own positions and those before).
func (se *Session) Truncate(n int) int {
	if n < len(se.tokens) {
		n = max(n, 0)
		if !se.CanKeep(n) {
			n = 0
		}
		if n == 0 {
			se.ringsFrom = 0
		}
		se.tokens = se.tokens[:n]
		se.have = false
		if se.shifted && n <= se.exact {
			se.shifted = false
		}
	}
	return len(se.tokens)
}

// Identity identifies the model file for KV snapshots: a SHA-256 over its
// metadata, its tensor directory and the first identityBytes of every
// tensor's data. Two files with the same tensors and metadata are the
// same model; a fine-tune, another quantization or an edited tokenizer is
// another. (Hashing all the weights would cost seconds on a large model.)
func (m *Model) Identity() [32]byte {
	h := sha256.New()
	h.Write([]byte("headinfer model identity 1\n"))
	for _, kv := range m.file.KV {
		fmt.Fprintf(h, "%q=%T:%v\n", kv.Key, kv.Value, kv.Value)
	}
	var n [8]byte
	for i := range m.file.Tensors {
		ti := &m.file.Tensors[i]
		fmt.Fprintf(h, "%q %v %v %d\n", ti.Name, ti.Dims, ti.Type, ti.Offset)
		data := m.file.Data(ti)
		binary.LittleEndian.PutUint64(n[:], uint64(len(data)))
		h.Write(n[:])
		h.Write(data[:min(len(data), identityBytes)])
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// identityBytes is how much of each tensor's data Identity hashes.
const identityBytes = 64 << 10
