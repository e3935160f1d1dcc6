package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// decoder reads little-endian GGUF fields, tracking the byte offset for
// error messages. The first error sticks: later reads return zero values,
// so callers check d.err once after a group of reads. Every length is
// checked against the bytes left before anything is allocated for it.
type decoder struct {
	r    *bufio.Reader
	off  int64 // bytes consumed
	size int64 // file size
	ctx  string
	err  error
	buf  [8]byte
}

func (d *decoder) fail(at int64, format string, args ...any) {
	if d.err == nil {
		d.err = &FormatError{at, d.ctx, fmt.Sprintf(format, args...)}
	}
}

func (d *decoder) left() uint64 { return uint64(d.size - d.off) }

// need fails unless n more bytes remain in the file.
func (d *decoder) need(n uint64, what string) bool {
	if d.err == nil && n > d.left() {
		d.fail(d.off, "file ends at byte %d: %s needs %d bytes, %d are left", d.size, what, n, d.left())
	}
	return d.err == nil
}

// read fills p, or zeroes it once an error has occurred.
func (d *decoder) read(p []byte, what string) {
	if !d.need(uint64(len(p)), what) {
		clear(p)
		return
	}
	if _, err := io.ReadFull(d.r, p); err != nil {
		clear(p)
		d.fail(d.off, "reading %s: %v", what, err)
		return
	}
	d.off += int64(len(p))
}

func (d *decoder) u8(what string) uint8 {
	d.read(d.buf[:1], what)
	return d.buf[0]
}

func (d *decoder) u16(what string) uint16 {
	d.read(d.buf[:2], what)
	return binary.LittleEndian.Uint16(d.buf[:])
}

func (d *decoder) u32(what string) uint32 {
	d.read(d.buf[:4], what)
	return binary.LittleEndian.Uint32(d.buf[:])
}

func (d *decoder) u64(what string) uint64 {
	d.read(d.buf[:8], what)
	return binary.LittleEndian.Uint64(d.buf[:])
}

func (d *decoder) str(what string) string {
	n := d.u64(what) // the length field counts as part of the string
	if !d.need(n, what) {
		return ""
	}
	b := make([]byte, n)
	d.read(b, what)
	return string(b)
}

func (d *decoder) boolean() bool {
	b := d.u8("a bool")
	if b > 1 {
		d.fail(d.off-1, "bool value is %d, want 0 or 1", b)
	}
	return b == 1
}

// value reads one value of type t; t has just been read from the 4 bytes
// before d.off.
func (d *decoder) value(t valueType, depth int) any {
	if d.err != nil {
		return nil
	}
	switch t {
	case vUint8:
		return d.u8("a uint8")
	case vInt8:
		return int8(d.u8("an int8"))
	case vUint16:
		return d.u16("a uint16")
	case vInt16:
		return int16(d.u16("an int16"))
	case vUint32:
		return d.u32("a uint32")
	case vInt32:
		return int32(d.u32("an int32"))
	case vFloat32:
		return math.Float32frombits(d.u32("a float32"))
	case vBool:
		return d.boolean()
	case vString:
		return d.str("a string")
	case vArray:
		return d.array(depth)
	case vUint64:
		return d.u64("a uint64")
	case vInt64:
		return int64(d.u64("an int64"))
	case vFloat64:
		return math.Float64frombits(d.u64("a float64"))
	}
	d.fail(d.off-4, "unknown value type %d", uint32(t))
	return nil
}

// array reads an array's element type, length and elements into a typed
// slice (see KV).
func (d *decoder) array(depth int) any {
	at := d.off
	if depth >= maxNesting {
		d.fail(at, "arrays nested more than %d deep", maxNesting)
		return nil
	}
	et := valueType(d.u32("an array's element type"))
	n := d.u64("an array's length")
	if d.err != nil {
		return nil
	}
	if et.minSize() == 0 {
		d.fail(at, "unknown array element type %d", uint32(et))
		return nil
	}
	if n > d.left()/et.minSize() {
		d.fail(at+4, "array of %d %v elements cannot fit in the %d bytes left", n, et, d.left())
		return nil
	}
	switch et {
	case vUint8:
		b := make([]byte, n)
		d.read(b, "a uint8 array")
		return b
	case vInt8:
		return fill(d, n, func() int8 { return int8(d.u8("an int8")) })
	case vUint16:
		return fill(d, n, func() uint16 { return d.u16("a uint16") })
	case vInt16:
		return fill(d, n, func() int16 { return int16(d.u16("an int16")) })
	case vUint32:
		return fill(d, n, func() uint32 { return d.u32("a uint32") })
	case vInt32:
		return fill(d, n, func() int32 { return int32(d.u32("an int32")) })
	case vFloat32:
		return fill(d, n, func() float32 { return math.Float32frombits(d.u32("a float32")) })
	case vBool:
		return fill(d, n, d.boolean)
	case vString:
		return fill(d, n, func() string { return d.str("a string") })
	case vArray:
		return fill(d, n, func() any { return d.array(depth + 1) })
	case vUint64:
		return fill(d, n, func() uint64 { return d.u64("a uint64") })
	case vInt64:
		return fill(d, n, func() int64 { return int64(d.u64("an int64")) })
	default: // vFloat64
		return fill(d, n, func() float64 { return math.Float64frombits(d.u64("a float64")) })
	}
}

func fill[T any](d *decoder, n uint64, next func() T) []T {
	s := make([]T, n)
	for i := range s {
		if s[i] = next(); d.err != nil {
			return nil
		}
	}
	return s
}
