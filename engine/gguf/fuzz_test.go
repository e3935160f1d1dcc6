package gguf

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzParse from fuzzSeeds")

// FuzzParse checks that no input panics or fails to be reported, and that
// whatever parses survives a write and a second parse unchanged.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, o := range []Options{{}, {AllowUnsupported: true}} {
			g, err := ParseWith(bytes.NewReader(b), int64(len(b)), o)
			if err != nil {
				if g != nil || err.Error() == "" {
					t.Fatalf("error %v with a file", err)
				}
				continue
			}
			exercise(g)
			if o.AllowUnsupported && g.CheckTypes() != nil {
				continue // the writer cannot size these
			}
			if g.Alignment > 1<<16 {
				continue // valid, but the rewrite would pad to gigabytes
			}
			var w1, w2 bytes.Buffer
			if err := Write(&w1, g.KV, g.AllTensorData()); err != nil {
				t.Fatalf("cannot rewrite a file that parsed: %v", err)
			}
			g2, err := Parse(bytes.NewReader(w1.Bytes()), int64(w1.Len()))
			if err != nil {
				t.Fatalf("rewritten file does not parse: %v", err)
			}
			if err := Write(&w2, g2.KV, g2.AllTensorData()); err != nil || !bytes.Equal(w1.Bytes(), w2.Bytes()) {
				t.Fatalf("second rewrite differs (%v)", err)
			}
			for i := range g.Tensors {
				x, y := &g.Tensors[i], &g2.Tensors[i]
				if x.Name != y.Name || x.Type != y.Type || !slices.Equal(x.Dims, y.Dims) || !bytes.Equal(g.Data(x), g2.Data(y)) {
					t.Fatalf("tensor %d changed in the rewrite", i)
				}
			}
		}
	})
}

// exercise calls every accessor on every key and tensor.
func exercise(f *File) {
	for _, kv := range f.KV {
		for _, dst := range []any{new(string), new(bool), new(float32), new(float64), new(uint64), new(uint32),
			new(int64), new(int), new(int32), new([]string), new([]float32), new([]int)} {
			f.Lookup(kv.Key, dst)
		}
		f.Ints(kv.Key)
	}
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		_ = ti.Elements() + ti.Bytes() + uint64(len(f.Data(ti)))
		f.TensorData(ti.Name)
	}
	f.CheckTypes()
}

// fuzzSeeds are the committed seed corpus: small files, valid and not.
func fuzzSeeds() map[string][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	write := func(kv []KV, tensors ...TensorData) []byte {
		var buf bytes.Buffer
		if err := Write(&buf, kv, tensors); err != nil {
			panic(err)
		}
		return buf.Bytes()
	}
	all := write(allValuesKV(), randTensor(r, "f32", F32, 3), randTensor(r, "f16", F16, 2, 2),
		randTensor(r, "bf16", BF16, 1), randTensor(r, "q8", Q8_0, 32), randTensor(r, "q4", Q4_0, 32, 2))
	small := write([]KV{{alignmentKey, uint32(8)}, {"general.architecture", "llama"}, {"n", []int32{1, 2}}},
		randTensor(r, "w", Q4_0, 32, 1), randTensor(r, "b", F16, 3))
	badOffset := bytes.Clone(small)
	badOffset[bytes.Index(badOffset, []byte("w"))+1+4+16+4] = 4 // w's data offset, now misaligned
	return map[string][]byte{
		"valid-all-types":    all,
		"valid-small":        small,
		"valid-header-only":  write(nil),
		"valid-unsupported":  header(1, 0).tensorInfo("k", []uint64{256}, 12, 0).data(144),
		"valid-version-2":    append(raw("GGUF").u32(2).u64(0).u64(1).str("k"), raw{}.u32(9).u32(8).u64(1).str("v")...),
		"invalid-truncated":  small[:len(small)/2],
		"invalid-offset":     badOffset,
		"invalid-array-size": header(0, 1).str("k").u32(9).u32(4).u64(1 << 40),
		"invalid-nesting":    append(header(0, 1).str("k").u32(9), bytes.Repeat(raw{}.u32(9).u64(1), 20)...),
	}
}

// TestFuzzSeeds keeps the committed corpus in step with fuzzSeeds, and
// checks that each seed parses or fails as its name says.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	for name, b := range fuzzSeeds() {
		_, err := ParseWith(bytes.NewReader(b), int64(len(b)), Options{AllowUnsupported: true})
		if valid := strings.HasPrefix(name, "valid"); valid != (err == nil) {
			t.Errorf("seed %s: %v", name, err)
		}
		enc := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(enc), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != enc {
			t.Errorf("seed %s is out of date (%v): run go test -run TestFuzzSeeds -update-seeds", path, err)
		}
	}
}
