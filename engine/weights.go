package engine

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/vk"
)

// Tensor is a weight tensor uploaded to device-local memory, in its GGUF
// storage type: Rows rows of Cols elements each, at Off in Buf, in GGUF
// layout or, when Packed, in the layout the matrix kernels of a CPU device
// read (kernel.Pack).
type Tensor struct {
	Name       string
	Type       gguf.Type
	Rows, Cols int
	Buf        *vk.Buffer
	Off, Size  uint64
	Packed     bool
	// group is the rows of a packed group: a packed matrix is padded to
	// whole groups, so only one whose rows fill them can have another
	// stacked after it.
	group int
}

// Range is the whole tensor as a binding range.
func (t *Tensor) Range() vk.Range { return t.Buf.Range(t.Off, t.Size) }

// joined returns one range over tensors of one type that lie back to back
// in one buffer, in order: matrices with rows of one length read as one
// matrix of their rows stacked, or vectors as one vector. ok is false when
// they do not lie so (or one is nil).
func joined(ts ...*Tensor) (r vk.Range, ok bool) {
	rs := make([]vk.Range, len(ts))
	for i, t := range ts {
		if t == nil || t.Type != ts[0].Type || t.Packed != ts[0].Packed {
			return vk.Range{}, false
		}
		if t.Packed && i < len(ts)-1 && t.Rows%t.group != 0 {
			return vk.Range{}, false // its padding rows would sit between the matrices
		}
		rs[i] = t.Range()
	}
	return adjacent(rs...)
}

// adjacent returns one range over ranges of one buffer that follow each
// other without a gap.
func adjacent(rs ...vk.Range) (vk.Range, bool) {
	for i := 1; i < len(rs); i++ {
		if rs[i].Buf != rs[0].Buf || rs[i].Off != rs[i-1].Off+rs[i-1].Size {
			return vk.Range{}, false
		}
	}
	last := rs[len(rs)-1]
	return rs[0].Buf.Range(rs[0].Off, last.Off+last.Size-rs[0].Off), true
}

// loader uploads the tensors a model asks for, by GGUF name, and keeps
// count of what it placed.
type loader struct {
	f     *gguf.File
	d     *vk.Device
	bytes uint64
	bufs  []*vk.Buffer
	// progress, when set, hears the bytes uploaded so far.
	progress func(uint64)
	// keeps, when set, says which tensors to upload: a device that runs
	// part of a split model holds its share only (part.keeps). The others
	// are found and checked all the same, and left without a buffer.
	keeps func(name string) bool
}

// kept says whether the named tensor goes to the device.
func (l *loader) kept(name string) bool { return l.keeps == nil || l.keeps(name) }

// pending is a tensor found and checked, not yet uploaded.
type pending struct {
	t    *Tensor
	data []byte
}

// find looks up the named tensor and checks its shape: cols is the row
// length (ggml ne[0]) and rows the number of rows (the product of the
// other dimensions).
func (l *loader) find(name string, cols, rows int) (pending, error) {
	ti, data, err := l.f.TensorData(name)
	if err != nil {
		return pending{}, err
	}
	r := 1
	for _, d := range ti.Dims[1:] {
		r *= int(d)
	}
	if int(ti.Dims[0]) != cols || r != rows {
		return pending{}, fmt.Errorf("tensor %q has shape %v, want [%d, %d]", name, ti.Dims, cols, rows)
	}
	return pending{&Tensor{Name: name, Type: ti.Type, Rows: r, Cols: cols, Size: uint64(len(data))}, data}, nil
}

// upload places tensors in one device buffer, in order, each at an offset
// the device can bind: tensors whose sizes keep that alignment end up back
// to back, which lets kernels read them as one (see joined).
func (l *loader) upload(ps []pending) error {
	ps = slices.DeleteFunc(slices.Clone(ps), func(p pending) bool { return !l.kept(p.t.Name) })
	if len(ps) == 0 {
		return nil
	}
	align := max(l.d.Info().MinStorageBufferOffsetAlignment, 4)
	if l.d.Info().Type == vk.CPU {
		align = max(align, 16) // packed matrices start on a texel
	}
	var size uint64
	for _, p := range ps {
		p.t.Off = size
		size += (p.t.Size + align - 1) / align * align
	}
	label := ps[0].t.Name
	if len(ps) > 1 {
		label += fmt.Sprintf(" and %d more", len(ps)-1)
	}
	buf, err := l.d.Alloc(vk.DeviceLocal, size, label)
	if err != nil {
		return fmt.Errorf("loading %s: %w", label, err)
	}
	l.bufs = append(l.bufs, buf)
	for _, p := range ps {
		p.t.Buf = buf
		if err := l.d.Write(p.t.Range(), p.data); err != nil {
			return fmt.Errorf("loading %s: %w", p.t.Name, err)
		}
		l.bytes += p.t.Size
		if l.progress != nil {
			l.progress(l.bytes)
		}
	}
	return nil
}

// pack converts a matrix to the layout the device's matrix kernels read,
// where that is not GGUF's (quantized types on CPU devices).
func (l *loader) pack(p *pending) error {
	info := l.d.Info()
	if p.t.Rows < 2 || !kernel.Packed(info, p.t.Type, p.t.Cols) || !l.kept(p.t.Name) {
		return nil
	}
	data, err := kernel.Pack(info, p.t.Type, p.t.Rows, p.t.Cols, p.data)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", p.t.Name, err)
	}
	p.data = data
	p.t.Size = uint64(len(data))
	p.t.Packed = true
	p.t.group = kernel.PackGroup(info, p.t.Type)
	return nil
}

// matrix returns t for use as a matrix (the output projection tied to the
// token embeddings): t itself, or where the device reads matrices of its
// type packed, a packed copy, uploaded now.
func (l *loader) matrix(t *Tensor) (*Tensor, error) {
	if t.Packed || t.Rows < 2 || !kernel.Packed(l.d.Info(), t.Type, t.Cols) {
		return t, nil
	}
	_, data, err := l.f.TensorData(t.Name)
	if err != nil {
		return nil, err
	}
	c := *t
	p := pending{t: &c, data: data}
	if err := l.pack(&p); err != nil {
		return nil, err
	}
	if err := l.upload([]pending{p}); err != nil {
		return nil, err
	}
	return p.t, nil
}

// splitRows loads the matrix name (rows of cols elements) as consecutive
// blocks of rows, one tensor each, uploaded back to back: a fused
// projection (Phi-3's attn_qkv, its gate and up in ffn_up) becomes the
// tensors the shared code reads, and joined still sees them as one.
func (l *loader) splitRows(name string, cols int, rows ...int) ([]*Tensor, error) {
	total := 0
	for _, r := range rows {
		total += r
	}
	whole, err := l.find(name, cols, total)
	if err != nil {
		return nil, err
	}
	rowBytes := len(whole.data) / total
	ps := make([]pending, len(rows))
	ts := make([]*Tensor, len(rows))
	at := 0
	for i, r := range rows {
		t := *whole.t
		t.Rows, t.Size = r, uint64(r*rowBytes)
		ps[i] = pending{&t, whole.data[at*rowBytes : (at+r)*rowBytes]}
		if err := l.pack(&ps[i]); err != nil {
			return nil, err
		}
		ts[i] = ps[i].t
		at += r
	}
	return ts, l.upload(ps)
}

// output returns the output projection: out, or when the model ties it
// to the token embeddings (out is nil), those for use as a matrix.
func (l *loader) output(out, embed *Tensor) (*Tensor, error) {
	if out != nil {
		return out, nil
	}
	if !l.kept("output.weight") {
		return embed, nil // another device computes the logits
	}
	return l.matrix(embed)
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
// config's dimensions. Fields with the same `join` tag are uploaded into
// one buffer in field order, so that one kernel can read them as one
// matrix (Q, K and V as one projection, gate and up as one). Untagged
// struct fields are bound as part of dst. Matrices are packed for the
// device's matrix kernels (see pack) unless the field's
// `layout` tag is "gguf" (the token embeddings, which the embedding kernel
// reads).
func (l *loader) bind(dst any, prefix string, c Config) error {
	b := binding{l: l, prefix: prefix, c: c, joins: map[string]int{}}
	if err := b.fields(reflect.ValueOf(dst).Elem()); err != nil {
		return err
	}
	for _, g := range b.groups {
		if err := l.upload(g); err != nil {
			return err
		}
	}
	return nil
}

// binding is one bind call's tensors, found and grouped for upload.
type binding struct {
	l      *loader
	prefix string
	c      Config
	groups [][]pending
	joins  map[string]int // join tag → index in groups
}

// fields binds the tagged fields of the struct v, and those of the
// untagged struct fields within it (weights that several architectures
// share, such as attnWeights), in field order.
func (b *binding) fields(v reflect.Value) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("gguf")
		if !ok {
			if f.Type.Kind() == reflect.Struct {
				if err := b.fields(v.Field(i)); err != nil {
					return err
				}
			}
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if !strings.Contains(name, ".") {
			name += ".weight"
		}
		name = b.prefix + name
		if _, present := b.l.f.Tensor(name); !present && opts == "optional" {
			continue
		}
		cols, rows, err := shapeOf(f.Tag.Get("shape"), b.c)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		p, err := b.l.find(name, cols, rows)
		if err != nil {
			return err
		}
		if f.Tag.Get("layout") != "gguf" {
			if err := b.l.pack(&p); err != nil {
				return err
			}
		}
		v.Field(i).Set(reflect.ValueOf(p.t))
		j, joinTag := f.Tag.Lookup("join")
		if gi, seen := b.joins[j]; joinTag && seen {
			b.groups[gi] = append(b.groups[gi], p)
			continue
		}
		if joinTag {
			b.joins[j] = len(b.groups)
		}
		b.groups = append(b.groups, []pending{p})
	}
	return nil
}

// tensorsOf lists the tensors in the struct that w points to: its
// exported *Tensor fields, and those in its exported struct and slice
// fields (the blocks; not the embedded modelEnds).
func tensorsOf(w any) []*Tensor {
	var ts []*Tensor
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if t, ok := v.Interface().(*Tensor); ok {
				if t != nil {
					ts = append(ts, t)
				}
			} else if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(w))
	return ts
}

// shapeOf evaluates a shape tag such as "dim,ffn" or "qdim".
func shapeOf(tag string, c Config) (cols, rows int, err error) {
	dims := map[string]int{
		"dim": c.Dim, "ffn": c.FFN, "vocab": c.Vocab, "1": 1,
		"qdim": c.Heads * c.HeadDim, "kvdim": c.KVHeads * c.HeadDim, "headdim": c.HeadDim, "ropehalf": c.RopeDim / 2,
		"ctx": c.TrainCtx, "types": c.TokenTypes,
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

// row loads row r of the matrix name (rows of cols elements) as an F32
// vector of its own, whatever the file's type: a row that a kernel adds
// to the activations (BERT's first segment embedding), where the matrix
// itself is never read.
func (l *loader) row(name string, cols, rows, r int) (*Tensor, error) {
	whole, err := l.find(name, cols, rows)
	if err != nil {
		return nil, err
	}
	if r < 0 || r >= rows {
		return nil, fmt.Errorf("tensor %q: row %d of %d", name, r, rows)
	}
	rowBytes := len(whole.data) / rows
	v := make([]float32, cols)
	if err := gguf.Dequantize(whole.t.Type, whole.data[r*rowBytes:(r+1)*rowBytes], v); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	t := &Tensor{Name: fmt.Sprintf("%s[%d]", name, r), Type: gguf.F32, Rows: 1, Cols: cols, Size: uint64(4 * cols)}
	if err := l.upload([]pending{{t, f32Bytes(v)}}); err != nil {
		return nil, err
	}
	return t, nil
}
