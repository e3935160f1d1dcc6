package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// This file reads the tokenizer arrays of the test models with a minimal
// GGUF key/value reader, so the package's tests do not depend on engine/gguf.

// modelPath finds shared/models/name beside the module root, walking up from
// the test's directory (the checkout is ROOT/main with ROOT/shared, or in CI
// CLONE with CLONE/../shared).
func modelPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
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
			t.Fatalf("shared/models/%s not found above the working directory", name)
		}
		dir = parent
	}
}

type ggufReader struct {
	b   []byte
	off int
	err error
}

func (r *ggufReader) take(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if n < 0 || r.off+n > len(r.b) {
		r.err = fmt.Errorf("gguf: truncated at byte %d", r.off)
		return make([]byte, max(n, 0))
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *ggufReader) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *ggufReader) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }
func (r *ggufReader) str() string { return string(r.take(int(r.u64()))) }

// value reads one value of GGUF type typ: numbers as float64 or int64,
// bools, strings, and arrays as []any.
func (r *ggufReader) value(typ uint32) any {
	switch typ {
	case 0:
		return int64(r.take(1)[0])
	case 1:
		return int64(int8(r.take(1)[0]))
	case 2:
		return int64(binary.LittleEndian.Uint16(r.take(2)))
	case 3:
		return int64(int16(binary.LittleEndian.Uint16(r.take(2))))
	case 4:
		return int64(r.u32())
	case 5:
		return int64(int32(r.u32()))
	case 6:
		return float64(math.Float32frombits(r.u32()))
	case 7:
		return r.take(1)[0] != 0
	case 8:
		return r.str()
	case 9:
		et, n := r.u32(), r.u64()
		if n > uint64(len(r.b)) {
			r.err = fmt.Errorf("gguf: array of %d elements", n)
			return nil
		}
		a := make([]any, n)
		for i := range a {
			a[i] = r.value(et)
		}
		return a
	case 10:
		return int64(r.u64())
	case 11:
		return int64(r.u64())
	case 12:
		return math.Float64frombits(r.u64())
	}
	r.err = fmt.Errorf("gguf: unknown value type %d", typ)
	return nil
}

// readGGUFVocab builds a Vocab from the tokenizer.ggml.* keys of a GGUF file.
func readGGUFVocab(t testing.TB, path string) Vocab {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &ggufReader{b: b}
	if string(r.take(4)) != "GGUF" {
		t.Fatalf("%s: not a GGUF file", path)
	}
	r.u32() // version
	r.u64() // tensor count
	nkv := r.u64()
	kv := map[string]any{}
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		k := r.str()
		kv[k] = r.value(r.u32())
	}
	if r.err != nil {
		t.Fatalf("%s: %v", path, r.err)
	}
	id := func(key string) int32 {
		v, ok := kv[key].(int64)
		if !ok || v < 0 || v > math.MaxInt32 {
			return -1
		}
		return int32(v)
	}
	flag := func(key string, def bool) bool {
		if v, ok := kv[key].(bool); ok {
			return v
		}
		return def
	}
	v := Vocab{
		BOS: id("tokenizer.ggml.bos_token_id"),
		EOS: id("tokenizer.ggml.eos_token_id"),
		UNK: id("tokenizer.ggml.unknown_token_id"),
		PAD: id("tokenizer.ggml.padding_token_id"),
	}
	v.Model, _ = kv["tokenizer.ggml.model"].(string)
	v.Pre, _ = kv["tokenizer.ggml.pre"].(string)
	for _, x := range kv["tokenizer.ggml.tokens"].([]any) {
		v.Tokens = append(v.Tokens, x.(string))
	}
	if a, ok := kv["tokenizer.ggml.scores"].([]any); ok {
		for _, x := range a {
			v.Scores = append(v.Scores, float32(x.(float64)))
		}
	}
	if a, ok := kv["tokenizer.ggml.token_type"].([]any); ok {
		for _, x := range a {
			v.Types = append(v.Types, int32(x.(int64)))
		}
	}
	if a, ok := kv["tokenizer.ggml.merges"].([]any); ok {
		for _, x := range a {
			v.Merges = append(v.Merges, x.(string))
		}
	}
	spm := v.Model == ModelSPM
	v.AddBOS = flag("tokenizer.ggml.add_bos_token", spm)
	v.AddEOS = flag("tokenizer.ggml.add_eos_token", false)
	v.AddSpacePrefix = flag("tokenizer.ggml.add_space_prefix", spm)
	return v
}

// loadModel returns the tokenizer of a test model.
func loadModel(t testing.TB, name string) Tokenizer {
	t.Helper()
	tok, err := New(readGGUFVocab(t, modelPath(t, name)))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
