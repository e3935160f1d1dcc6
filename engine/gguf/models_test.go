package gguf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"
)

// ggufModelPath finds a test model in shared/models, which lives beside the
// module root (or in an ancestor of it), searching upward from the package.
func ggufModelPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "models", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("test model %s not found in shared/models beside the module root or above it", name)
		}
		dir = parent
	}
}

func openModel(t *testing.T, name string) (*File, []byte) {
	t.Helper()
	p := ggufModelPath(t, name)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return f, raw
}

// wantKV checks a key's value through Lookup into a destination of the
// same type as want.
func wantKV[T comparable](t *testing.T, f *File, key string, want T) {
	t.Helper()
	var got T
	found, err := f.Lookup(key, &got)
	if !found || err != nil || got != want {
		t.Errorf("%s = %v (found %v, err %v), want %v", key, got, found, err, want)
	}
}

// checkTensorData checks every tensor's data against the raw file bytes,
// that the data section is tightly filled and that Data slices the mapping.
func checkTensorData(t *testing.T, f *File, raw []byte) {
	t.Helper()
	var end uint64
	base := unsafe.SliceData(f.data)
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		d := f.Data(ti)
		start := f.DataOffset + ti.Offset
		if uint64(len(d)) != ti.Bytes() || !bytes.Equal(d, raw[start:start+ti.Bytes()]) {
			t.Fatalf("tensor %s: data differs from file bytes [%d, %d)", ti.Name, start, start+ti.Bytes())
		}
		if uintptr(unsafe.Pointer(unsafe.SliceData(d)))-uintptr(unsafe.Pointer(base)) != uintptr(ti.Offset) {
			t.Fatalf("tensor %s: Data is not a slice of the mapped data section", ti.Name)
		}
		end = max(end, start+ti.Bytes())
	}
	if end != uint64(len(raw)) {
		t.Errorf("last tensor ends at byte %d, file has %d", end, len(raw))
	}
}

func TestStories260K(t *testing.T) {
	f, raw := openModel(t, "stories260K.gguf")
	if f.Version != 3 || len(f.KV) != 19 || len(f.Tensors) != 48 || f.DataOffset != 14176 || f.Alignment != 32 {
		t.Fatalf("version %d, %d KV, %d tensors, data at %d, alignment %d; want 3, 19, 48, 14176, 32",
			f.Version, len(f.KV), len(f.Tensors), f.DataOffset, f.Alignment)
	}
	wantKV(t, f, "general.architecture", "llama")
	wantKV(t, f, "general.name", "llama")
	wantKV(t, f, "tokenizer.ggml.model", "llama")
	for key, want := range map[string]uint64{
		"llama.embedding_length": 64, "llama.block_count": 5, "llama.attention.head_count": 8,
		"llama.attention.head_count_kv": 4, "llama.feed_forward_length": 172,
		"llama.rope.dimension_count": 8, "llama.context_length": 2048,
		"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
		"tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.seperator_token_id": 4294967295,
		"tokenizer.ggml.padding_token_id": 4294967295,
	} {
		wantKV(t, f, key, want)
	}
	wantKV(t, f, "llama.attention.layer_norm_rms_epsilon", float32(9.9999997e-06))
	for _, key := range []string{"llama.rope.freq_base", "general.file_type", "general.alignment", "tokenizer.ggml.add_bos_token"} {
		if _, ok := f.Value(key); ok {
			t.Errorf("key %s present, want absent", key)
		}
	}
	tokens, ok1 := f.Strings("tokenizer.ggml.tokens")
	scores, ok2 := f.Floats32("tokenizer.ggml.scores")
	types, ok3 := f.Ints("tokenizer.ggml.token_type")
	if !ok1 || !ok2 || !ok3 || len(tokens) != 512 || len(scores) != 512 || len(types) != 512 {
		t.Fatalf("vocab: %d tokens, %d scores, %d types", len(tokens), len(scores), len(types))
	}
	if tokens[0] != "<unk>" || tokens[1] != "<s>" || tokens[2] != "</s>" || tokens[3] != "<0x00>" || tokens[258] != "<0xFF>" {
		t.Errorf("special tokens %q", tokens[:4])
	}
	lo, hi := scores[0], scores[0]
	for _, s := range scores {
		lo, hi = min(lo, s), max(hi, s)
	}
	if lo != -252 || hi != 0 {
		t.Errorf("scores in [%v, %v], want [-252, 0]", lo, hi)
	}
	count := map[int]int{}
	for _, ty := range types {
		count[ty]++
	}
	if count[1] != 253 || count[2] != 1 || count[3] != 2 || count[6] != 256 {
		t.Errorf("token type counts %v, want 253 normal, 1 unknown, 2 control, 256 byte", count)
	}

	shapes := map[string][]uint64{"attn_q": {64, 64}, "attn_k": {64, 32}, "attn_v": {64, 32},
		"attn_output": {64, 64}, "attn_norm": {64}, "ffn_gate": {64, 172}, "ffn_down": {172, 64},
		"ffn_up": {64, 172}, "ffn_norm": {64}}
	order := []string{"attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_gate", "ffn_down", "ffn_up", "ffn_norm"}
	want := []TensorInfo{{Name: "token_embd.weight", Dims: []uint64{64, 512}},
		{Name: "output_norm.weight", Dims: []uint64{64}}, {Name: "output.weight", Dims: []uint64{64, 512}}}
	for n := range 5 {
		for _, s := range order {
			want = append(want, TensorInfo{Name: fmt.Sprintf("blk.%d.%s.weight", n, s), Dims: shapes[s]})
		}
	}
	var elements uint64
	for i, ti := range f.Tensors {
		if ti.Name != want[i].Name || ti.Type != F32 || !equalDims(ti.Dims, want[i].Dims) {
			t.Errorf("tensor %d: %s %v %v, want %s F32 %v", i, ti.Name, ti.Type, ti.Dims, want[i].Name, want[i].Dims)
		}
		elements += ti.Elements()
	}
	if elements != 292800 {
		t.Errorf("%d elements in all, want 292800", elements)
	}
	checkTensorData(t, f, raw)
	_, emb, err1 := f.TensorData("token_embd.weight")
	_, out, err2 := f.TensorData("output.weight")
	if err1 != nil || err2 != nil || !bytes.Equal(emb, out) {
		t.Errorf("output.weight should equal token_embd.weight (errors %v, %v)", err1, err2)
	}
}

func TestLlama2TinyRandom(t *testing.T) {
	f, raw := openModel(t, "llama-2-tiny-random.gguf")
	if f.Version != 3 || len(f.KV) != 18 || len(f.Tensors) != 12 || f.DataOffset != 724416 || f.Alignment != 32 {
		t.Fatalf("version %d, %d KV, %d tensors, data at %d, alignment %d; want 3, 18, 12, 724416, 32",
			f.Version, len(f.KV), len(f.Tensors), f.DataOffset, f.Alignment)
	}
	wantKV(t, f, "general.name", "LLaMA v2")
	wantKV(t, f, "general.file_type", 1)
	for key, want := range map[string]int{"llama.embedding_length": 8, "llama.block_count": 1,
		"llama.attention.head_count": 2, "llama.attention.head_count_kv": 2, "llama.feed_forward_length": 32,
		"llama.rope.dimension_count": 4, "llama.context_length": 4096} {
		wantKV(t, f, key, want)
	}
	eps, ok := f.Float("llama.attention.layer_norm_rms_epsilon")
	if !ok || float32(eps) != 1e-5 {
		t.Errorf("rms eps %v %v", eps, ok)
	}
	tokens, _ := f.Strings("tokenizer.ggml.tokens")
	types, _ := f.Ints("tokenizer.ggml.token_type")
	count := map[int]int{}
	for _, ty := range types {
		count[ty]++
	}
	if len(tokens) != 32000 || count[6] != 256 || count[1] != 31741 {
		t.Errorf("%d tokens, type counts %v", len(tokens), count)
	}
	want := map[string]struct {
		typ  Type
		dims []uint64
	}{
		"token_embd.weight": {F16, []uint64{8, 32000}}, "output.weight": {F16, []uint64{8, 32000}},
		"blk.0.attn_q.weight": {F16, []uint64{8, 8}}, "blk.0.attn_k.weight": {F16, []uint64{8, 8}},
		"blk.0.attn_v.weight": {F16, []uint64{8, 8}}, "blk.0.attn_output.weight": {F16, []uint64{8, 8}},
		"blk.0.ffn_gate.weight": {F16, []uint64{8, 32}}, "blk.0.ffn_up.weight": {F16, []uint64{8, 32}},
		"blk.0.ffn_down.weight": {F16, []uint64{32, 8}}, "blk.0.attn_norm.weight": {F32, []uint64{8}},
		"blk.0.ffn_norm.weight": {F32, []uint64{8}}, "output_norm.weight": {F32, []uint64{8}},
	}
	for name, w := range want {
		ti, ok := f.Tensor(name)
		if !ok || ti.Type != w.typ || !equalDims(ti.Dims, w.dims) {
			t.Errorf("tensor %s: %+v, want %v %v", name, ti, w.typ, w.dims)
		}
	}
	checkTensorData(t, f, raw)
	_, d, err := f.TensorData("blk.0.ffn_down.weight")
	out := make([]float32, 32*8)
	if err != nil || Dequantize(F16, d, out) != nil {
		t.Fatal(err)
	}
	if out[0] == 0 && out[1] == 0 {
		t.Errorf("ffn_down decodes to zeros")
	}
}

// TestModelsRewriteIdentical writes each model back from what was read; the
// writer lays files out as llama.cpp does, so the bytes must be identical.
func TestModelsRewriteIdentical(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		f, raw := openModel(t, name)
		var buf bytes.Buffer
		if err := Write(&buf, f.KV, f.AllTensorData()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), raw) {
			t.Errorf("%s: rewritten file differs (%d bytes, original %d)", name, buf.Len(), len(raw))
		}
		g, err := Parse(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if !equalFiles(f, g) {
			t.Errorf("%s: Parse and Open disagree", name)
		}
	}
}

// TestModelTruncated cuts a real file at many points: every cut before the
// end of the last tensor must fail with a FormatError, never panic.
func TestModelTruncated(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		_, raw := openModel(t, name)
		var cuts []int
		for c := 0; c < len(raw); {
			cuts = append(cuts, c)
			switch { // every byte early on, then ever sparser
			case c < 4096:
				c++
			case c < 20000:
				c += 7
			default:
				c += max(4093, c/64)
			}
		}
		cuts = append(cuts, len(raw)-1)
		for _, c := range cuts {
			_, err := Parse(bytes.NewReader(raw[:c]), int64(c))
			var fe *FormatError
			if !asFormatError(err, &fe) || fe.Offset > int64(c) {
				t.Fatalf("%s cut at %d: error %v", name, c, err)
			}
		}
	}
}

func equalDims(a, b []uint64) bool { return slices.Equal(a, b) }
