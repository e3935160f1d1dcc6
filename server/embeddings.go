package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"sync"

	"headinfer/engine"
)

// Embeddings: OpenAI's POST /v1/embeddings and llama-server's POST
// /embedding (also /embeddings), served with Options.Embeddings. Each
// input is prefilled in a slot of the model's batch, between the other
// sequences' steps, and its tokens' final hidden states pooled as the
// model's metadata says (mean when it says none) and L2-normalised.

// maxEmbeddingInputs bounds the inputs of one request, as OpenAI does.
const maxEmbeddingInputs = 2048

type embeddingsRequest struct {
	Model string `json:"model"`
	// Input is a string, an array of strings, an array of token ids (one
	// input), or an array of strings and arrays of ids; llama-server's
	// /embedding calls it content.
	Input          json.RawMessage `json:"input"`
	Content        json.RawMessage `json:"content"`
	EncodingFormat string          `json:"encoding_format"` // "float" (default) or "base64"
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingsResponse struct {
	Object string          `json:"object"`
	Data   []embeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// nativeEmbedding is llama-server's /embedding answer for one input: the
// pooled vector as a list of one, or with --pooling none each token's.
type nativeEmbedding struct {
	Index     int         `json:"index"`
	Embedding [][]float32 `json:"embedding"`
}

func noEmbeddings() *apiError {
	return &apiError{Status: http.StatusNotImplemented, Type: "not_supported_error", Code: "embeddings_disabled",
		Message: "this server does not compute embeddings: start it with --embeddings"}
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) { s.serveEmbeddings(w, r, true) }

func (s *Server) nativeEmbedding(w http.ResponseWriter, r *http.Request) {
	s.serveEmbeddings(w, r, false)
}

func (s *Server) serveEmbeddings(w http.ResponseWriter, r *http.Request, openAI bool) {
	if !s.opt.Embeddings {
		writeError(w, noEmbeddings())
		return
	}
	l, req, ok := admitRequest(s, w, r, func(q *embeddingsRequest) string { return q.Model })
	if !ok {
		return
	}
	defer s.admit.leave()
	inputs, e := l.embeddingInputs(req, openAI)
	if e != nil {
		writeError(w, e)
		return
	}
	if err := l.m.CanEmbed(); err != nil {
		writeError(w, &apiError{Status: http.StatusNotImplemented, Type: "not_supported_error", Code: "embeddings_unsupported", Message: err.Error()})
		return
	}
	if openAI && l.m.Config.Pooling == engine.PoolNone {
		writeError(w, badRequest("", "unsupported", "the server pools embeddings by none (--pooling none), a vector per token, which /v1/embeddings cannot answer: use /embedding"))
		return
	}
	if d := req.Dimensions; d != nil && *d != l.m.Config.Dim {
		writeError(w, badRequest("dimensions", "unsupported", "the model's embeddings have %d dimensions; dimensions %d cannot be given", l.m.Config.Dim, *d))
		return
	}
	info := infoOf(r)
	for _, in := range inputs {
		info.promptTokens += len(in)
	}
	ctx, l, release, ok := s.holdRequest(w, r, info, l)
	if !ok {
		return
	}
	defer release()
	vecs, err := embedAll(ctx, l.batch, inputs)
	if err != nil {
		s.fail(w, info, err)
		return
	}
	if !openAI {
		// One vector, or with --pooling none one per token.
		dim := l.m.Config.Dim
		out := make([]nativeEmbedding, len(vecs))
		for i, v := range vecs {
			out[i] = nativeEmbedding{Index: i}
			for k := 0; k < len(v); k += dim {
				out[i].Embedding = append(out[i].Embedding, v[k:k+dim])
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	resp := embeddingsResponse{Object: "list", Model: s.name, Data: make([]embeddingData, len(vecs))}
	for i, v := range vecs {
		resp.Data[i] = embeddingData{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			resp.Data[i].Embedding = float32Base64(v)
		}
	}
	resp.Usage.PromptTokens, resp.Usage.TotalTokens = info.promptTokens, info.promptTokens
	writeJSON(w, http.StatusOK, resp)
}

// embedAll embeds the inputs, as many at once as the batch has slots;
// the first failure stops the rest.
func embedAll(ctx context.Context, b *engine.Batch, inputs [][]int32) ([][]float32, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	vecs := make([][]float32, len(inputs))
	places := make(chan struct{}, b.Slots())
	var wg sync.WaitGroup
	for i, in := range inputs {
		places <- struct{}{}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-places }()
			res, err := b.Embed(ctx, in)
			if err != nil {
				cancel(err) // the first cause stays
				return
			}
			vecs[i] = res.Embedding
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return vecs, nil
}

// embeddingInputs reads the request's inputs as token ids: text is
// tokenized as a prompt is (the model's BOS added, control tokens read as
// plain text), each input must fit the context.
func (l *loaded) embeddingInputs(req *embeddingsRequest, openAI bool) ([][]int32, *apiError) {
	field, raw := "input", req.Input
	if !openAI && isNull(raw) {
		field, raw = "content", req.Content
	}
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		if !openAI {
			return nil, badRequest("encoding_format", "invalid_value", "encoding_format base64 is answered on /v1/embeddings only")
		}
	default:
		return nil, badRequest("encoding_format", "invalid_value", "encoding_format must be float or base64, got %q", req.EncodingFormat)
	}
	if isNull(raw) {
		return nil, badRequest(field, "invalid_value", "%s is required", field)
	}
	var items []json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, badRequest(field, "invalid_type", "%s must be a string, an array of strings, or token ids", field)
		}
		var ids []json.Number
		if len(items) > 0 && json.Unmarshal(raw, &ids) == nil {
			items = []json.RawMessage{raw} // one input of ids
		}
	} else {
		items = []json.RawMessage{raw}
	}
	if len(items) == 0 || len(items) > maxEmbeddingInputs {
		return nil, badRequest(field, "invalid_value", "%s must hold 1 to %d inputs, got %d", field, maxEmbeddingInputs, len(items))
	}
	out := make([][]int32, len(items))
	for i, item := range items {
		var text string
		var nums []json.Number
		switch {
		case json.Unmarshal(item, &text) == nil:
			if text == "" {
				return nil, badRequest(field, "invalid_value", "%s[%d] is an empty string", field, i)
			}
			if e := l.checkLength(len(text)); e != nil {
				return nil, e
			}
			out[i] = l.tok.Encode(text, true)
		case json.Unmarshal(item, &nums) == nil && len(nums) > 0:
			out[i] = make([]int32, len(nums))
			for k, n := range nums {
				id, e := l.tokenID(field, n.String())
				if e != nil {
					return nil, e
				}
				out[i][k] = id
			}
		default:
			return nil, badRequest(field, "invalid_type", "%s[%d] must be a non-empty string or array of token ids", field, i)
		}
		if n := len(out[i]); n > l.ctx {
			return nil, badRequest(field, "context_length_exceeded", "%s[%d] is %d tokens: the context holds %d", field, i, n, l.ctx)
		}
		if n, chunk := len(out[i]), l.m.Plan().Chunk; l.m.Config.NonCausal && n > chunk {
			// Each token sees every other: the input is one step.
			return nil, badRequest(field, "input_too_long", "%s[%d] is %d tokens: the model attends both ways and takes an input in one chunk of at most %d (--chunk)", field, i, n, chunk)
		}
	}
	return out, nil
}

// float32Base64 is v as OpenAI's base64 encoding_format: its little-endian
// float32 bytes.
func float32Base64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}
