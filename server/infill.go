package server

import (
	"encoding/json"
	"net/http"

	"headinfer/engine"
)

// llama-server's POST /infill: code completion between a prefix and a
// suffix, for models with fill-in-the-middle tokens. The prompt is
//
//	[BOS] context files  PRE prefix  SUF suffix  MID prompt
//
// where each file of input_extra is SEP "filename\ntext" (plain text
// where the model has no SEP token), and the answer is /completion's.

type infillRequest struct {
	nativeRequest
	InputPrefix string       `json:"input_prefix"`
	InputSuffix string       `json:"input_suffix"`
	InputExtra  []infillFile `json:"input_extra"`
}

type infillFile struct {
	Filename string `json:"filename"`
	Text     string `json:"text"`
}

// UnmarshalJSON reads both parts: nativeRequest's own UnmarshalJSON
// would otherwise stand for the whole.
func (r *infillRequest) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &r.nativeRequest); err != nil {
		return err
	}
	var f struct {
		InputPrefix string       `json:"input_prefix"`
		InputSuffix string       `json:"input_suffix"`
		InputExtra  []infillFile `json:"input_extra"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	r.InputPrefix, r.InputSuffix, r.InputExtra = f.InputPrefix, f.InputSuffix, f.InputExtra
	return nil
}

func (s *Server) infill(w http.ResponseWriter, r *http.Request) {
	serveJob(s, w, r, func(q *infillRequest) string { return q.Model }, (*loaded).infillJob)
}

func (l *loaded) infillJob(req *infillRequest) (*job, *apiError) {
	fim := engine.FIM{Pre: -1, Suf: -1, Mid: -1, Sep: -1, Rep: -1} // none, without a model (tests of the HTTP layer)
	if l.m != nil {
		fim = l.m.FIM()
	}
	if !fim.Complete() {
		return nil, &apiError{Status: http.StatusNotImplemented, Type: "not_supported_error", Code: "not_supported",
			Message: "the model has no fill-in-the-middle tokens (tokenizer.ggml.fim_pre_token_id and the like): /infill needs a code model that has them"}
	}
	n := len(req.InputPrefix) + len(req.InputSuffix)
	for _, f := range req.InputExtra {
		n += len(f.Filename) + len(f.Text) + 1
	}
	var prompt string
	if !isNull(req.Prompt) {
		if err := json.Unmarshal(req.Prompt, &prompt); err != nil {
			return nil, badRequest("prompt", "invalid_type", "prompt must be a string on /infill")
		}
	}
	if e := l.checkPromptLength(n + len(prompt)); e != nil {
		return nil, e
	}
	var ids []int32
	if l.addBOS {
		ids = append(ids, l.tok.BOS())
	}
	for _, f := range req.InputExtra {
		if fim.Sep >= 0 {
			ids = append(ids, fim.Sep)
			ids = append(ids, l.tok.Encode(f.Filename+"\n"+f.Text, false)...)
		} else {
			ids = append(ids, l.tok.Encode(f.Text, false)...)
		}
	}
	ids = append(ids, fim.Pre)
	ids = append(ids, l.tok.Encode(req.InputPrefix, false)...)
	ids = append(ids, fim.Suf)
	ids = append(ids, l.tok.Encode(req.InputSuffix, false)...)
	ids = append(ids, fim.Mid)
	ids = append(ids, l.tok.Encode(prompt, false)...)
	req.nativeRequest.ids = ids
	return l.nativeJob(&req.nativeRequest)
}
