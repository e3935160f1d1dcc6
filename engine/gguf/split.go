package gguf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
)

// A split model is the files llama.cpp's gguf-split writes:
// NAME-00001-of-00003.gguf and so on. Every file carries split.no (its
// index from 0), split.count and split.tensors.count (the tensors of all
// files); the first also holds all the model's metadata, and each file
// its own tensors and their data. Open reads the first file's name and
// maps the others beside it, so that a split model loads as one File.

// Split metadata keys.
const (
	KeySplitNo      = "split.no"
	KeySplitCount   = "split.count"
	KeySplitTensors = "split.tensors.count"
)

// splitName matches a part's file name; its groups are the common prefix,
// the part's number and the count.
var splitName = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.gguf$`)

// SplitPath is the path of part i (from 0) of the n parts of a split
// model whose names begin with prefix, as gguf-split names them.
func SplitPath(prefix string, i, n int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, i+1, n)
}

// SplitParts lists the paths of all the parts of the split model whose
// part path is, or nil when the name is not a part's.
func SplitParts(path string) []string {
	m := splitName.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return nil
	}
	var n int
	fmt.Sscan(m[3], &n)
	prefix := filepath.Join(filepath.Dir(path), m[1])
	out := make([]string, n)
	for i := range out {
		out[i] = SplitPath(prefix, i, n)
	}
	return out
}

// openParts opens the other files of a split model whose first file f was
// opened from path, and takes their tensors in.
func (f *File) openParts(path string, o Options) error {
	count, ok := f.Uint(KeySplitCount)
	if !ok || count <= 1 {
		return nil
	}
	if no, _ := f.Uint(KeySplitNo); no != 0 {
		return fmt.Errorf("gguf: %s is part %d of %d of a split model: open the first part (…-00001-of-%05d.gguf)", path, no+1, count, count)
	}
	parts := SplitParts(path)
	if len(parts) != int(count) {
		return fmt.Errorf("gguf: %s is the first of %d parts of a split model, but its name does not end in -00001-of-%05d.gguf, so the other parts cannot be found", path, count, count)
	}
	for i, p := range parts[1:] {
		part, err := openOne(p, o)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("gguf: part %d of %d of the split model %s is missing: %s", i+2, count, path, p)
		}
		if err != nil {
			return err
		}
		f.unmap = append(f.unmap, part.unmap...)
		part.unmap = nil
		no, _ := part.Uint(KeySplitNo)
		if c, _ := part.Uint(KeySplitCount); no != uint64(i+1) || c != count {
			return fmt.Errorf("gguf: %s says it is part %d of %d, want part %d of %d", p, no+1, c, i+2, count)
		}
		f.parts = append(f.parts, part.data)
		for _, ti := range part.Tensors {
			if _, dup := f.tIndex[ti.Name]; dup {
				return fmt.Errorf("gguf: tensor %q is in two parts of the split model (again in %s)", ti.Name, p)
			}
			ti.part = len(f.parts)
			f.tIndex[ti.Name] = len(f.Tensors)
			f.Tensors = append(f.Tensors, ti)
		}
	}
	if want, ok := f.Uint(KeySplitTensors); ok && want != uint64(len(f.Tensors)) {
		return fmt.Errorf("gguf: the split model %s should hold %d tensors, its %d parts hold %d", path, want, count, len(f.Tensors))
	}
	return nil
}

// WriteSplit writes a model of kv and tensors as n files named as
// SplitPath(prefix, i, n) names them, as gguf-split does: the tensors in
// order, in n runs of about equal counts; all of kv in the first file;
// the split keys in every file. It returns the paths.
func WriteSplit(prefix string, kv []KV, tensors []TensorData, n int) ([]string, error) {
	if n < 1 || n > len(tensors) {
		return nil, fmt.Errorf("gguf: %d tensors cannot be split into %d files", len(tensors), n)
	}
	var paths []string
	for i := range n {
		lo, hi := i*len(tensors)/n, (i+1)*len(tensors)/n
		meta := []KV{{Key: KeySplitNo, Value: uint16(i)}, {Key: KeySplitCount, Value: uint16(n)}, {Key: KeySplitTensors, Value: int32(len(tensors))}}
		if i == 0 {
			meta = append(slices.Clone(kv), meta...)
		}
		p := SplitPath(prefix, i, n)
		if err := writeFile(p, meta, tensors[lo:hi]); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func writeFile(path string, kv []KV, tensors []TensorData) error {
	w, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err := Write(w, kv, tensors); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
