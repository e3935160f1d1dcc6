//go:build unix

package snapshot

import (
	"errors"
	"syscall"
)

// openFlags open a snapshot without following a symbolic link in the
// path's last element (the open fails with ELOOP instead) and without
// blocking on a FIFO or a device, which the regular-file check then
// refuses.
const openFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// isLinkError reports whether err is the refusal of O_NOFOLLOW.
func isLinkError(err error) bool { return errors.Is(err, syscall.ELOOP) }
