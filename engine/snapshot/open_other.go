//go:build !unix

package snapshot

// openFlags: without O_NOFOLLOW, openFile's check of the path with Lstat
// against the opened file refuses links.
const openFlags = 0

func isLinkError(error) bool { return false }
