package gguf

import (
	"fmt"
	"math"
	"reflect"
)

// KV is one metadata key-value pair. Value holds one of these Go types, each
// standing for one GGUF value type: uint8, int8, uint16, int16, uint32, int32,
// uint64, int64, float32, float64, bool, string. A GGUF array is a slice of
// one of them ([]uint8 … []string), and an array of arrays is an []any whose
// elements are such slices. Reading a file yields exactly these types, and
// the writer accepts exactly these, so a KV list survives a round trip.
type KV struct {
	Key   string
	Value any
}

// valueType numbers the GGUF metadata value types as the format does.
type valueType uint32

const (
	vUint8 valueType = iota
	vInt8
	vUint16
	vInt16
	vUint32
	vInt32
	vFloat32
	vBool
	vString
	vArray
	vUint64
	vInt64
	vFloat64
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32",
	"float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t valueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("value type %d", uint32(t))
}

// minSize is the fewest bytes one value of the type can take in a file; it
// bounds array lengths by what is left of the file. 0 means unknown type.
func (t valueType) minSize() uint64 {
	switch t {
	case vUint8, vInt8, vBool:
		return 1
	case vUint16, vInt16:
		return 2
	case vUint32, vInt32, vFloat32:
		return 4
	case vUint64, vInt64, vFloat64, vString:
		return 8
	case vArray:
		return 12 // element type and length
	}
	return 0
}

// typeOf maps a Go value onto its GGUF value type (see KV).
func typeOf(v any) (valueType, bool) {
	switch v.(type) {
	case uint8:
		return vUint8, true
	case int8:
		return vInt8, true
	case uint16:
		return vUint16, true
	case int16:
		return vInt16, true
	case uint32:
		return vUint32, true
	case int32:
		return vInt32, true
	case float32:
		return vFloat32, true
	case bool:
		return vBool, true
	case string:
		return vString, true
	case uint64:
		return vUint64, true
	case int64:
		return vInt64, true
	case float64:
		return vFloat64, true
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
		[]string, []uint64, []int64, []float64, []any:
		return vArray, true
	}
	return 0, false
}

// describe names a value's GGUF type for error messages, with the value
// itself when it is a scalar.
func describe(v any) string {
	t, ok := typeOf(v)
	switch {
	case !ok:
		return fmt.Sprintf("Go type %T", v)
	case t == vArray:
		return fmt.Sprintf("an array (%T)", v)
	case t == vString:
		return fmt.Sprintf("string %.64q", v)
	}
	return fmt.Sprintf("%v %v", t, v)
}

// Value returns the raw value of a key (see KV for its Go types).
func (f *File) Value(key string) (any, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return nil, false
	}
	return f.KV[i].Value, true
}

// Lookup stores the value of key in *dst and reports whether the key exists.
// A missing key leaves *dst untouched, so a default can be set beforehand; a
// key of an unfitting type is an error, never a silent default. dst may be
// *string, *bool, *float32, *float64 (either float type fits), *uint64,
// *uint32, *int64, *int, *int32 (any integer type fits if the value is in
// range), *[]string, *[]float32 or *[]int (any integer array fits).
// Slices share storage with f.KV, except []int, which is converted.
func (f *File) Lookup(key string, dst any) (bool, error) {
	v, ok := f.Value(key)
	if !ok {
		return false, nil
	}
	if err := convert(v, dst); err != nil {
		return true, fmt.Errorf("gguf: key %q holds %s, %w", key, describe(v), err)
	}
	return true, nil
}

func convert(v, dst any) error {
	mag, neg, isInt := integer(reflect.ValueOf(v))
	want := func(what string) error { return fmt.Errorf("want %s", what) }
	switch p := dst.(type) {
	case *string:
		s, ok := v.(string)
		if !ok {
			return want("a string")
		}
		*p = s
	case *bool:
		b, ok := v.(bool)
		if !ok {
			return want("a bool")
		}
		*p = b
	case *float32, *float64:
		rv := reflect.ValueOf(v)
		if !rv.CanFloat() {
			return want("a float")
		}
		if p32, ok := p.(*float32); ok {
			*p32 = float32(rv.Float())
		} else {
			*p.(*float64) = rv.Float()
		}
	case *uint64:
		if !isInt || neg {
			return want("a non-negative integer")
		}
		*p = mag
	case *uint32:
		if !isInt || neg || mag > math.MaxUint32 {
			return want("an integer in uint32 range")
		}
		*p = uint32(mag)
	case *int64, *int, *int32:
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		if _, ok := p.(*int32); ok {
			lo, hi = math.MinInt32, math.MaxInt32
		} else if _, ok := p.(*int); ok {
			lo, hi = math.MinInt, math.MaxInt
		}
		x, ok := signed(mag, neg, lo, hi)
		if !isInt || !ok {
			return want(fmt.Sprintf("an integer in [%d, %d]", lo, hi))
		}
		switch p := p.(type) {
		case *int64:
			*p = x
		case *int:
			*p = int(x)
		case *int32:
			*p = int32(x)
		}
	case *[]string:
		s, ok := v.([]string)
		if !ok {
			return want("an array of strings")
		}
		*p = s
	case *[]float32:
		s, ok := v.([]float32)
		if !ok {
			return want("an array of float32")
		}
		*p = s
	case *[]int:
		s, ok := ints(reflect.ValueOf(v))
		if !ok {
			return want("an array of integers that fit an int")
		}
		*p = s
	default:
		return fmt.Errorf("which cannot be stored in a %T", dst)
	}
	return nil
}

// integer splits a value of any integer type into magnitude and sign.
func integer(rv reflect.Value) (mag uint64, neg, ok bool) {
	switch {
	case rv.CanUint():
		return rv.Uint(), false, true
	case rv.CanInt() && rv.Int() < 0:
		return uint64(-rv.Int()), true, true // MinInt64 negates to itself: 1<<63 is right
	case rv.CanInt():
		return uint64(rv.Int()), false, true
	}
	return 0, false, false
}

// signed rebuilds an integer from integer's parts if it lies in [lo, hi].
func signed(mag uint64, neg bool, lo, hi int64) (int64, bool) {
	if neg {
		return -int64(mag), mag <= uint64(-lo)
	}
	return int64(mag), mag <= uint64(hi)
}

// ints converts an array of any integer type.
func ints(rv reflect.Value) ([]int, bool) {
	if rv.Kind() != reflect.Slice || !integerKind(rv.Type().Elem().Kind()) {
		return nil, false
	}
	out := make([]int, rv.Len())
	for i := range out {
		mag, neg, _ := integer(rv.Index(i))
		x, ok := signed(mag, neg, math.MinInt, math.MaxInt)
		if !ok {
			return nil, false
		}
		out[i] = int(x)
	}
	return out, true
}

func integerKind(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Int64 || k >= reflect.Uint && k <= reflect.Uint64
}

// String returns a string key's value; ok is false when the key is missing
// or not a string. Use Lookup to tell the two apart.
func (f *File) String(key string) (string, bool) { return get[string](f, key) }

// Uint returns an integer key's value, whatever its integer type; ok is false
// when the key is missing, not an integer, or negative.
func (f *File) Uint(key string) (uint64, bool) { return get[uint64](f, key) }

// Float returns a float32 or float64 key's value; ok is false when the key is
// missing or of another type.
func (f *File) Float(key string) (float64, bool) { return get[float64](f, key) }

// Bool returns a bool key's value; ok is false when the key is missing or of
// another type.
func (f *File) Bool(key string) (bool, bool) { return get[bool](f, key) }

// Strings returns a string array key's value, sharing storage with f.KV; ok
// is false when the key is missing or of another type.
func (f *File) Strings(key string) ([]string, bool) { return get[[]string](f, key) }

// Floats32 returns a float32 array key's value, sharing storage with f.KV; ok
// is false when the key is missing or of another type.
func (f *File) Floats32(key string) ([]float32, bool) { return get[[]float32](f, key) }

// Ints returns an integer array key's value, whatever its integer type, as a
// new slice; ok is false when the key is missing, of another type, or holds
// a value that does not fit an int.
func (f *File) Ints(key string) ([]int, bool) { return get[[]int](f, key) }

func get[T any](f *File, key string) (T, bool) {
	var x T
	found, err := f.Lookup(key, &x)
	return x, found && err == nil
}
