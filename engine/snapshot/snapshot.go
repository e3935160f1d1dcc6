// Package snapshot saves a session's KV cache to a file and loads it
// back, so that a prompt's prefill can be skipped when the same prompt
// (or one that begins with it) comes again: `generate --prompt-cache`
// and the server's --kv-cache-dir use it.
//
// A snapshot is a small header and a zstd stream:
//
//	offset size
//	0      8    magic "HIKVSNAP"
//	8      4    format version (2; 1 is read too)
//	12     4    flags: bit 0 = the slots are split into byte planes;
//	            bit 1 = the sliding-window layers' slots hold only their
//	            last window of positions (engine.KVLayout.Windows: the
//	            session's rings), the others all n
//	16     32   model identity (engine.Model.Identity)
//	48     4    KV element types (GGUF type numbers: 0 F32, 1 F16, 8 Q8_0,
//	            2 Q4_0): the keys' in bits 0–15, the values' in bits
//	            16–31 (version 1: one type for both, the whole field)
//	52     4    positions n
//	56     4    layers
//	60     4    KV heads
//	64     4    head dim
//	68     4    CRC-32 (IEEE) of bytes 0–67
//	72     …    zstd frame with its content checksum: the n token ids
//	            (uint32), then every slot in the order of engine.KVLayout
//	            (layer-major, K then V per KV head), in groups of
//	            consecutive slots: a group takes the next slot while it
//	            stays within 2^20 bytes, and always one
//
// All integers are little-endian. With byte planes, a group's elements
// are stored as their first bytes, then their second bytes, and so on:
// the high byte of an f16 value (sign, exponent, two mantissa bits) is
// more regular than its low byte, and zstd compresses the two better
// apart than interleaved (BENCHMARKS.md has the ratios). Q8_0 and Q4_0
// slots, and K and V of different types, are stored as they are (planes
// of one byte): their blocks are already packed.
//
// Loading trusts nothing: a file of another model, another geometry, a
// newer version, a truncated or a corrupt one is refused with an error
// that wraps one of the Err values below, and the session is then left
// empty, never holding partly written KV. Only a regular file is read,
// never the target of a symbolic link (a link planted in a server's cache
// directory must not make it read another file), and no error quotes
// the file's bytes.
package snapshot

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"headinfer/engine"
	"headinfer/engine/gguf"
)

// Version is the format version this package writes and the newest it
// reads.
const Version = 2

const (
	magic      = "HIKVSNAP"
	headerSize = 72
	flagPlanes = 1 << 0
	flagRings  = 1 << 1
)

// Errors a load can wrap.
var (
	ErrNotSnapshot = errors.New("not a headinfer KV snapshot")
	ErrNotRegular  = errors.New("not a regular file")
	ErrVersion     = errors.New("snapshot format version not supported")
	ErrOtherModel  = errors.New("snapshot of another model")
	ErrGeometry    = errors.New("snapshot geometry differs from the session's")
	ErrTruncated   = errors.New("snapshot is truncated")
	ErrCorrupt     = errors.New("snapshot is corrupt")
)

// Header is what a snapshot says about itself.
type Header struct {
	Version   uint32
	Planes    bool      // slots split into byte planes
	Rings     bool      // sliding-window layers hold their last window only
	Identity  [32]byte  // engine.Model.Identity of the model that made it
	Type      gguf.Type // the keys' element type
	TypeV     gguf.Type // the values'
	Positions int
	Layers    int
	KVHeads   int
	HeadDim   int
}

// Options change how Write compresses.
type Options struct {
	// NoPlanes stores elements as they are instead of in byte planes
	// (for measuring what the planes gain).
	NoPlanes bool
	// Level is the zstd level (default zstd.SpeedBetterCompression: on
	// byte planes it gains more over SpeedDefault than on interleaved
	// bytes, at about the same speed; see BENCHMARKS.md).
	Level zstd.EncoderLevel
}

// Write writes the KV of the session's first n positions, with their
// token ids, as a snapshot of the model whose identity is id.
func Write(w io.Writer, se *engine.Session, id [32]byte, n int, opt Options) error {
	tokens := se.Tokens()
	if n < 0 || n > len(tokens) {
		return fmt.Errorf("snapshot of %d positions: the session holds %d", n, len(tokens))
	}
	g := se.KVLayout()
	h := Header{Version: Version, Planes: !opt.NoPlanes, Rings: g.Windows != nil, Identity: id, Type: g.Type, TypeV: g.TypeV, Positions: n,
		Layers: g.Layers, KVHeads: g.KVHeads, HeadDim: g.HeadDim}
	if _, err := w.Write(h.encode()); err != nil {
		return err
	}
	level := opt.Level
	if level == 0 {
		level = zstd.SpeedBetterCompression
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(true))
	if err != nil {
		return err
	}
	ids := make([]byte, 4*n)
	for i, t := range tokens[:n] {
		binary.LittleEndian.PutUint32(ids[4*i:], uint32(t))
	}
	if _, err := zw.Write(ids); err != nil {
		zw.Close()
		return err
	}
	elem := elemBytes(g)
	sizes := slotSizes(g, n)
	ends, i := groupEnds(sizes), 0 // i: the slot ExportKV gives next
	var group, planes []byte
	err = se.ExportKV(n, func(slot []byte) error {
		group = append(group, slot...)
		if i++; i < ends[0] {
			return nil
		}
		ends = ends[1:]
		out := group
		if h.Planes {
			planes = split(planes, group, elem)
			out = planes
		}
		group = group[:0]
		_, err := zw.Write(out)
		return err
	})
	if err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// Reader reads a snapshot: NewReader reads and checks the header and the
// token ids, Import then loads the KV into a session.
type Reader struct {
	Header Header
	Tokens []int32
	zr     *zstd.Decoder
}

// NewReader reads the header and the token ids of a snapshot and checks
// that it is one this package reads, of the model whose identity is id
// and of the session's geometry. The caller must Close the Reader.
func NewReader(r io.Reader, se *engine.Session, id [32]byte) (*Reader, error) {
	var b [headerSize]byte
	if n, err := io.ReadFull(r, b[:]); err != nil {
		if n >= len(magic) && string(b[:len(magic)]) == magic {
			return nil, fmt.Errorf("%w: %d header bytes of %d", ErrTruncated, n, headerSize)
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: the file is empty", ErrNotSnapshot)
		}
		return nil, fmt.Errorf("%w: bad magic", ErrNotSnapshot)
	}
	h, err := decodeHeader(b[:])
	if err != nil {
		return nil, err
	}
	if h.Identity != id {
		return nil, fmt.Errorf("%w: the model identity in its header is not this model's", ErrOtherModel)
	}
	g := se.KVLayout()
	if h.Type != g.Type || h.TypeV != g.TypeV {
		return nil, fmt.Errorf("%w: it holds %v keys and %v values, the session %v keys and %v values (pass the --kv-type-k and --kv-type-v it was made with)",
			ErrGeometry, h.Type, h.TypeV, g.Type, g.TypeV)
	}
	if h.Layers != g.Layers || h.KVHeads != g.KVHeads || h.HeadDim != g.HeadDim {
		return nil, fmt.Errorf("%w: it holds KV of %d layers × %d KV heads × %d, the session KV of %d × %d × %d",
			ErrGeometry, h.Layers, h.KVHeads, h.HeadDim, g.Layers, g.KVHeads, g.HeadDim)
	}
	if rings := g.Windows != nil; h.Rings != rings {
		return nil, fmt.Errorf("%w: it holds the sliding-window layers' %s, the session keeps %s (pass --swa-full as it was made, or not)",
			ErrGeometry, ringWords(h.Rings), ringWords(rings))
	}
	if h.Positions > g.Ctx {
		return nil, fmt.Errorf("%w: it holds %d positions, the context %d (pass a larger --ctx-size)", ErrGeometry, h.Positions, g.Ctx)
	}
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<40))
	if err != nil {
		return nil, err
	}
	sr := &Reader{Header: h, zr: zr}
	ids := make([]byte, 4*h.Positions)
	if err := sr.read(ids); err != nil {
		zr.Close()
		return nil, err
	}
	sr.Tokens = make([]int32, h.Positions)
	for i := range sr.Tokens {
		sr.Tokens[i] = int32(binary.LittleEndian.Uint32(ids[4*i:]))
	}
	return sr, nil
}

// Import loads the snapshot's KV into se, which then holds its tokens.
// The stream's checksum is checked before the last slot is written; on
// any error se is left empty.
func (sr *Reader) Import(se *engine.Session) error {
	g := se.KVLayout()
	elem := elemBytes(g)
	sizes := slotSizes(g, sr.Header.Positions)
	ends := groupEnds(sizes)
	i, left := 0, len(sizes) // the slot ImportKV asks for next; slots left
	var group, planes []byte // the group being handed out, slot by slot
	return se.ImportKV(sr.Tokens, func(slot []byte) error {
		if i == 0 || i == ends[0] {
			if i > 0 {
				ends = ends[1:]
			}
			group = grow(group, sum(sizes[i:ends[0]]))
			dst := group
			if sr.Header.Planes {
				planes = grow(planes, len(group))
				dst = planes
			}
			if err := sr.read(dst); err != nil {
				return err
			}
			if sr.Header.Planes {
				join(group, planes, elem)
			}
		}
		copy(slot, group[:sizes[i]])
		group = group[sizes[i]:]
		if i, left = i+1, left-1; left == 0 {
			// The frame's checksum is verified when its end is read.
			var extra [1]byte
			if n, err := sr.zr.Read(extra[:]); n > 0 || err != io.EOF {
				if n > 0 {
					return fmt.Errorf("%w: data after the last slot", ErrCorrupt)
				}
				return sr.wrap(err)
			}
		}
		return nil
	})
}

// groupBytes is about how many bytes of slots are split into byte planes
// together. zstd chooses its entropy tables per block (up to 128 KiB), so
// a plane must fill whole blocks for its regularity to pay: split slot by
// slot, small slots would mix high and low bytes in every block.
var groupBytes = 1 << 20 // a constant of the format; tests lower it

// slotSizes is the byte size of every slot of a snapshot of n
// positions, in KVLayout's order.
func slotSizes(g engine.KVLayout, n int) []int {
	sizes := make([]int, 0, g.Slots())
	for l := range g.Layers {
		for range g.KVHeads {
			sizes = append(sizes, g.SlotBytes(g.Positions(l, n), false), g.SlotBytes(g.Positions(l, n), true))
		}
	}
	return sizes
}

// groupEnds splits slots of the given sizes into groups: each takes the
// next slot while it stays within groupBytes, and at least one. It
// returns each group's end (the index after its last slot). With slots of
// one size s this is max(1, groupBytes/s) slots a group, the layout of
// snapshots without rings.
func groupEnds(sizes []int) []int {
	var ends []int
	for i, size := 0, 0; i < len(sizes); i++ {
		if i > 0 && size+sizes[i] > groupBytes {
			ends = append(ends, i)
			size = 0
		}
		size += sizes[i]
	}
	return append(ends, len(sizes))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// ringWords says what a snapshot or session keeps of the sliding-window
// layers.
func ringWords(rings bool) string {
	if rings {
		return "last windows only (rings)"
	}
	return "every position (--swa-full, or no sliding windows)"
}

// Close frees the decoder.
func (sr *Reader) Close() { sr.zr.Close() }

func (sr *Reader) read(p []byte) error {
	if _, err := io.ReadFull(sr.zr, p); err != nil {
		return sr.wrap(err)
	}
	return nil
}

// wrap names a decoding error as truncation or corruption.
func (sr *Reader) wrap(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func (h Header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	le := binary.LittleEndian
	le.PutUint32(b[8:], h.Version)
	var flags uint32
	if h.Planes {
		flags |= flagPlanes
	}
	if h.Rings {
		flags |= flagRings
	}
	le.PutUint32(b[12:], flags)
	copy(b[16:48], h.Identity[:])
	le.PutUint32(b[48:], uint32(h.Type)|uint32(h.TypeV)<<16)
	le.PutUint32(b[52:], uint32(h.Positions))
	le.PutUint32(b[56:], uint32(h.Layers))
	le.PutUint32(b[60:], uint32(h.KVHeads))
	le.PutUint32(b[64:], uint32(h.HeadDim))
	le.PutUint32(b[68:], crc32.ChecksumIEEE(b[:68]))
	return b
}

func decodeHeader(b []byte) (Header, error) {
	if string(b[:len(magic)]) != magic {
		// Never the bytes themselves: the file may be anything.
		return Header{}, fmt.Errorf("%w: bad magic", ErrNotSnapshot)
	}
	le := binary.LittleEndian
	h := Header{Version: le.Uint32(b[8:])}
	// The version comes before the checksum: a newer format may lay out
	// (and check) its header otherwise.
	if h.Version == 0 || h.Version > Version {
		return Header{}, fmt.Errorf("%w: the file is version %d, this build reads versions 1 to %d (a newer headinfer wrote it?)", ErrVersion, h.Version, Version)
	}
	if sum := le.Uint32(b[68:]); sum != crc32.ChecksumIEEE(b[:68]) {
		return Header{}, fmt.Errorf("%w: the header checksum does not match", ErrCorrupt)
	}
	flags := le.Uint32(b[12:])
	if flags&^(flagPlanes|flagRings) != 0 {
		return Header{}, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	h.Planes = flags&flagPlanes != 0
	h.Rings = flags&flagRings != 0
	copy(h.Identity[:], b[16:48])
	types := le.Uint32(b[48:])
	h.Type, h.TypeV = gguf.Type(types&0xffff), gguf.Type(types>>16)
	if h.Version == 1 {
		h.Type, h.TypeV = gguf.Type(types), gguf.Type(types)
	}
	for _, t := range []gguf.Type{h.Type, h.TypeV} {
		if t != gguf.F16 && t != gguf.F32 && t != gguf.Q8_0 && t != gguf.Q4_0 {
			return Header{}, fmt.Errorf("%w: KV type %v", ErrCorrupt, t)
		}
	}
	const most = 1 << 30 // far beyond any real geometry; bounds what a header can make us allocate
	vals := []*int{&h.Positions, &h.Layers, &h.KVHeads, &h.HeadDim}
	for i, p := range vals {
		v := le.Uint32(b[52+4*i:])
		if v > most || (i > 0 && v == 0) {
			return Header{}, fmt.Errorf("%w: header field %d is %d", ErrCorrupt, i, v)
		}
		*p = int(v)
	}
	return h, nil
}

// elemBytes is the element size whose byte planes a snapshot of g's
// slots stores: f16's or f32's, or 1 (no planes) for packed blocks and for
// K and V of different types, whose groups would mix element sizes.
func elemBytes(g engine.KVLayout) int {
	if g.Type != g.TypeV || g.Type.BlockSize() > 1 {
		return 1
	}
	return g.Type.BlockBytes()
}

// split lays out src's elements of elem bytes as byte planes in dst
// (grown as needed) and returns it.
func split(dst, src []byte, elem int) []byte {
	dst = grow(dst, len(src))
	n := len(src) / elem
	for b := range elem {
		plane := dst[b*n : (b+1)*n]
		for i := range plane {
			plane[i] = src[i*elem+b]
		}
	}
	return dst
}

// grow returns b resized to n bytes, reallocated when too small.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// join undoes split: the byte planes src become elements in dst.
func join(dst, src []byte, elem int) {
	n := len(src) / elem
	for b := range elem {
		plane := src[b*n : (b+1)*n]
		for i, v := range plane {
			dst[i*elem+b] = v
		}
	}
}

// SaveFile writes a snapshot of the session's first n positions to path,
// through a temporary file in the same directory that replaces path only
// once complete. The rename replaces whatever path names, a symbolic link
// included: a link is never written through.
func SaveFile(path string, se *engine.Session, id [32]byte, n int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err = Write(bw, se, id, n, Options{})
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("saving the KV snapshot %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// LoadPrefix loads the snapshot at path into se if its tokens and prompt
// begin alike, and keeps the KV of their common prefix (less the last
// prompt token, whose step must run to give the next token's logits). It
// returns how many prompt tokens se then holds: 0 when the snapshot
// shares nothing with prompt, or on error (se is then empty).
func LoadPrefix(path string, se *engine.Session, id [32]byte, prompt []int32) (int, error) {
	n := 0
	err := open(path, se, id, func(sr *Reader) bool {
		n = engine.PrefixLen(sr.Tokens, prompt)
		return n > 0
	})
	if err != nil || n == 0 {
		return 0, err
	}
	return se.Truncate(n), nil
}

// ReadTokens reads the token ids of the snapshot at path after checking
// its header against the session and the model identity id.
func ReadTokens(path string, se *engine.Session, id [32]byte) ([]int32, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sr, err := NewReader(bufio.NewReaderSize(f, 64<<10), se, id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sr.Close()
	return sr.Tokens, nil
}

// LoadFile loads the whole snapshot at path into se and returns the
// number of positions it held. On error se is left empty, except when
// the file cannot be opened: then se keeps what it held.
func LoadFile(path string, se *engine.Session, id [32]byte) (int, error) {
	n := 0
	err := open(path, se, id, func(sr *Reader) bool {
		n = len(sr.Tokens)
		return true
	})
	return n, err
}

// open reads the snapshot at path and imports it into se when use,
// shown its header and tokens, says so. A file that cannot be opened
// leaves se as it was; otherwise se is left empty unless the import
// succeeds. Errors name the file.
func open(path string, se *engine.Session, id [32]byte, use func(*Reader) bool) error {
	// A file that cannot be opened costs the session nothing: it keeps the
	// KV it holds.
	f, err := openFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	se.Reset()
	sr, err := NewReader(bufio.NewReaderSize(f, 1<<20), se, id)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer sr.Close()
	if !use(sr) {
		return nil
	}
	if err := sr.Import(se); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// openFile opens the file at path for reading if it is a regular file
// that path names directly: a symbolic link (even to a snapshot), a
// directory, a FIFO or a device is refused with an error that wraps
// ErrNotRegular. A missing file's error wraps fs.ErrNotExist.
func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if isLinkError(err) {
		return nil, fmt.Errorf("%s: %w: a symbolic link", path, ErrNotRegular)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: %w: %s", path, ErrNotRegular, kind(fi.Mode()))
	}
	if err == nil {
		// Where O_NOFOLLOW is missing: path must name the opened file itself.
		var li os.FileInfo
		if li, err = os.Lstat(path); err == nil && !os.SameFile(li, fi) {
			err = fmt.Errorf("%s: %w: a symbolic link", path, ErrNotRegular)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// kind names a file type other than regular.
func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}
