//go:build unix

package gguf

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps the file read-only, so tensor data is paged in from the page
// cache on use and never copied into Go's heap.
func mapFile(fd *os.File, size int64) ([]byte, func() error, error) {
	if size == 0 { // mmap refuses empty mappings; the parser reports the file as too short
		return nil, func() error { return nil }, nil
	}
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("file of %d bytes is too large to map", size)
	}
	m, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return m, func() error { return unix.Munmap(m) }, nil
}
