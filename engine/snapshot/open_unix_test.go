//go:build unix

package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestOnlyRegularFiles checks that loading reads regular files only: a
// symbolic link, to a snapshot or to anything else, a directory and a
// FIFO are refused at once and leave the session as it was; a file that
// is not a snapshot is refused without a byte of it in the error; and a
// save over a link replaces the link, leaving its target alone.
func TestOnlyRegularFiles(t *testing.T) {
	m, prompt, _, se := primed(t, 1)
	id := m.Identity()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.snap")
	if err := SaveFile(good, se, id, len(prompt)); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret.txt")
	const secretText = "SECRET-first-line: root:x:0:0\n"
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo.snap")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	notSnap := filepath.Join(dir, "text.snap")
	if err := os.WriteFile(notSnap, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub.snap")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, path string
		want       error
		keeps      bool // the session keeps what it held
	}{
		{"link to a snapshot", link("tosnap.snap", good), ErrNotRegular, true},
		{"link to another file", link("tosecret.snap", secret), ErrNotRegular, true},
		{"dangling link", link("dangling.snap", filepath.Join(dir, "nowhere")), ErrNotRegular, true},
		{"directory", sub, ErrNotRegular, true},
		{"FIFO", fifo, ErrNotRegular, true},
		{"not a snapshot", notSnap, ErrNotSnapshot, false},
	} {
		held := slices.Clone(se.Tokens())
		n, err := LoadFile(c.path, se, id)
		if !errors.Is(err, c.want) || n != 0 {
			t.Errorf("%s: %d positions, error %v, want %v", c.name, n, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "root:")) {
			t.Errorf("%s: the error quotes the file: %v", c.name, err)
		}
		if got := se.Tokens(); c.keeps != slices.Equal(got, held) {
			t.Errorf("%s: the session holds %d tokens after the refusal, %d before", c.name, len(got), len(held))
		}
		if _, err := ReadTokens(c.path, se, id); !errors.Is(err, c.want) {
			t.Errorf("%s: ReadTokens error %v, want %v", c.name, err, c.want)
		}
		if _, err := LoadFile(good, se, id); err != nil { // for the next case to keep
			t.Fatal(err)
		}
	}
	if _, err := LoadFile(notSnap, se, id); err == nil || !strings.Contains(err.Error(), "bad magic") {
		t.Errorf("a text file: error %v, want one that says bad magic", err)
	}

	// A save over a link replaces the link and never writes through it.
	over := link("over.snap", secret)
	if _, err := LoadFile(good, se, id); err != nil {
		t.Fatal(err)
	}
	if err := SaveFile(over, se, id, len(se.Tokens())); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != secretText {
		t.Errorf("the link's target changed: %q, %v", b, err)
	}
	if fi, err := os.Lstat(over); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("after a save over a link: %v, %v; want a regular file", fi, err)
	}
	if n, err := LoadFile(over, se, id); err != nil || n != len(prompt) {
		t.Errorf("the snapshot saved over a link: %d positions, %v", n, err)
	}
}
