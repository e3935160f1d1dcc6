package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"headinfer/engine"
	"headinfer/engine/snapshot"
)

// promptCache is generate's --prompt-cache: a KV snapshot of the last
// prompt, as llama.cpp's option of that name keeps one.
type promptCache struct {
	path string // "" when the option is not given
	log  io.Writer
}

// load restores the KV of the longest prefix of ids the cache file holds
// and returns its length. A missing file is the first run; a file that
// cannot be used (another model, damaged, a newer format) is reported and
// the whole prompt is prefilled.
func (pc promptCache) load(m *engine.Model, se *engine.Session, ids []int32) int {
	if pc.path == "" {
		return 0
	}
	n, err := snapshot.LoadPrefix(pc.path, se, m.Identity(), ids)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		fmt.Fprintf(pc.log, "headinfer: --prompt-cache not used, prefilling the whole prompt: %v\n", err)
	case n > 0:
		fmt.Fprintf(pc.log, "headinfer: --prompt-cache: the KV of %d of the prompt's %d tokens restored from %s\n", n, len(ids), pc.path)
	}
	return n
}

// save writes the KV of the prompt's n tokens to the cache file, unless
// it was loaded from there whole (all but the last token, which always
// runs).
func (pc promptCache) save(m *engine.Model, se *engine.Session, n, cached int) {
	if pc.path == "" || cached >= n-1 {
		return
	}
	if err := snapshot.SaveFile(pc.path, se, m.Identity(), n); err != nil {
		fmt.Fprintf(pc.log, "headinfer: --prompt-cache: %v\n", err)
	}
}
