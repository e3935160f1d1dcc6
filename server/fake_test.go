package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"headinfer/engine"
	"headinfer/engine/tokenizer"
)

// These helpers run the HTTP layer (parsing, templates, tokenizing,
// admission, the queue, answers) on a real tokenizer without a model or a
// device: the job's generation is a stand-in.

// testVocab is a small vocabulary of one of the three chat formats' kinds.
type testVocab struct {
	name     string
	vocab    tokenizer.Vocab
	template string
	control  []string // control token texts that request text must not produce
}

// spmTestVocab is SentencePiece with Llama 2's special tokens: <unk>, <s>,
// </s>, the 256 byte tokens, "▁" and the printable ASCII characters.
func spmTestVocab() tokenizer.Vocab {
	v := tokenizer.Vocab{Model: tokenizer.ModelSPM, BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true, AddSpacePrefix: true}
	add := func(s string, typ int32) {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, typ)
		v.Scores = append(v.Scores, 0)
	}
	add("<unk>", tokenizer.TypeUnknown)
	add("<s>", tokenizer.TypeControl)
	add("</s>", tokenizer.TypeControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), tokenizer.TypeByte)
	}
	add("\u2581", tokenizer.TypeNormal)
	for c := byte('!'); c <= '~'; c++ {
		add(string(c), tokenizer.TypeNormal)
	}
	return v
}

// bpeTestVocab is byte-level BPE (one token per byte, no merges) with the
// given pre-tokenizer and control tokens.
func bpeTestVocab(pre string, control ...string) tokenizer.Vocab {
	v := tokenizer.Vocab{Model: tokenizer.ModelBPE, Pre: pre, BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	for b := range 256 {
		v.Tokens = append(v.Tokens, tokenizer.ByteLevelText([]byte{byte(b)}))
		v.Types = append(v.Types, tokenizer.TypeNormal)
	}
	for _, c := range control {
		v.Tokens = append(v.Tokens, c)
		v.Types = append(v.Types, tokenizer.TypeControl)
	}
	return v
}

// llama3Template and chatMLTemplate are the Llama 3 instruct and Qwen 2
// (ChatML) formats, as their models ship them.
const (
	llama3Template = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`
	chatMLTemplate = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`
)

func testVocabs() []testVocab {
	llama3 := bpeTestVocab("llama-bpe", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
	llama3.BOS, llama3.EOS, llama3.AddBOS = 256, 257, true
	qwen2 := bpeTestVocab("qwen2", "<|endoftext|>", "<|im_start|>", "<|im_end|>")
	qwen2.EOS = 256
	return []testVocab{
		{"llama2", spmTestVocab(), llama2Template, []string{"<s>", "</s>", "<unk>"}},
		{"llama3", llama3, llama3Template, llama3.Tokens[256:]},
		{"chatml", qwen2, chatMLTemplate, qwen2.Tokens[256:]},
	}
}

// fakeServer is a Server whose model is tv's tokenizer and template with a
// context of ctx tokens; gen stands in for generation (nil: answer "ok").
func fakeServer(t testing.TB, opt Options, tv testVocab, ctx int, gen func(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error)) *Server {
	t.Helper()
	tok, err := tokenizer.New(tv.vocab)
	if err != nil {
		t.Fatal(err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(errorCounter{slog.NewTextHandler(io.Discard, nil)})
	}
	s := New(opt)
	l := newLoaded(tok, ctx, tv.template)
	if l.tmplErr != nil {
		t.Fatal(l.tmplErr)
	}
	s.model.Store(l)
	if gen == nil {
		gen = answerOK
	}
	s.gen = gen
	return s
}

// loggedErrors counts the error records of fake servers' logs, such as a
// panic recovered after the answer was sent, which its status cannot show.
var loggedErrors atomic.Int64

type errorCounter struct{ slog.Handler }

func (h errorCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		loggedErrors.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

// answerOK generates one token, "ok".
func answerOK(ctx context.Context, l *loaded, j *job, emit func(string) error) (outcome, error) {
	if err := emit("ok"); err != nil {
		return outcome{completion: 1}, err
	}
	return outcome{finish: engine.FinishStop, completion: 1}, nil
}

// texts returns the token texts of ids, for readable failures.
func texts(tok tokenizer.Tokenizer, ids []int32) []string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = tok.TokenText(id)
	}
	return s
}
