package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"headinfer/engine"
	"headinfer/engine/snapshot"
)

// slotRequest is the body of POST /slots/{id}?action=save|restore, as
// llama-server takes it.
type slotRequest struct {
	Filename string `json:"filename"`
}

// slotResult is its answer, as llama-server gives it.
type slotResult struct {
	IDSlot    int                `json:"id_slot"`
	Filename  string             `json:"filename,omitempty"`
	NSaved    *int               `json:"n_saved,omitempty"`
	NWritten  *int64             `json:"n_written,omitempty"`
	NRestored *int               `json:"n_restored,omitempty"`
	NRead     *int64             `json:"n_read,omitempty"`
	NErased   *int               `json:"n_erased,omitempty"`
	Timings   map[string]float64 `json:"timings,omitempty"`
}

// slotState is one slot in GET /slots, in llama-server's field names as
// far as this server has them.
type slotState struct {
	ID           int  `json:"id"`
	NCtx         int  `json:"n_ctx"`
	IsProcessing bool `json:"is_processing"`
	// NTokens is the KV positions the slot holds: a running request's
	// prompt and generated tokens, or what an idle slot keeps for reuse.
	NTokens  int `json:"n_tokens"`
	NDecoded int `json:"n_decoded"` // tokens the running request generated so far
}

// slotList answers GET /slots (501 with --no-slots).
func (s *Server) slotList(w http.ResponseWriter, r *http.Request) {
	if s.opt.NoSlots {
		writeError(w, &apiError{Status: http.StatusNotImplemented, Type: "not_supported_error", Code: "not_supported",
			Message: "this server was started with --no-slots"})
		return
	}
	l := s.model.Load()
	if l == nil {
		writeError(w, loading())
		return
	}
	infos := l.batch.SlotInfos()
	out := make([]slotState, len(infos))
	for i, in := range infos {
		out[i] = slotState{ID: i, NCtx: l.ctx, IsProcessing: in.Busy, NTokens: in.Tokens, NDecoded: in.Generated}
	}
	writeJSON(w, http.StatusOK, out)
}

// eraseSlot empties slot id's KV (action=erase), as llama-server does.
func (s *Server) eraseSlot(w http.ResponseWriter, r *http.Request, l *loaded, id int) {
	var n int
	err := l.batch.Do(r.Context(), id, func(se *engine.Session) error {
		n = len(se.Tokens())
		se.Reset()
		return nil
	})
	switch {
	case errors.Is(err, engine.ErrSlotBusy):
		writeError(w, slotBusy(id))
	case err != nil:
		s.fail(w, infoOf(r), err)
	default:
		writeJSON(w, http.StatusOK, slotResult{IDSlot: id, NErased: &n})
	}
}

func slotBusy(id int) *apiError {
	return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "slot_busy",
		Message: fmt.Sprintf("slot %d is running a request; retry when it is done", id)}
}

// slots saves a slot's KV to a file of --kv-cache-dir, or restores it
// into the slot from one. Slots are numbered from 0 to Parallel−1; one
// that is running a request cannot be saved or restored (409).

func (s *Server) slots(w http.ResponseWriter, r *http.Request) {
	action := r.URL.Query().Get("action")
	if (action == "save" || action == "restore") && s.opt.KVCacheDir == "" {
		writeError(w, &apiError{Status: http.StatusNotImplemented, Type: "invalid_request_error", Code: "not_supported",
			Message: "slot save and restore need the server to run with --kv-cache-dir DIR (llama-server's --slot-save-path)"})
		return
	}
	l := s.model.Load()
	if l == nil {
		writeError(w, loading())
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 0 || id >= s.opt.Parallel {
		writeError(w, badRequest("id_slot", "invalid_slot", "invalid slot id %q: slots are 0 to %d", r.PathValue("id"), s.opt.Parallel-1))
		return
	}
	if action != "save" && action != "restore" && action != "erase" {
		writeError(w, badRequest("action", "invalid_action", "action must be save, restore or erase, got %q", action))
		return
	}
	if action == "erase" {
		s.eraseSlot(w, r, l, id)
		return
	}
	var req slotRequest
	if e := s.decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if e := slotFile(req.Filename); e != nil {
		writeError(w, e)
		return
	}
	path := filepath.Join(s.opt.KVCacheDir, req.Filename)

	info := infoOf(r)
	ctx, l, release, ok := s.holdRequest(w, r, info, l)
	if !ok {
		return
	}
	defer release()

	t0 := time.Now()
	res := slotResult{IDSlot: id, Filename: req.Filename}
	ms := func() float64 { return float64(time.Since(t0).Microseconds()) / 1e3 }
	var n int
	err = l.batch.Do(ctx, id, func(se *engine.Session) error {
		if action == "save" {
			n = len(se.Tokens())
			err := snapshot.SaveFile(path, se, l.prefix.id, n)
			s.metrics.snapshot("save", err)
			return err
		}
		var err error
		n, err = snapshot.LoadFile(path, se, l.prefix.id)
		s.metrics.snapshot("restore", err)
		return err
	})
	switch {
	case errors.Is(err, engine.ErrSlotBusy):
		writeError(w, slotBusy(id))
		return
	case action == "save" && err != nil:
		writeError(w, internalError(err))
		return
	case action == "save":
		res.NSaved, res.NWritten = &n, fileSize(path)
		res.Timings = map[string]float64{"save_ms": ms()}
		writeJSON(w, http.StatusOK, res)
		return
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "file_not_found",
			Message: fmt.Sprintf("no file %q in --kv-cache-dir", req.Filename)})
		return
	case err != nil:
		// The session is empty now (or, for a file that is not regular,
		// as it was). The error names the file by the client's name, not
		// by the server's path, and never quotes its bytes.
		why := strings.TrimPrefix(err.Error(), path+": ")
		writeError(w, badRequest("filename", "invalid_snapshot", "cannot restore %q: %s", req.Filename, why))
		return
	}
	res.NRestored, res.NRead = &n, fileSize(path)
	res.Timings = map[string]float64{"restore_ms": ms()}
	writeJSON(w, http.StatusOK, res)
}

func fileSize(path string) *int64 {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	n := st.Size()
	return &n
}
