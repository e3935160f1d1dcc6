package engine

import (
	"fmt"
	"reflect"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/vk"
)

// Tensor is a weight tensor uploaded to device-local memory, in its GGUF
// storage type and layout: Rows rows of Cols elements each.
type Tensor struct {
	Name       string
	Type       gguf.Type
	Rows, Cols int
	Buf        *vk.Buffer
}

// Range is the whole tensor as a binding range.
func (t *Tensor) Range() vk.Range { return t.Buf.All() }

// loader uploads the tensors a model asks for, by GGUF name, and keeps
// count of what it placed.
type loader struct {
	f     *gguf.File
	d     *vk.Device
	bytes uint64
	bufs  []*vk.Buffer
}

// tensor uploads the named tensor and checks its shape: cols is the row
// length (ggml ne[0]) and rows the number of rows (the product of the other
// dimensions). rows 0 accepts any row count.
func (l *loader) tensor(name string, cols, rows int) (*Tensor, error) {
	ti, data, err := l.f.TensorData(name)
	if err != nil {
		return nil, err
	}
	r := 1
	for _, d := range ti.Dims[1:] {
		r *= int(d)
	}
	if int(ti.Dims[0]) != cols || (rows != 0 && r != rows) {
		return nil, fmt.Errorf("tensor %q has shape %v, want [%d, %d]", name, ti.Dims, cols, rows)
	}
	buf, err := l.d.Alloc(vk.DeviceLocal, uint64(len(data)), name)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	l.bufs = append(l.bufs, buf)
	if err := l.d.Write(buf.All(), data); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	l.bytes += uint64(len(data))
	return &Tensor{Name: name, Type: ti.Type, Rows: r, Cols: cols, Buf: buf}, nil
}

// free releases everything loaded so far (after a failed load).
func (l *loader) free() {
	for _, b := range l.bufs {
		b.Free()
	}
	l.bufs = nil
}

// bind fills the *Tensor fields of the struct that dst points to from the
// tensors named by their `gguf` tags: `gguf:"attn_q"` loads
// PREFIX+"attn_q.weight"; a tag with an explicit suffix (`attn_q.bias`) is
// used as is; ",optional" leaves the field nil when the file lacks the
// tensor. The `shape` tag gives the expected [cols, rows] in terms of the
// config's dimensions.
func (l *loader) bind(dst any, prefix string, c Config) error {
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("gguf")
		if !ok {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if !strings.Contains(name, ".") {
			name += ".weight"
		}
		name = prefix + name
		if _, present := l.f.Tensor(name); !present && opts == "optional" {
			continue
		}
		cols, rows, err := shapeOf(f.Tag.Get("shape"), c)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		ten, err := l.tensor(name, cols, rows)
		if err != nil {
			return err
		}
		v.Field(i).Set(reflect.ValueOf(ten))
	}
	return nil
}

// shapeOf evaluates a shape tag such as "dim,ffn" or "qdim".
func shapeOf(tag string, c Config) (cols, rows int, err error) {
	dims := map[string]int{
		"dim": c.Dim, "ffn": c.FFN, "vocab": c.Vocab, "1": 1,
		"qdim": c.Heads * c.HeadDim, "kvdim": c.KVHeads * c.HeadDim, "ropehalf": c.RopeDim / 2,
	}
	a, b, _ := strings.Cut(tag, ",")
	var ok bool
	if cols, ok = dims[a]; !ok {
		return 0, 0, fmt.Errorf("bad shape tag %q", tag)
	}
	if b == "" {
		return cols, 1, nil
	}
	if rows, ok = dims[b]; !ok {
		return 0, 0, fmt.Errorf("bad shape tag %q", tag)
	}
	return cols, rows, nil
}
