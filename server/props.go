package server

import (
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
}

type defaultGenerationSettings struct {
	NCtx   int            `json:"n_ctx"`
	Params nativeSettings `json:"params"`
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
