package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMalformed feeds one bad file per kind of damage and checks the error
// says what is wrong and where.
func TestMalformed(t *testing.T) {
	kv := func(key string, typ uint32) raw { return header(0, 1).str(key).u32(typ) } // value follows at byte 33+len(key)-1
	nested := kv("k", 9)
	for range 17 {
		nested = nested.u32(9).u64(1)
	}
	nested = nested.u32(4).u64(0)
	const first = 24 // the first key-value pair or tensor info
	cases := []struct {
		name string
		file raw
		want string
		at   int64 // FormatError offset, or -1 for errors of another kind
	}{
		{"empty", raw{}, "the magic number needs 4 bytes, 0 are left", 0},
		{"bad magic", raw("GGML").u32(3).u64(0).u64(0), `magic is "GGML", want "GGUF"`, 0},
		{"version 1", raw("GGUF").u32(1).u64(0).u64(0), "unsupported GGUF version 1: this reader handles versions 2 and 3", 4},
		{"version 4", raw("GGUF").u32(4).u64(0).u64(0), "unsupported GGUF version 4", 4},
		{"big-endian", raw("GGUF").u32(3 << 24).u64(0).u64(0), "big-endian", 4},
		{"truncated header", raw("GGUF").u32(3).u64(0).u8(0), "the key-value count needs 8 bytes, 1 are left", 16},
		{"absurd KV count", header(0, 1<<62), "4611686018427387904 key-value pairs cannot fit in the 0 bytes left", 16},
		{"absurd tensor count", header(1<<40, 0).u64(0), "1099511627776 tensors cannot fit in the 8 bytes left", 8},
		{"absurd key length", header(0, 1).u64(1 << 60).u64(0), "the key needs 1152921504606846976 bytes, 8 are left", 32},
		{"absurd string length", kv("k", 8).u64(1 << 50).u64(0), "a string needs 1125899906842624 bytes, 8 are left", 45},
		{"absurd array length", kv("k", 9).u32(4).u64(1 << 40).u32(0), "array of 1099511627776 uint32 elements cannot fit in the 4 bytes left", 41},
		{"absurd string array", kv("k", 9).u32(8).u64(3).u64(0).u64(0), "array of 3 string elements cannot fit in the 16 bytes left", 41},
		{"absurd nested array", kv("k", 9).u32(9).u64(2).u32(4).u64(0), "array of 2 array elements cannot fit in the 12 bytes left", 41},
		{"truncated value", kv("k", 10).u8(1).u8(2).u8(3), "a uint64 needs 8 bytes, 3 are left", 37},
		{"unknown value type", kv("k", 13).u64(0), "unknown value type 13", 33},
		{"unknown element type", kv("k", 9).u32(99).u64(0), "unknown array element type 99", 37},
		{"nesting too deep", nested, "arrays nested more than 16 deep", 37 + 16*12},
		{"bad bool", kv("k", 7).u8(2), "bool value is 2, want 0 or 1", 37},
		{"duplicate key", header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2), "duplicate key (pair 0 has it too)", 41},
		{"alignment zero", kv(alignmentKey, 4).u32(0), `"general.alignment" is 0, want a power of two`, first},
		{"alignment 48", kv(alignmentKey, 4).u32(48), "is 48, want a power of two", first},
		{"alignment string", kv(alignmentKey, 8).str("32"), `holds string "32", want an integer in uint32 range`, first},
		{"five dimensions", header(1, 0).tensorInfo("t", []uint64{1, 1, 1, 1, 1}, F32, 0), "5 dimensions, at most 4 are allowed", first + 9},
		{"truncated tensor info", header(1, 0).str("t").u32(2).u64(4).u8(0).u8(0).u8(0), "a dimension needs 8 bytes, 3 are left", first + 21},
		{"element count overflow", header(1, 0).tensorInfo("t", []uint64{1 << 32, 1 << 32, 1 << 32}, F32, 0).data(0),
			"dimensions [4294967296 4294967296 4294967296] overflow the element count", first},
		{"partial block", header(1, 0).tensorInfo("t", []uint64{31, 2}, Q8_0, 0).data(68),
			"row of 31 elements is not a whole number of Q8_0 blocks of 32", first},
		{"offset past end", header(1, 0).tensorInfo("t", []uint64{4}, F32, 64).data(16),
			"data offset 64 is past the end of the 16-byte data section at byte 64", first},
		{"data past end", header(1, 0).tensorInfo("t", []uint64{8}, F32, 0).data(16),
			"32 bytes of data at offset 0 run past the end of the 16-byte data section at byte 64", first},
		{"data past end of a file ending in the header", header(1, 0).tensorInfo("t", []uint64{1}, F32, 0),
			"4 bytes of data at offset 0 run past the end of the 0-byte data section at byte 64", first},
		{"misaligned", header(1, 0).tensorInfo("t", []uint64{4}, F32, 16).data(64),
			"data offset 16 is not a multiple of the alignment 32", first},
		{"overlap", header(2, 0).tensorInfo("a", []uint64{16}, F32, 0).tensorInfo("b", []uint64{16}, F32, 32).data(128),
			`data [32, 96) overlaps tensor "a"'s data [0, 64)`, first + 33},
		{"duplicate tensor", header(2, 0).tensorInfo("a", []uint64{1}, F32, 0).tensorInfo("a", []uint64{1}, F32, 32).data(64),
			"duplicate tensor name (tensor 0 has it too)", first + 33},
		{"unsupported type", header(1, 0).tensorInfo("blk.0.attn_q.weight", []uint64{256}, 11, 0).data(144),
			`tensor "blk.0.attn_q.weight" has type Q3_K, which this version does not load (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)`, -1},
		{"unknown type", header(1, 0).tensorInfo("t", []uint64{1}, 99, 0).data(4), `tensor "t" has type type(99), which`, -1},
	}
	for _, c := range cases {
		_, err := Parse(bytes.NewReader(c.file), int64(len(c.file)))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not say %q", c.name, err, c.want)
		}
		var fe *FormatError
		if isFE := errors.As(err, &fe); isFE != (c.at >= 0) || isFE && fe.Offset != c.at {
			t.Errorf("%s: error %q: want a FormatError at byte %d", c.name, err, c.at)
		}
	}
}

// TestUnsupportedAllowed checks the listing mode: the file opens, and the
// unsupported tensor is refused when asked for.
func TestUnsupportedAllowed(t *testing.T) {
	file := header(2, 0).tensorInfo("q", []uint64{256}, 11, 0).tensorInfo("f", []uint64{8}, F32, 160).data(192)
	f, err := ParseWith(bytes.NewReader(file), int64(len(file)), Options{AllowUnsupported: true})
	if err != nil {
		t.Fatal(err)
	}
	const want = `gguf: tensor "q" has type Q3_K, which this version does not load (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)`
	if err := f.CheckTypes(); err == nil || err.Error() != want {
		t.Errorf("CheckTypes: %v", err)
	}
	if _, _, err := f.TensorData("q"); err == nil || err.Error() != want {
		t.Errorf("TensorData: %v", err)
	}
	if ti, _ := f.Tensor("q"); f.Data(ti) != nil || ti.Bytes() != 0 || ti.Elements() != 256 {
		t.Errorf("unsupported tensor: Data %v, Bytes %d, Elements %d", f.Data(ti), ti.Bytes(), ti.Elements())
	}
	if _, d, err := f.TensorData("f"); err != nil || len(d) != 32 {
		t.Errorf("supported tensor beside it: %d bytes, %v", len(d), err)
	}
	if _, _, err := f.TensorData("nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
}

// TestSmallValidFiles checks edge cases that must be accepted.
func TestSmallValidFiles(t *testing.T) {
	for name, file := range map[string]raw{
		"header only":       header(0, 0),
		"version 2":         raw("GGUF").u32(2).u64(1).u64(0).tensorInfo("t", []uint64{3}, F32, 0).data(12),
		"empty tensor":      header(1, 0).tensorInfo("t", []uint64{0, 5}, F32, 0),
		"scalar tensor":     header(1, 0).tensorInfo("t", nil, F32, 0).data(4),
		"empty array":       header(0, 1).str("k").u32(9).u32(8).u64(0),
		"alignment 1":       header(1, 1).str(alignmentKey).u32(4).u32(1).tensorInfo("t", []uint64{1}, F16, 0).u8(7).u8(8),
		"trailing bytes":    header(1, 0).tensorInfo("t", []uint64{1}, F32, 0).data(40),
		"shared empty spot": header(2, 0).tensorInfo("a", []uint64{0}, F32, 0).tensorInfo("b", []uint64{1}, F32, 0).data(4),
	} {
		if _, err := Parse(bytes.NewReader(file), int64(len(file))); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.gguf")
	bad := filepath.Join(dir, "bad.gguf")
	if os.WriteFile(empty, nil, 0o644) != nil || os.WriteFile(bad, []byte("GGUF\x09\x00\x00\x00"), 0o644) != nil {
		t.Fatal("cannot write test files")
	}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.gguf"): "no such file",
		dir:                                "is not a regular file",
		empty:                              empty + ": malformed GGUF at byte 0 (header): file ends at byte 0",
		bad:                                bad + ": malformed GGUF at byte 4 (header): unsupported GGUF version 9",
	} {
		if _, err := Open(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s): %v, want %q", path, err, want)
		}
	}
}

func TestClose(t *testing.T) {
	f, err := Open(ggufModelPath(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor("output_norm.weight")
	if len(f.Data(ti)) != 256 {
		t.Fatal("no data before Close")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if f.Data(ti) != nil || f.Close() != nil {
		t.Error("Data after Close should be nil and a second Close harmless")
	}
	if _, _, err := f.TensorData("output_norm.weight"); err == nil {
		t.Error("TensorData after Close should fail")
	}
}

// TestTruncatedEverywhere cuts a file holding every value and tensor type at
// every byte; the real models use only a few value types.
func TestTruncatedEverywhere(t *testing.T) {
	file := fuzzSeeds()["valid-all-types"]
	f, err := Parse(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	var end uint64 // the end of the last tensor's data
	for _, ti := range f.Tensors {
		end = max(end, f.DataOffset+ti.Offset+ti.Bytes())
	}
	for c := range int(end) {
		_, err := Parse(bytes.NewReader(file[:c]), int64(c))
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Offset > int64(c) {
			t.Fatalf("cut at %d of %d: error %v", c, len(file), err)
		}
	}
}
