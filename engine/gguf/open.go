package gguf

import (
	"bytes"
	"fmt"
	"os"
)

// Open reads the GGUF file at path and maps its tensor data into memory.
// It refuses a file holding a tensor of a type this version does not load,
// so that a model fails at once rather than halfway through loading; use
// OpenWith and Options.AllowUnsupported to list such a file instead.
func Open(path string) (*File, error) { return OpenWith(path, Options{}) }

// OpenWith is Open with options.
func OpenWith(path string, o Options) (*File, error) {
	f, err := openOne(path, o)
	if err != nil {
		return nil, err
	}
	if err := f.openParts(path, o); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openOne opens one file.
func openOne(path string, o Options) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fd.Close() // the mapping outlives the descriptor
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("gguf: %s is not a regular file", path)
	}
	m, unmap, err := mapFile(fd, st.Size())
	if err != nil {
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	f, err := parse(bytes.NewReader(m), int64(len(m)), o)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	if f.DataOffset < uint64(len(m)) {
		f.data = m[f.DataOffset:]
	}
	f.unmap = []func() error{unmap}
	return f, nil
}
