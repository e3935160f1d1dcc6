package gguf

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// TensorData is a tensor to write: its description and its encoded bytes
// (see Quantize).
type TensorData struct {
	Name string
	Dims []uint64 // ggml order: Dims[0] is the row length
	Type Type
	Data []byte
}

// Write writes a GGUF version 3 file holding kv and tensors. The alignment
// is the kv's general.alignment, or 32 when it has none.
func Write(w io.Writer, kv []KV, tensors []TensorData) error {
	infos := make([]TensorInfo, len(tensors))
	for i, t := range tensors {
		infos[i] = TensorInfo{Name: t.Name, Dims: t.Dims, Type: t.Type}
	}
	gw, err := NewWriter(w, kv, infos)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := gw.WriteTensor(t.Data); err != nil {
			return err
		}
	}
	return gw.Close()
}

// Writer writes a GGUF version 3 file piece by piece, so that a large model
// need not be held in memory whole: NewWriter writes the header, then
// WriteTensor writes each tensor's data in the order the infos were given.
type Writer struct {
	w       io.Writer
	tensors []TensorInfo
	sizes   []uint64
	align   uint64
	next    int // index of the next tensor to write
}

// NewWriter validates kv and the tensor infos, assigns the tensors' data
// offsets (any Offset given is ignored) and writes the header.
func NewWriter(w io.Writer, kv []KV, tensors []TensorInfo) (*Writer, error) {
	gw := &Writer{w: w, align: defaultAlignment, sizes: make([]uint64, len(tensors))}
	b := append([]byte("GGUF"), 3, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(tensors)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(kv)))
	seen := make(map[string]bool, len(kv)+len(tensors))
	for _, p := range kv {
		if seen[p.Key] {
			return nil, fmt.Errorf("gguf: duplicate key %q", p.Key)
		}
		seen[p.Key] = true
		if p.Key == alignmentKey {
			a, err := alignmentOf(p.Value)
			if err != nil {
				return nil, fmt.Errorf("gguf: %v", err)
			}
			gw.align = a
		}
		t, ok := typeOf(p.Value)
		if !ok {
			return nil, fmt.Errorf("gguf: key %q: %T is not a GGUF value type", p.Key, p.Value)
		}
		b = appendString(b, p.Key)
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
		var err error
		if b, err = appendValue(b, p.Value, 0); err != nil {
			return nil, fmt.Errorf("gguf: key %q: %w", p.Key, err)
		}
	}
	clear(seen)
	var off uint64
	for i, t := range tensors {
		if seen[t.Name] {
			return nil, fmt.Errorf("gguf: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		if len(t.Dims) > maxDims {
			return nil, fmt.Errorf("gguf: tensor %q has %d dimensions, at most %d are allowed", t.Name, len(t.Dims), maxDims)
		}
		n, err := t.size()
		if err != nil {
			return nil, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		t.Offset = off
		gw.tensors = append(gw.tensors, t)
		gw.sizes[i] = n
		off = alignUp(off+n, gw.align)
		b = appendString(b, t.Name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Dims)))
		for _, d := range t.Dims {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(t.Type))
		b = binary.LittleEndian.AppendUint64(b, t.Offset)
	}
	b = append(b, make([]byte, alignUp(uint64(len(b)), gw.align)-uint64(len(b)))...)
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("gguf: writing header: %w", err)
	}
	return gw, nil
}

// WriteTensor writes the next tensor's data, which must be exactly its size.
func (gw *Writer) WriteTensor(data []byte) error {
	if gw.next >= len(gw.tensors) {
		return fmt.Errorf("gguf: all %d tensors are already written", len(gw.tensors))
	}
	t, n := gw.tensors[gw.next], gw.sizes[gw.next]
	if uint64(len(data)) != n {
		return fmt.Errorf("gguf: tensor %q (%v %v) takes %d bytes, got %d", t.Name, t.Type, t.Dims, n, len(data))
	}
	if _, err := gw.w.Write(data); err != nil {
		return fmt.Errorf("gguf: writing tensor %q: %w", t.Name, err)
	}
	pad := alignUp(n, gw.align) - n
	if _, err := gw.w.Write(make([]byte, pad)); err != nil {
		return fmt.Errorf("gguf: writing tensor %q: %w", t.Name, err)
	}
	gw.next++
	return nil
}

// Close reports an error if some tensors were not written. It does not close
// the underlying writer.
func (gw *Writer) Close() error {
	if gw.next != len(gw.tensors) {
		return fmt.Errorf("gguf: only %d of %d tensors were written", gw.next, len(gw.tensors))
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends v's encoding, without its type tag (see KV for the Go
// types accepted).
func appendValue(b []byte, v any, depth int) ([]byte, error) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return append(b, x), nil
	case int8:
		return append(b, byte(x)), nil
	case uint16:
		return le.AppendUint16(b, x), nil
	case int16:
		return le.AppendUint16(b, uint16(x)), nil
	case uint32:
		return le.AppendUint32(b, x), nil
	case int32:
		return le.AppendUint32(b, uint32(x)), nil
	case float32:
		return le.AppendUint32(b, math.Float32bits(x)), nil
	case bool:
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case string:
		return appendString(b, x), nil
	case uint64:
		return le.AppendUint64(b, x), nil
	case int64:
		return le.AppendUint64(b, uint64(x)), nil
	case float64:
		return le.AppendUint64(b, math.Float64bits(x)), nil
	}
	if depth >= maxNesting {
		return nil, fmt.Errorf("arrays nested more than %d deep", maxNesting)
	}
	switch x := v.(type) {
	case []uint8:
		return appendArray(b, vUint8, x, depth)
	case []int8:
		return appendArray(b, vInt8, x, depth)
	case []uint16:
		return appendArray(b, vUint16, x, depth)
	case []int16:
		return appendArray(b, vInt16, x, depth)
	case []uint32:
		return appendArray(b, vUint32, x, depth)
	case []int32:
		return appendArray(b, vInt32, x, depth)
	case []float32:
		return appendArray(b, vFloat32, x, depth)
	case []bool:
		return appendArray(b, vBool, x, depth)
	case []string:
		return appendArray(b, vString, x, depth)
	case []uint64:
		return appendArray(b, vUint64, x, depth)
	case []int64:
		return appendArray(b, vInt64, x, depth)
	case []float64:
		return appendArray(b, vFloat64, x, depth)
	case []any:
		for i, e := range x {
			if t, _ := typeOf(e); t != vArray {
				return nil, fmt.Errorf("element %d of an array of arrays is %s", i, describe(e))
			}
		}
		return appendArray(b, vArray, x, depth)
	}
	return nil, fmt.Errorf("%T is not a GGUF value type", v)
}

func appendArray[T any](b []byte, et valueType, s []T, depth int) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, uint32(et))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	var err error
	for _, e := range s {
		if b, err = appendValue(b, e, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}
