//go:build linux || darwin || freebsd

package hub

import (
	"os"

	"golang.org/x/sys/unix"
)

// freeSpace is the bytes an unprivileged process may still write under dir.
func freeSpace(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// lockFile takes an exclusive lock on f, held until it is closed, so that
// two pulls of one file do not write the same partial file.
func lockFile(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}
