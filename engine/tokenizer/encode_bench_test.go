package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// benchText is n bytes of varied text: words, spaces, line breaks and
// multi-byte characters, as a long prompt would have.
func benchText(n int) string {
	r := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(randomText(r))
	}
	return b.String()[:n]
}

// BenchmarkEncodeLong encodes one 1 MiB text; B/op divided by 2^20 is the
// memory allocated per prompt byte. SentencePiece merges a whole text as
// one word, so its working set grows with the prompt.
func BenchmarkEncodeLong(b *testing.B) {
	text := benchText(1 << 20)
	tok := loadModel(b, "llama-2-tiny-random.gguf")
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Encode(text, true)
	}
}
