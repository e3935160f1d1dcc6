package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
)

// GET /props, as llama-server answers it: the server's settings, so that
// a client can size prompts (n_ctx), learn /completion's defaults and
// render chat prompts itself (chat_template).
type propsResponse struct {
	DefaultGenerationSettings defaultGenerationSettings `json:"default_generation_settings"`
	TotalSlots                int                       `json:"total_slots"`
	ModelAlias                string                    `json:"model_alias"`
	ModelPath                 string                    `json:"model_path"`
	ChatTemplate              string                    `json:"chat_template"`
	BuildInfo                 string                    `json:"build_info"`
	// HeadInfer is where the KV cache lives, once the model is loaded:
	// what no other server shows, and what the web page draws.
	HeadInfer *kvProps `json:"headinfer,omitempty"`
}

// kvProps is the KV cache's placement and use.
type kvProps struct {
	Offload       string      `json:"offload"`        // none, head (heads streamed from host memory)
	DecodeAttn    string      `json:"decode_attn"`    // where decode attends the streamed heads: gpu or cpu
	Layers        int         `json:"layers"`         //
	KVHeads       int         `json:"kv_heads"`       // per layer
	ResidentHeads []int       `json:"resident_heads"` // per layer: heads 0 … n−1 on the device, the rest streamed
	DeviceKVBytes uint64      `json:"device_kv_bytes"`
	HostKVBytes   uint64      `json:"host_kv_bytes"`
	KVUsage       float64     `json:"kv_usage"` // share of the slots' positions that running sequences hold
	Slots         []slotState `json:"slots"`
}

func (s *Server) kvProps(l *loaded) *kvProps {
	if l.m == nil {
		return nil
	}
	p := l.m.Plan()
	k := &kvProps{Offload: p.Mode, DecodeAttn: p.DecodeAttn, Layers: l.m.Config.Layers, KVHeads: l.m.Config.KVHeads,
		ResidentHeads: p.ResidentHeads, DeviceKVBytes: p.ResidentKV, HostKVBytes: p.HostKV, KVUsage: l.batch.KVUsage()}
	for i, in := range l.batch.SlotInfos() {
		k.Slots = append(k.Slots, slotState{ID: i, NCtx: l.ctx, IsProcessing: in.Busy, NTokens: in.Tokens, NDecoded: in.Generated})
	}
	return k
}

type defaultGenerationSettings struct {
	NCtx   int            `json:"n_ctx"`
	Params nativeSettings `json:"params"`
}

// propsChange answers POST /props as llama-server does: with --props it
// takes a JSON object and answers {"success": true} (llama-server changes
// nothing with it either); without, 403.
func (s *Server) propsChange(w http.ResponseWriter, r *http.Request) {
	if !s.opt.Props {
		writeError(w, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "props_disabled",
			Message: "this server does not take changes to its properties: start it with --props"})
		return
	}
	var req map[string]json.RawMessage
	if e := s.decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) props(w http.ResponseWriter, r *http.Request) {
	serveTokenizer(s, w, r, func(l *loaded, _ *struct{}) (any, *apiError) {
		return propsResponse{
			DefaultGenerationSettings: defaultGenerationSettings{NCtx: l.ctx, Params: l.nativeDefaults()},
			TotalSlots:                s.opt.Parallel,
			ModelAlias:                s.name,
			ModelPath:                 s.opt.ModelPath,
			ChatTemplate:              l.tmplSrc,
			BuildInfo:                 buildInfo(),
			HeadInfer:                 s.kvProps(l),
		}, nil
	})
}

// buildInfo names the build: the module's version and, when the binary
// was built from a checkout, its commit ("-dirty" with local changes),
// and the Go release.
var buildInfo = sync.OnceValue(func() string {
	version, rev, dirty := "(unknown)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				dirty = kv.Value == "true"
			}
		}
	}
	s := "headinfer " + version
	if rev != "" {
		s += fmt.Sprintf(" %.12s", rev)
		if dirty {
			s += "-dirty"
		}
	}
	return s + " " + runtime.Version()
})
