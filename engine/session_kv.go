package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"headinfer/engine/gguf"
)

// KVLayout describes the KV cache a session exports and imports: slot
// by slot, layer-major, each KV head's K slot and then its V slot, each
// slot positions × HeadDim elements of Type, little-endian.
type KVLayout struct {
	Type    gguf.Type // F16 or F32
	Layers  int
	KVHeads int
	HeadDim int
	Ctx     int // positions the cache holds at most
}

// Slots is the number of slots: two (K, V) per layer and KV head.
func (g KVLayout) Slots() int { return 2 * g.Layers * g.KVHeads }

// SlotBytes is the size of one slot of n positions.
func (g KVLayout) SlotBytes(n int) int {
	return n * g.HeadDim * g.Type.BlockBytes() / g.Type.BlockSize()
}

// KVLayout is the session's KV cache geometry.
func (se *Session) KVLayout() KVLayout {
	c := se.m.Config
	return KVLayout{Type: se.m.kvType, Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Ctx: se.s.ctx}
}

// ExportKV passes the KV of positions [0, n) to put, slot by slot in
// KVLayout's order; put must not keep the slice. The KV lives wherever
// the plan put it (device slots are read back, streamed slots are read
// from the host store); exporting changes nothing in the session.
func (se *Session) ExportKV(n int, put func(slot []byte) error) error {
	if n < 0 || n > len(se.tokens) {
		return fmt.Errorf("export of %d KV positions: the session holds %d", n, len(se.tokens))
	}
	g := se.KVLayout()
	buf := make([]byte, g.SlotBytes(n))
	for l := range g.Layers {
		for h := range g.KVHeads {
			for _, isV := range []bool{false, true} {
				if n > 0 {
					if err := se.s.kv.Read(l, h, isV, 0, buf); err != nil {
						return err
					}
				}
				if err := put(buf); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ImportKV replaces the session's contents by tokens, whose KV get fills
// slot by slot in KVLayout's order (into a slice of SlotBytes(len(tokens))
// it must fill whole). When get fails, or anything else does, the session
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
	buf := make([]byte, g.SlotBytes(len(tokens)))
	for l := range g.Layers {
		for h := range g.KVHeads {
			for _, isV := range []bool{false, true} {
				if err := get(buf); err != nil {
					return err
				}
				if err := se.s.kv.Write(l, h, isV, 0, buf); err != nil {
					return err
				}
			}
		}
	}
	se.tokens = append(se.tokens, tokens...)
	return nil
}

// ReusePrefix keeps the KV of PrefixLen(tokens, prompt) tokens, dropping
// the rest, and returns that length: the caller prefills prompt[kept:]
// (Generate does, given it).
func (se *Session) ReusePrefix(prompt []int32) int {
	n := PrefixLen(se.tokens, prompt)
	se.Truncate(n)
	return n
}

// CopyPrefix replaces the session's contents by the first n tokens of
// src (a session of the same model with the same KV layout) and their KV,
// copied slot by slot wherever each lives: a prefix another sequence
// computed need not be prefilled again. On failure the session is left
// empty.
func (se *Session) CopyPrefix(src *Session, n int) error {
	if src.m != se.m || src.KVLayout() != se.KVLayout() {
		return fmt.Errorf("copy of KV between sessions of different models or layouts")
	}
	if n < 0 || n > len(src.tokens) {
		return fmt.Errorf("copy of %d KV positions: the source holds %d", n, len(src.tokens))
	}
	g := se.KVLayout()
	l, h, isV := 0, 0, false // the slot get fills next, in KVLayout's order
	return se.ImportKV(src.tokens[:n], func(buf []byte) error {
		if err := src.s.kv.Read(l, h, isV, 0, buf); err != nil {
			return err
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

// Truncate drops the tokens from position n on; their KV is overwritten
// by later steps (a step attends to its own positions and those before).
func (se *Session) Truncate(n int) {
	if n < len(se.tokens) {
		se.tokens = se.tokens[:max(n, 0)]
		se.have = false
	}
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
