package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
)

// equalFiles compares two parsed files: header facts, metadata and every
// tensor's description and bytes. NaN-free metadata is assumed.
func equalFiles(a, b *File) bool {
	if a.Version != b.Version || a.Alignment != b.Alignment || a.DataOffset != b.DataOffset ||
		!reflect.DeepEqual(a.KV, b.KV) || len(a.Tensors) != len(b.Tensors) {
		return false
	}
	for i := range a.Tensors {
		x, y := &a.Tensors[i], &b.Tensors[i]
		if x.Name != y.Name || x.Type != y.Type || x.Offset != y.Offset || !slices.Equal(x.Dims, y.Dims) ||
			!bytes.Equal(a.Data(x), b.Data(y)) {
			return false
		}
	}
	return true
}

func asFormatError(err error, fe **FormatError) bool { return errors.As(err, fe) }

// raw builds GGUF bytes field by field, to make files the writer refuses to.
type raw []byte

func (r raw) u8(v uint8) raw   { return append(r, v) }
func (r raw) u32(v uint32) raw { return binary.LittleEndian.AppendUint32(r, v) }
func (r raw) u64(v uint64) raw { return binary.LittleEndian.AppendUint64(r, v) }
func (r raw) str(s string) raw { return append(r.u64(uint64(len(s))), s...) }

// header starts a version 3 file with the given counts.
func header(nTensors, nKV uint64) raw { return raw("GGUF").u32(3).u64(nTensors).u64(nKV) }

// tensorInfo appends one tensor directory entry.
func (r raw) tensorInfo(name string, dims []uint64, typ Type, off uint64) raw {
	r = r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r = r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}

// data pads to the default alignment and appends n zero bytes of data.
func (r raw) data(n int) raw {
	r = append(r, make([]byte, alignUp(uint64(len(r)), 32)-uint64(len(r)))...)
	return append(r, make([]byte, n)...)
}
