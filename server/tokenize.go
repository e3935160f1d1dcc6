package server

import (
	"encoding/json"
	"net/http"
	"unicode/utf8"
)

// llama-server's POST /tokenize and POST /detokenize. They use the
// tokenizer only: they take an admission place like every request but
// never wait for the queue, so that they answer at once while
// generations run.

type tokenizeRequest struct {
	Content    *string `json:"content"`
	AddSpecial bool    `json:"add_special"`
	// ParseSpecial defaults to true, as in llama-server: control tokens
	// written in content ("</s>") are those tokens. Tokenizing alone
	// cannot inject anything; the generation routes read text prompts as
	// plain text whatever ids a client got here.
	ParseSpecial *bool `json:"parse_special"`
	WithPieces   bool  `json:"with_pieces"`
}

// tokenPieceEntry is a token with its text: a string, or when the token's
// bytes are not valid UTF-8 (part of a character), their values.
type tokenPieceEntry struct {
	ID    int32 `json:"id"`
	Piece any   `json:"piece"`
}

type detokenizeRequest struct {
	Tokens []json.Number `json:"tokens"`
}

// serveTokenizer answers a request that needs the loaded model's
// tokenizer or settings and no device: its body (for POST) decoded into R,
// then answered by answer.
func serveTokenizer[R any](s *Server, w http.ResponseWriter, r *http.Request, answer func(*loaded, *R) (any, *apiError)) {
	l := s.model.Load()
	if l == nil {
		if f := s.failed.Load(); f != nil {
			writeError(w, unavailable(f))
		} else {
			writeError(w, loading())
		}
		return
	}
	var req R
	if r.Method == http.MethodPost {
		if e := s.decodeBody(w, r, &req); e != nil {
			writeError(w, e)
			return
		}
	}
	if !s.admit.enter() {
		writeError(w, busy(s.admit.size()))
		return
	}
	defer s.admit.leave()
	v, e := answer(l, &req)
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) tokenize(w http.ResponseWriter, r *http.Request) {
	serveTokenizer(s, w, r, (*loaded).tokenizeAnswer)
}

func (s *Server) detokenize(w http.ResponseWriter, r *http.Request) {
	serveTokenizer(s, w, r, (*loaded).detokenizeAnswer)
}

func (l *loaded) tokenizeAnswer(req *tokenizeRequest) (any, *apiError) {
	if req.Content == nil {
		return nil, badRequest("content", "invalid_value", "content is required")
	}
	// The bound of a prompt: encoding costs tens of bytes per byte of
	// text, and ids that cannot fit the context are of no use here.
	if e := l.checkLength(len(*req.Content)); e != nil {
		return nil, e
	}
	var ids []int32
	if req.ParseSpecial == nil || *req.ParseSpecial {
		ids = l.tok.EncodeSpecial(*req.Content, req.AddSpecial)
	} else {
		ids = l.tok.Encode(*req.Content, req.AddSpecial)
	}
	if !req.WithPieces {
		return map[string][]int32{"tokens": ids}, nil
	}
	out := make([]tokenPieceEntry, len(ids))
	for i, id := range ids {
		p := tokenPiece(l.tok, id)
		out[i] = tokenPieceEntry{ID: id, Piece: p}
		if !utf8.ValidString(p) {
			out[i].Piece = byteList(p)
		}
	}
	return map[string][]tokenPieceEntry{"tokens": out}, nil
}

// detokenizeAnswer decodes ids as generated text is decoded: control
// tokens print as nothing, and SentencePiece's leading space, which
// tokenizing adds, is dropped, so that /detokenize undoes /tokenize.
func (l *loaded) detokenizeAnswer(req *detokenizeRequest) (any, *apiError) {
	ids := make([]int32, len(req.Tokens))
	for i, n := range req.Tokens {
		id, e := l.tokenID("tokens", n.String())
		if e != nil {
			return nil, e
		}
		ids[i] = id
	}
	return map[string]string{"content": l.tok.Decode(ids)}, nil
}
