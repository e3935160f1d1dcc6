package gguf

import (
	"bytes"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func kvFile(t *testing.T, kv ...KV) *File {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, kv, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLookupConversions(t *testing.T) {
	f := kvFile(t, allValuesKV()...)
	var u64 uint64
	var u32 uint32
	var i64 int64
	var i int
	var i32 int32
	var f32 float32
	var f64 float64
	var s string
	var b bool
	var ss []string
	var fs []float32
	var is []int
	for _, c := range []struct {
		key  string
		dst  any
		want any // nil: the lookup must fail and leave dst alone
	}{
		{"u8", &u64, uint64(200)}, {"i8", &i64, int64(-100)}, {"u16", &i, 60000}, {"i16", &i32, int32(-30000)},
		{"u32", &u32, uint32(4000000000)}, {"u32", &i32, nil}, {"i32", &u64, nil}, {"i32", &i, -2000000000},
		{"u64", &u64, uint64(1) << 63}, {"u64", &i64, nil}, {"u64", &u32, nil}, {"i64", &i64, int64(-1) << 62},
		{"i64", &i32, nil}, {"f32", &f32, float32(-1.5e-5)}, {"f32", &f64, float64(float32(-1.5e-5))},
		{"f64", &f32, float32(math.Pi)}, {"f64", &u64, nil}, {"u8", &f64, nil}, {"str", &s, "héllo\x00world"},
		{"str", &b, nil}, {"bool.true", &b, true}, {"bool.true", &i, nil}, {"a.str", &ss, []string{"<s>", "", "▁the"}},
		{"a.f32", &fs, []float32{0.5, -2}}, {"a.f64", &fs, nil}, {"a.i8", &is, []int{-128, 127}},
		{"a.u64", &is, []int{1 << 40}}, {"a.i32", &is, []int{-7, 8}}, {"a.str", &is, nil}, {"a.empty", &ss, []string{}},
		{"u8", new(complex64), nil},
	} {
		found, err := f.Lookup(c.key, c.dst)
		got := reflect.ValueOf(c.dst).Elem()
		if c.want == nil {
			if !found || err == nil || !strings.Contains(err.Error(), `gguf: key "`+c.key+`" holds`) || !got.IsZero() {
				t.Errorf("Lookup(%s, %T): found %v, %v, dst %v; want an error", c.key, c.dst, found, err, got)
			}
			continue
		}
		if !found || err != nil || !reflect.DeepEqual(got.Interface(), c.want) {
			t.Errorf("Lookup(%s, %T) = %v, %v, %v; want %v", c.key, c.dst, got, found, err, c.want)
		}
		got.SetZero()
	}

	def := 7
	if found, err := f.Lookup("missing", &def); found || err != nil || def != 7 {
		t.Errorf("missing key: %v %v, default became %d", found, err, def)
	}
	if v, ok := f.Uint("i8"); ok || v != 0 {
		t.Error("Uint of a negative value should not be ok")
	}
	if v, ok := f.Uint("u16"); !ok || v != 60000 {
		t.Error("Uint of uint16")
	}
	if v, ok := f.String("str"); !ok || v != "héllo\x00world" {
		t.Error("String")
	}
	if _, ok := f.String("u8"); ok {
		t.Error("String of an integer should not be ok")
	}
	if v, ok := f.Bool("bool.false"); !ok || v {
		t.Error("Bool")
	}
	if v, ok := f.Float("f64"); !ok || v != math.Pi {
		t.Error("Float")
	}
	if v, ok := f.Ints("a.u16"); !ok || !slices.Equal(v, []int{65535}) {
		t.Error("Ints")
	}
	if _, ok := f.Ints("a.f32"); ok {
		t.Error("Ints of floats should not be ok")
	}
	if _, ok := f.Strings("nope"); ok {
		t.Error("Strings of a missing key")
	}
	if v, ok := f.Floats32("a.f32"); !ok || len(v) != 2 {
		t.Error("Floats32")
	}
	if _, ok := kvFile(t, KV{"big", []uint64{1 << 63}}).Ints("big"); ok {
		t.Error("Ints of a uint64 past MaxInt should not be ok")
	}
}
