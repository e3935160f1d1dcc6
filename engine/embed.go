package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"headinfer/engine/gguf"
)

// Pooling is how an embedding is made of a sequence's token vectors: each
// token's final hidden state, the output norm's, as the logits see it.
type Pooling int

const (
	PoolMean Pooling = iota // the mean over the tokens
	PoolCLS                 // the first token's
	PoolLast                // the last token's
	// PoolNone keeps every token's vector, as they are (not normalised):
	// an embedding of n tokens is n vectors, one after the other.
	PoolNone
)

func (p Pooling) String() string {
	switch p {
	case PoolMean:
		return "mean"
	case PoolCLS:
		return "cls"
	case PoolLast:
		return "last"
	case PoolNone:
		return "none"
	}
	return fmt.Sprintf("Pooling(%d)", int(p))
}

// poolingOf reads <arch>.pooling_type, llama.cpp's numbering: 0 none, 1
// mean, 2 cls, 3 last, 4 rank. A model that names none pools by the mean:
// a generative model's embeddings are most often asked for that way (an
// embedding model's none stays none, see ConfigOf).
func poolingOf(f *gguf.File, arch string) (Pooling, error) {
	v, ok := f.Uint(arch + ".pooling_type")
	if !ok {
		return PoolMean, nil
	}
	switch v {
	case 0, 1:
		return PoolMean, nil
	case 2:
		return PoolCLS, nil
	case 3:
		return PoolLast, nil
	}
	return 0, fmt.Errorf("model pooling type %d is not supported (supported: 0 none, 1 mean, 2 cls, 3 last)", v)
}

// ErrNoGeneration is returned for text generation with a model that
// only embeds: it has no output projection (BERT), or it attends both
// ways, which a token-by-token generation cannot do.
var ErrNoGeneration = errors.New("the model computes embeddings only and cannot generate text: serve it with --embeddings")

// pooler folds the hidden states of a sequence, chunk by chunk, into one
// vector.
type pooler struct {
	how  Pooling
	dim  int
	seen int
	sum  []float64
	each []float32 // PoolNone: every token's vector
}

func newPooler(how Pooling, dim int) *pooler {
	return &pooler{how: how, dim: dim, sum: make([]float64, dim)}
}

// add takes the next n tokens' hidden states, f32 rows of dim.
func (p *pooler) add(rows []byte, n int) {
	row := func(i int) []byte { return rows[4*i*p.dim : 4*(i+1)*p.dim] }
	take := func(r []byte, into func(j int, v float64)) {
		for j := range p.dim {
			into(j, float64(math.Float32frombits(binary.LittleEndian.Uint32(r[4*j:]))))
		}
	}
	switch p.how {
	case PoolMean:
		for i := range n {
			take(row(i), func(j int, v float64) { p.sum[j] += v })
		}
	case PoolCLS:
		if p.seen == 0 {
			take(row(0), func(j int, v float64) { p.sum[j] = v })
		}
	case PoolLast:
		take(row(n-1), func(j int, v float64) { p.sum[j] = v })
	case PoolNone:
		for i := range n {
			for j := range p.dim {
				p.each = append(p.each, math.Float32frombits(binary.LittleEndian.Uint32(row(i)[4*j:])))
			}
		}
	}
	p.seen += n
}

// result is the pooled vector, L2-normalised (all zeros stays zeros);
// with PoolNone every token's vector as it is. The mean's division by the
// count cancels in the normalisation.
func (p *pooler) result() []float32 {
	if p.how == PoolNone {
		return p.each
	}
	var norm float64
	for _, v := range p.sum {
		norm += v * v
	}
	norm = math.Sqrt(norm)
	out := make([]float32, p.dim)
	for j, v := range p.sum {
		if norm > 0 {
			v /= norm
		}
		out[j] = float32(v)
	}
	return out
}

// CanEmbed says whether the model's embeddings can be computed: they
// always can, models that attend both ways included (their input then
// runs as one chunk, which Embed checks).
func (m *Model) CanEmbed() error { return nil }

// CanGenerate says whether the model can generate text: not when it has
// no output projection or attends both ways (ErrNoGeneration, with the
// reason).
func (m *Model) CanGenerate() error {
	switch {
	case m.Config.EmbedOnly:
		return fmt.Errorf("%w (%s has no output projection)", ErrNoGeneration, m.Config.Arch)
	case m.Config.NonCausal:
		return fmt.Errorf("%w (%s.attention.causal is false: it attends both ways)", ErrNoGeneration, m.Config.Arch)
	}
	return nil
}

// ErrInputTooLong is returned for an input to a model that attends both
// ways that does not fit one chunk.
var ErrInputTooLong = errors.New("input is too long")

// checkWhole says whether ids can be embedded by a model that attends
// both ways: every token must see every other, so the input is one
// chunk.
func (m *Model) checkWhole(ids []int32, chunk int) error {
	if m.Config.NonCausal && len(ids) > chunk {
		return fmt.Errorf("%w: %d tokens, and a model that attends both ways takes its whole input in one chunk of at most %d (--chunk; --ctx-size when --chunk is not given)", ErrInputTooLong, len(ids), chunk)
	}
	return nil
}

// Embed computes the embedding of ids: the sequence is prefilled from
// empty, as Prefill does, and its tokens' final hidden states are pooled
// as the model says (Config.Pooling) and L2-normalised (with PoolNone:
// len(ids) vectors of Config.Dim, as they are). The session then
// holds ids, whose KV a later generation may reuse.
func (se *Session) Embed(ctx context.Context, ids []int32) ([]float32, error) {
	if err := se.m.CanEmbed(); err != nil {
		return nil, err
	}
	if err := se.m.checkWhole(ids, se.s.chunk); err != nil {
		return nil, err
	}
	se.Reset()
	p := newPooler(se.m.Config.Pooling, se.m.Config.Dim)
	if err := se.prefill(ctx, ids, false, p); err != nil {
		return nil, err
	}
	return p.result(), nil
}
