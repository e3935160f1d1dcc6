package gguf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// allValuesKV holds one key of every value type, arrays of every element
// type, empty and nested arrays.
func allValuesKV() []KV {
	return []KV{
		{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
		{"u32", uint32(4000000000)}, {"i32", int32(-2000000000)}, {"f32", float32(-1.5e-5)},
		{"bool.true", true}, {"bool.false", false}, {"str", "héllo\x00world"}, {"str.empty", ""},
		{"u64", uint64(1) << 63}, {"i64", int64(-1) << 62}, {"f64", 3.141592653589793},
		{"a.u8", []uint8{1, 2, 255}}, {"a.i8", []int8{-128, 127}}, {"a.u16", []uint16{65535}},
		{"a.i16", []int16{-1, 1}}, {"a.u32", []uint32{7}}, {"a.i32", []int32{-7, 8}},
		{"a.f32", []float32{0.5, -2}}, {"a.bool", []bool{true, false, true}},
		{"a.str", []string{"<s>", "", "▁the"}}, {"a.u64", []uint64{1 << 40}}, {"a.i64", []int64{-1 << 40}},
		{"a.f64", []float64{1e300}}, {"a.empty", []string{}},
		{"a.nested", []any{[]int32{1, 2}, []string{"x"}, []any{[]float32{}}, []bool{}}},
	}
}

func randTensor(r *rand.Rand, name string, typ Type, dims ...uint64) TensorData {
	ti := TensorInfo{Name: name, Dims: dims, Type: typ}
	x := make([]float32, ti.Elements())
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	data, err := Quantize(typ, x)
	if err != nil {
		panic(err)
	}
	return TensorData{name, dims, typ, data}
}

func TestWriteRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, align := range []uint32{0, 1, 64, 4096} {
		kv := allValuesKV()
		if align != 0 {
			kv = append(kv, KV{alignmentKey, align})
		}
		tensors := []TensorData{
			randTensor(r, "f32", F32, 3, 5), randTensor(r, "f16", F16, 7), randTensor(r, "bf16", BF16, 2, 3, 1, 2),
			randTensor(r, "q8", Q8_0, 64, 3), randTensor(r, "q4", Q4_0, 32, 1, 5), randTensor(r, "scalar", F32),
			randTensor(r, "empty", Q8_0, 0, 4),
		}
		var buf bytes.Buffer
		if err := Write(&buf, kv, tensors); err != nil {
			t.Fatal(err)
		}
		f, err := Parse(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		want := max(uint64(align), 1)
		if align == 0 {
			want = 32
		}
		if f.Version != 3 || f.Alignment != want || f.DataOffset%want != 0 || uint64(buf.Len())%want != 0 {
			t.Errorf("align %d: version %d, alignment %d, data at %d, %d bytes", align, f.Version, f.Alignment, f.DataOffset, buf.Len())
		}
		if !reflect.DeepEqual(f.KV, kv) {
			t.Errorf("align %d: KV differ:\n got %v\nwant %v", align, f.KV, kv)
		}
		if len(f.Tensors) != len(tensors) {
			t.Fatalf("%d tensors, want %d", len(f.Tensors), len(tensors))
		}
		for i, td := range tensors {
			ti := &f.Tensors[i]
			if ti.Name != td.Name || ti.Type != td.Type || !equalDims(ti.Dims, td.Dims) || ti.Offset%want != 0 ||
				!bytes.Equal(f.Data(ti), td.Data) {
				t.Errorf("align %d: tensor %d: %+v differs from %s %v %v", align, i, ti, td.Name, td.Type, td.Dims)
			}
		}

		// Version 2 files differ from version 3 only in the number.
		v2 := bytes.Clone(buf.Bytes())
		v2[4] = 2
		g, err := Parse(bytes.NewReader(v2), int64(len(v2)))
		if err != nil || g.Version != 2 || !reflect.DeepEqual(g.KV, f.KV) {
			t.Errorf("version 2: %v", err)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	ok := []TensorInfo{{Name: "t", Dims: []uint64{4}, Type: F32}}
	deep := any([]int32{})
	for range 16 {
		deep = []any{deep}
	}
	for _, c := range []struct {
		name    string
		kv      []KV
		tensors []TensorInfo
		want    string
	}{
		{"duplicate key", []KV{{"a", uint8(1)}, {"a", uint8(2)}}, nil, `duplicate key "a"`},
		{"int is not a GGUF type", []KV{{"a", 5}}, nil, `key "a": int is not a GGUF value type`},
		{"nil value", []KV{{"a", nil}}, nil, `key "a": <nil> is not a GGUF value type`},
		{"array of arrays holding a scalar", []KV{{"a", []any{[]int8{}, "x"}}}, nil, `element 1 of an array of arrays is string "x"`},
		{"nesting too deep", []KV{{"a", deep}}, nil, "arrays nested more than 16 deep"},
		{"bad alignment", []KV{{alignmentKey, uint32(24)}}, nil, "want a power of two"},
		{"negative alignment", []KV{{alignmentKey, int32(-32)}}, nil, "want an integer in uint32 range"},
		{"duplicate tensor", nil, append(ok, ok[0]), `duplicate tensor name "t"`},
		{"five dims", nil, []TensorInfo{{Name: "t", Dims: []uint64{1, 1, 1, 1, 1}}}, "5 dimensions, at most 4"},
		{"unsupported type", nil, []TensorInfo{{Name: "t", Dims: []uint64{256}, Type: 11}}, "type Q3_K, which this version does not load"},
		{"partial block", nil, []TensorInfo{{Name: "t", Dims: []uint64{48}, Type: Q4_0}}, "not a whole number of Q4_0 blocks"},
		{"overflow", nil, []TensorInfo{{Name: "t", Dims: []uint64{1 << 62, 4}, Type: F32}}, "overflow"},
	} {
		_, err := NewWriter(&bytes.Buffer{}, c.kv, c.tensors)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}

	var buf bytes.Buffer
	w, err := NewWriter(&buf, nil, []TensorInfo{ok[0], {Name: "u", Dims: []uint64{2}, Type: F16}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor(make([]byte, 15)); err == nil || !strings.Contains(err.Error(), `tensor "t" (F32 [4]) takes 16 bytes, got 15`) {
		t.Errorf("short data: %v", err)
	}
	if err := w.WriteTensor(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "only 1 of 2 tensors were written") {
		t.Errorf("early Close: %v", err)
	}
	if w.WriteTensor(make([]byte, 4)) != nil || w.WriteTensor(nil) == nil || w.Close() != nil {
		t.Error("writing past the last tensor should fail and Close then succeed")
	}

	failing := errWriter{errors.New("disk full")}
	if _, err := NewWriter(failing, nil, ok); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failing writer: %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }
