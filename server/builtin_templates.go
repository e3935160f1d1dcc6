package server

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strings"

	"headinfer/engine/tokenizer"
)

// Chat templates by name, for a model whose file carries none or a wrong
// one (serve --chat-template NAME, as llama-server's). Each renders its
// family's turn format from the messages.
//
//go:embed templates/*.jinja
var builtinFS embed.FS

// BuiltinTemplates lists the names of the built-in chat templates.
func BuiltinTemplates() []string {
	entries, _ := fs.ReadDir(builtinFS, "templates")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".jinja"))
	}
	slices.Sort(names)
	return names
}

// BuiltinTemplate returns the source of the built-in chat template name.
func BuiltinTemplate(name string) (string, error) {
	b, err := builtinFS.ReadFile("templates/" + name + ".jinja")
	if err != nil || strings.ContainsAny(name, "/.") {
		return "", fmt.Errorf("no built-in chat template %q (built in: %s)", name, strings.Join(BuiltinTemplates(), ", "))
	}
	return string(b), nil
}

// applyTemplate answers llama-server's POST /apply-template: the chat
// request's messages (and tools) rendered to the prompt text, without
// generating.
func (s *Server) applyTemplate(w http.ResponseWriter, r *http.Request) {
	serveTokenizer(s, w, r, func(l *loaded, req *chatRequest) (any, *apiError) {
		text, _, e := l.chatPrompt(req)
		if e != nil {
			return nil, e
		}
		return map[string]string{"prompt": tokenizer.Unquote(text)}, nil
	})
}
