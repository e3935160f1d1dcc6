//go:build !unix

package gguf

import (
	"io"
	"os"
)

// mapFile reads the whole file where mmap is unavailable.
func mapFile(fd *os.File, size int64) ([]byte, func() error, error) {
	m := make([]byte, size)
	if _, err := io.ReadFull(fd, m); err != nil {
		return nil, nil, err
	}
	return m, func() error { return nil }, nil
}
