// Package gguf reads and writes GGUF model files (versions 2 and 3): the
// metadata, the tensor directory, and the tensor data, which Open maps into
// memory rather than copying.
//
// The reader trusts nothing in a file: every count and length is checked
// against the bytes left before anything is allocated, tensor data must be
// aligned, inside the file and not overlapping, and errors name the byte
// offset of the bad field (FormatError).
//
// Open refuses a file that holds a tensor of a type this engine cannot
// compute with (anything but SupportedTypes), naming the
// tensor and its type, so that loading fails before any work is done.
// Options.AllowUnsupported lets a tool list such a file; CheckTypes and
// TensorData then report the unsupported tensors when asked.
package gguf

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// File is a parsed GGUF file. Its tensor data stays valid until Close.
type File struct {
	Version    uint32       // 2 or 3
	KV         []KV         // metadata in file order
	Tensors    []TensorInfo // tensor directory in file order
	Alignment  uint64       // general.alignment, or 32 when absent
	DataOffset uint64       // file offset of the tensor data section

	kvIndex map[string]int
	tIndex  map[string]int
	data    []byte         // the data section: mapped by Open, copied by Parse
	parts   [][]byte       // the data sections of a split model's later files (see split.go)
	unmap   []func() error // release the mappings
}

// TensorInfo describes one tensor. Dims are in ggml order: Dims[0] is the
// contiguous (row) dimension.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   Type
	Offset uint64 // from the start of the data section (of its part's file, in a split model)

	part int // which file of a split model holds the data: 0 the first
}

// Options change what Open and Parse accept.
type Options struct {
	// AllowUnsupported admits tensors of types this engine cannot compute
	// with (for listing a file's contents). Their data is not checked or
	// reachable through Data; TensorData and CheckTypes report them.
	AllowUnsupported bool
}

// FormatError reports a malformed file: what is wrong and at which byte.
type FormatError struct {
	Offset  int64  // byte offset in the file of the offending field
	Context string // the part of the file being read, e.g. `key "general.name"`
	Msg     string
}

// Error gives the offset, the context and the problem in one line.
func (e *FormatError) Error() string {
	return fmt.Sprintf("malformed GGUF at byte %d (%s): %s", e.Offset, e.Context, e.Msg)
}

const (
	defaultAlignment = 32
	alignmentKey     = "general.alignment"
	maxDims          = 4
	maxNesting       = 16 // arrays of arrays; real files use none
	minKVBytes       = 8 + 4 + 1
	minTensorBytes   = 8 + 4 + 4 + 8
)

// Elements is the number of elements in the tensor. For a TensorInfo read
// from a file it cannot overflow: the reader checks that.
func (ti TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range ti.Dims {
		n *= d
	}
	return n
}

// Bytes is the size of the tensor's data, or 0 for a type this package
// cannot size (see Type.Supported).
func (ti TensorInfo) Bytes() uint64 {
	n, err := ti.size()
	if err != nil {
		return 0
	}
	return n
}

// size computes the data size, refusing shapes whose size overflows or that
// do not split into whole blocks.
func (ti TensorInfo) size() (uint64, error) {
	if !ti.Type.Supported() {
		return 0, unsupported(ti)
	}
	n := uint64(1)
	for _, d := range ti.Dims {
		hi, lo := bits.Mul64(n, d)
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("dimensions %v overflow the element count", ti.Dims)
		}
		n = lo
	}
	bs := uint64(ti.Type.BlockSize())
	row := n
	if len(ti.Dims) > 0 {
		row = ti.Dims[0]
	}
	if row%bs != 0 {
		return 0, fmt.Errorf("row of %d elements is not a whole number of %v blocks of %d", row, ti.Type, bs)
	}
	return n / bs * uint64(ti.Type.BlockBytes()), nil // < 2^62 * 34/32: no overflow
}

func unsupported(ti TensorInfo) error {
	return fmt.Errorf("tensor %q has type %v, which this version does not load (supported: %s)", ti.Name, ti.Type, SupportedNames())
}

// Tensor finds a tensor by name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// Data returns the bytes of one of this file's tensors: for Open, a slice
// of the mapped file, valid until Close. It is nil for an unsupported type,
// for a range outside the data section, and after Close.
func (f *File) Data(ti *TensorInfo) []byte {
	data := f.data
	if ti.part > 0 {
		if ti.part > len(f.parts) {
			return nil
		}
		data = f.parts[ti.part-1]
	}
	n, err := ti.size()
	if err != nil || ti.Offset > uint64(len(data)) || n > uint64(len(data))-ti.Offset {
		return nil
	}
	end := ti.Offset + n
	return data[ti.Offset:end:end]
}

// TensorData finds a tensor and returns its data, or an error naming the
// tensor when it is missing or of a type this version does not load.
func (f *File) TensorData(name string) (*TensorInfo, []byte, error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("gguf: the model has no tensor %q", name)
	}
	if !ti.Type.Supported() {
		return nil, nil, fmt.Errorf("gguf: %w", unsupported(*ti))
	}
	if f.data == nil && ti.Bytes() > 0 {
		return nil, nil, fmt.Errorf("gguf: tensor %q: file is closed", name)
	}
	return ti, f.Data(ti), nil
}

// AllTensorData is every tensor with its data, in file order: what Write
// or WriteSplit takes to write the model again (with other metadata, or
// in parts). The data are Data's slices, valid until Close.
func (f *File) AllTensorData() []TensorData {
	out := make([]TensorData, len(f.Tensors))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		out[i] = TensorData{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: f.Data(ti)}
	}
	return out
}

// CheckTypes reports the first tensor whose type this version does not
// load. It matters only for files opened with AllowUnsupported.
func (f *File) CheckTypes() error {
	for _, ti := range f.Tensors {
		if !ti.Type.Supported() {
			return fmt.Errorf("gguf: %w", unsupported(ti))
		}
	}
	return nil
}

// Close releases the tensor data; slices from Data must not be used after.
func (f *File) Close() error {
	f.data, f.parts = nil, nil
	var err error
	for _, unmap := range f.unmap {
		err = errors.Join(err, unmap())
	}
	f.unmap = nil
	return err
}

// Parse reads a GGUF file of size bytes from r, refusing unsupported tensor
// types. It copies the tensor data into memory; use Open for model files.
func Parse(r io.ReaderAt, size int64) (*File, error) { return ParseWith(r, size, Options{}) }

// ParseWith is Parse with options.
func ParseWith(r io.ReaderAt, size int64, o Options) (*File, error) {
	f, err := parse(r, size, o)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if f.DataOffset < uint64(size) {
		f.data = make([]byte, uint64(size)-f.DataOffset)
		if n, err := r.ReadAt(f.data, int64(f.DataOffset)); n < len(f.data) {
			return nil, fmt.Errorf("gguf: reading tensor data at byte %d: %w", f.DataOffset, err)
		}
	}
	return f, nil
}

// parse reads the header and tensor directory and checks the directory
// against the file's size; it does not touch the tensor data.
func parse(r io.ReaderAt, size int64, o Options) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("negative file size %d", size)
	}
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), int(min(size, 64<<10))), size: size, ctx: "header"}
	var magic [4]byte
	d.read(magic[:], "the magic number")
	if d.err == nil && string(magic[:]) != "GGUF" {
		d.fail(0, `magic is %q, want "GGUF": not a GGUF file`, magic[:])
	}
	f := &File{Version: d.u32("the version"), Alignment: defaultAlignment}
	if d.err == nil && f.Version != 2 && f.Version != 3 {
		hint := "this reader handles versions 2 and 3"
		if v := bits.ReverseBytes32(f.Version); v == 2 || v == 3 {
			hint = "this looks like a big-endian file, which is not supported"
		}
		d.fail(4, "unsupported GGUF version %d: %s", f.Version, hint)
	}
	nTensors := d.u64("the tensor count")
	nKV := d.u64("the key-value count")
	// Bounding the counts by the bytes left keeps a forged count from
	// allocating more than a small multiple of the file's size.
	if d.err == nil && nKV > d.left()/minKVBytes {
		d.fail(16, "%d key-value pairs cannot fit in the %d bytes left", nKV, d.left())
	}
	if d.err == nil && nTensors > d.left()/minTensorBytes {
		d.fail(8, "%d tensors cannot fit in the %d bytes left", nTensors, d.left())
	}
	if d.err != nil {
		return nil, d.err
	}
	if err := f.readKV(d, int(nKV)); err != nil {
		return nil, err
	}
	infoAt, err := f.readTensorInfos(d, int(nTensors))
	if err != nil {
		return nil, err
	}
	f.DataOffset = alignUp(uint64(d.off), f.Alignment)
	if err := f.checkTensors(infoAt, uint64(size), o); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) readKV(d *decoder, n int) error {
	f.KV = make([]KV, 0, n)
	f.kvIndex = make(map[string]int, n)
	for i := range n {
		at := d.off
		d.ctx = fmt.Sprintf("key-value pair %d", i)
		key := d.str("the key")
		d.ctx = fmt.Sprintf("key %.64q", key)
		v := d.value(valueType(d.u32("the value type")), 0)
		if d.err != nil {
			return d.err
		}
		if j, dup := f.kvIndex[key]; dup {
			return &FormatError{at, d.ctx, fmt.Sprintf("duplicate key (pair %d has it too)", j)}
		}
		if key == alignmentKey {
			a, err := alignmentOf(v)
			if err != nil {
				return &FormatError{at, d.ctx, err.Error()}
			}
			f.Alignment = a
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{key, v})
	}
	return nil
}

// readTensorInfos reads the tensor directory and returns where each entry
// starts, for error messages.
func (f *File) readTensorInfos(d *decoder, n int) ([]int64, error) {
	f.Tensors = make([]TensorInfo, 0, n)
	f.tIndex = make(map[string]int, n)
	infoAt := make([]int64, n)
	for i := range n {
		infoAt[i] = d.off
		d.ctx = fmt.Sprintf("tensor info %d", i)
		ti := TensorInfo{Name: d.str("the tensor name")}
		d.ctx = fmt.Sprintf("tensor %.64q", ti.Name)
		nd := d.u32("the dimension count")
		if d.err == nil && nd > maxDims {
			d.fail(d.off-4, "%d dimensions, at most %d are allowed", nd, maxDims)
		}
		if d.err != nil {
			return nil, d.err
		}
		ti.Dims = make([]uint64, nd)
		for j := range ti.Dims {
			ti.Dims[j] = d.u64("a dimension")
		}
		ti.Type = Type(d.u32("the tensor type"))
		ti.Offset = d.u64("the data offset")
		if d.err != nil {
			return nil, d.err
		}
		if j, dup := f.tIndex[ti.Name]; dup {
			return nil, &FormatError{infoAt[i], d.ctx, fmt.Sprintf("duplicate tensor name (tensor %d has it too)", j)}
		}
		f.tIndex[ti.Name] = i
		f.Tensors = append(f.Tensors, ti)
	}
	return infoAt, nil
}

// alignmentOf validates a general.alignment value.
func alignmentOf(v any) (uint64, error) {
	var a uint32
	if err := convert(v, &a); err != nil {
		return 0, fmt.Errorf("key %q holds %s, %v", alignmentKey, describe(v), err)
	}
	if a == 0 || a&(a-1) != 0 {
		return 0, fmt.Errorf("key %q is %d, want a power of two", alignmentKey, a)
	}
	return uint64(a), nil
}

// checkTensors checks that every tensor's data is aligned, lies inside the
// file, and overlaps no other tensor's.
func (f *File) checkTensors(infoAt []int64, size uint64, o Options) error {
	var avail uint64 // bytes in the data section
	if f.DataOffset < size {
		avail = size - f.DataOffset
	}
	type span struct {
		start, end uint64
		i          int
	}
	spans := make([]span, 0, len(f.Tensors))
	for i, ti := range f.Tensors {
		bad := func(format string, args ...any) error {
			return &FormatError{infoAt[i], fmt.Sprintf("tensor %.64q", ti.Name), fmt.Sprintf(format, args...)}
		}
		if !ti.Type.Supported() && !o.AllowUnsupported {
			return unsupported(ti)
		}
		if ti.Offset%f.Alignment != 0 {
			return bad("data offset %d is not a multiple of the alignment %d", ti.Offset, f.Alignment)
		}
		if ti.Offset > avail {
			return bad("data offset %d is past the end of the %d-byte data section at byte %d (file truncated?)", ti.Offset, avail, f.DataOffset)
		}
		if !ti.Type.Supported() {
			continue // size unknown
		}
		n, err := ti.size()
		if err != nil {
			return bad("%v", err)
		}
		if n > avail-ti.Offset {
			return bad("%d bytes of data at offset %d run past the end of the %d-byte data section at byte %d (file truncated?)", n, ti.Offset, avail, f.DataOffset)
		}
		if n > 0 {
			spans = append(spans, span{ti.Offset, ti.Offset + n, i})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	for k := 1; k < len(spans); k++ {
		if prev, cur := spans[k-1], spans[k]; cur.start < prev.end {
			name := f.Tensors[cur.i].Name
			return &FormatError{infoAt[cur.i], fmt.Sprintf("tensor %.64q", name),
				fmt.Sprintf("data [%d, %d) overlaps tensor %.64q's data [%d, %d)", cur.start, cur.end, f.Tensors[prev.i].Name, prev.start, prev.end)}
		}
	}
	return nil
}
