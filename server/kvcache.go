package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"headinfer/engine"
	"headinfer/engine/snapshot"
)

// prefixCache decides, before each generation, which KV the session
// starts from: the longest prefix of the prompt it still holds, or, with
// --kv-cache-dir, a longer one spilled to a snapshot file earlier. A
// sequence that a non-matching request is about to overwrite is spilled
// first. It is used only by whoever holds the session.
type prefixCache struct {
	dir     string // "" without --kv-cache-dir: reuse what the session holds, spill nothing
	off     bool   // reuse nothing: requests run as engine.Request.Fresh, prepare is never called
	id      [32]byte
	log     *slog.Logger
	metrics *metrics
	spilled []*spill // least recently used first
}

// spill is one sequence saved to dir.
type spill struct {
	name   string
	tokens []int32
}

// Spill limits: sequences shorter than minSpill tokens are cheaper to
// prefill again than to save; at most maxSpills files are kept in the
// directory, the least recently used removed first.
const (
	minSpill  = 16
	maxSpills = 32
	spillExt  = ".hikv"
)

// newPrefixCache returns the prefix cache of a session; with a directory
// it creates it if need be and indexes the sequences spilled there by an
// earlier run of this model, the maxSpills most recent (older ones are
// removed; other models' files are left alone).
func newPrefixCache(dir string, m *engine.Model, se *engine.Session, log *slog.Logger, mt *metrics) (*prefixCache, error) {
	pc := &prefixCache{dir: dir, log: log, metrics: mt}
	if dir == "" {
		return pc, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--kv-cache-dir: %w", err)
	}
	pc.id = m.Identity()
	files, err := filepath.Glob(filepath.Join(dir, "prefix-*"+spillExt))
	if err != nil {
		return nil, err
	}
	type found struct {
		spill
		at time.Time
	}
	var all []found
	for _, f := range files {
		// Lstat: a link in the directory is not a spill (ReadTokens
		// would refuse it too).
		st, err := os.Lstat(f)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		tokens, err := snapshot.ReadTokens(f, se, pc.id)
		if err != nil {
			log.Debug("not indexing a spilled KV sequence", "err", err)
			continue
		}
		all = append(all, found{spill{filepath.Base(f), tokens}, st.ModTime()})
	}
	slices.SortFunc(all, func(a, b found) int { return a.at.Compare(b.at) })
	for i, f := range all {
		pc.spilled = append(pc.spilled, &spill{f.name, f.tokens})
		if i < len(all)-maxSpills {
			pc.forget(len(pc.spilled)-1, true) // beyond the limit: the oldest go
		}
	}
	if len(pc.spilled) > 0 {
		log.Info("indexed spilled KV sequences", "dir", dir, "count", len(pc.spilled))
	}
	return pc, nil
}

// prepare leaves in se the longest prefix of prompt whose KV it can have
// (at most all but the last token) and returns its length: the tokens
// the caller need not prefill.
func (pc *prefixCache) prepare(se *engine.Session, prompt []int32) int {
	held := se.Reusable()
	keep := engine.PrefixLen(held, prompt)
	if pc.dir == "" {
		return se.ReusePrefix(prompt)
	}
	if keep < len(held) && len(held) >= minSpill {
		pc.save(se)
	}
	best, bestLen := -1, keep
	for i, sp := range pc.spilled {
		if n := engine.PrefixLen(sp.tokens, prompt); n > bestLen {
			best, bestLen = i, n
		}
	}
	if best < 0 {
		return se.ReusePrefix(prompt)
	}
	sp := pc.spilled[best]
	n, err := snapshot.LoadPrefix(filepath.Join(pc.dir, sp.name), se, pc.id, prompt)
	pc.metrics.snapshot("restore", err)
	if err != nil {
		// se is empty now: the prompt is prefilled whole.
		pc.log.Warn("restoring a spilled KV sequence failed; prefilling the prompt", "file", sp.name, "err", err)
		pc.forget(best, true)
		return 0
	}
	pc.touch(best)
	return n
}

// save spills the session's sequence, unless the same sequence is
// already in the directory.
func (pc *prefixCache) save(se *engine.Session) {
	tokens := se.Reusable()
	name := spillName(tokens)
	if i := slices.IndexFunc(pc.spilled, func(sp *spill) bool { return sp.name == name }); i >= 0 {
		pc.touch(i)
		return
	}
	err := snapshot.SaveFile(filepath.Join(pc.dir, name), se, pc.id, len(tokens))
	pc.metrics.snapshot("save", err)
	if err != nil {
		pc.log.Warn("spilling a KV sequence failed", "err", err)
		return
	}
	pc.spilled = append(pc.spilled, &spill{name: name, tokens: slices.Clone(tokens)})
	for len(pc.spilled) > maxSpills {
		pc.forget(0, true)
	}
}

// touch marks spill i as the most recently used.
func (pc *prefixCache) touch(i int) {
	sp := pc.spilled[i]
	pc.spilled = append(slices.Delete(pc.spilled, i, i+1), sp)
}

// forget drops spill i, removing its file too when remove is set.
func (pc *prefixCache) forget(i int, remove bool) {
	if remove {
		if err := os.Remove(filepath.Join(pc.dir, pc.spilled[i].name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			pc.log.Warn("removing a spilled KV sequence", "err", err)
		}
	}
	pc.spilled = slices.Delete(pc.spilled, i, i+1)
}

// spillName names a spilled sequence by its tokens, so that the same
// sequence is saved once.
func spillName(tokens []int32) string {
	h := sha256.New()
	var b [4]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:], uint32(t))
		h.Write(b[:])
	}
	return "prefix-" + hex.EncodeToString(h.Sum(nil)[:12]) + spillExt
}

// slotFile checks a file name given to the slots route: a plain name in
// the directory, never a path out of it.
func slotFile(name string) *apiError {
	bad := func(why string) *apiError {
		return badRequest("filename", "invalid_filename", "invalid filename %q: %s", name, why)
	}
	switch {
	case name == "":
		return bad("give a file name")
	case name == "." || name == "..":
		return bad("not a file name")
	case strings.ContainsAny(name, `/\`) || strings.ContainsRune(name, 0):
		return bad("path separators are not allowed: files live in --kv-cache-dir")
	case filepath.IsAbs(name) || !filepath.IsLocal(name) || filepath.VolumeName(name) != "":
		return bad("absolute paths are not allowed: files live in --kv-cache-dir")
	case strings.HasPrefix(name, "prefix-") && strings.HasSuffix(name, spillExt):
		return bad("names prefix-*" + spillExt + " are the server's own spilled sequences")
	case len(name) > 255:
		return bad("longer than 255 bytes")
	}
	return nil
}
