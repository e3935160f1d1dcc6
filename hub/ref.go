// Package hub fetches GGUF models from a Hugging Face-compatible endpoint
// into a local directory: it picks the file for a quantization, resumes an
// interrupted download, and keeps a file only once its SHA-256 matches the
// one the endpoint states.
package hub

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Ref names a model on the hub: a repository and either a quantization
// (Q4_K_M: the .gguf whose name carries it), a file in the repository, or
// neither (the repository's only .gguf).
type Ref struct {
	Repo  string // OWNER/NAME
	Quant string
	File  string // path inside the repository
}

// String is the reference as the user writes it.
func (r Ref) String() string {
	switch {
	case r.File != "":
		return r.Repo + "/" + r.File
	case r.Quant != "":
		return r.Repo + ":" + r.Quant
	}
	return r.Repo
}

// repoPart is what the hub allows in an owner or repository name.
var repoPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseRef reads OWNER/REPO, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf, with
// an optional hf.co/ or huggingface.co/ (or https://...) in front as
// ollama and model pages write them.
func ParseRef(s string) (Ref, error) {
	orig := s
	for _, p := range []string{"https://", "http://"} {
		s = strings.TrimPrefix(s, p)
	}
	for _, p := range []string{"hf.co/", "huggingface.co/"} {
		s = strings.TrimPrefix(s, p)
	}
	bad := func(why string) (Ref, error) {
		return Ref{}, fmt.Errorf("%q is not a model on the hub (%s): write OWNER/REPO, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf", orig, why)
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 {
		return bad("no OWNER/REPO")
	}
	var r Ref
	last := parts[len(parts)-1]
	if len(parts) == 2 {
		name, quant, hasQuant := strings.Cut(last, ":")
		if hasQuant && quant == "" {
			return bad("empty quantization after ':'")
		}
		parts[1], r.Quant = name, quant
	} else {
		r.File = strings.Join(parts[2:], "/")
		if !strings.HasSuffix(strings.ToLower(r.File), ".gguf") {
			return bad("the file must be a .gguf")
		}
		for _, seg := range parts[2:] {
			if seg == "" || seg == "." || seg == ".." {
				return bad("bad file path")
			}
		}
	}
	for _, p := range parts[:2] {
		if !repoPart.MatchString(p) || strings.Contains(p, "..") {
			return bad(fmt.Sprintf("%q is not a valid owner or repository name", p))
		}
	}
	r.Repo = parts[0] + "/" + parts[1]
	return r, nil
}

// splitPart matches the names llama.cpp's gguf-split gives the parts of
// one model (model-Q4_K_M-00001-of-00003.gguf).
var splitPart = regexp.MustCompile(`(?i)-\d{5}-of-\d{5}\.gguf$`)

// splitName splits a part's name into the prefix, its number and the count.
var splitName = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.gguf$`)

// SplitParts lists the repository paths of every part of the split model
// that file is a part of (file itself included, first part first), or
// just file when it is not a part.
func SplitParts(file string) []string {
	m := splitName.FindStringSubmatch(file)
	if m == nil {
		return []string{file}
	}
	var n int
	fmt.Sscan(m[3], &n)
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d-of-%05d.gguf", m[1], i+1, n)
	}
	return out
}

// quantName finds the quantization a GGUF file name ends with, as model
// repositories name them (model-Q4_K_M.gguf, model.Q8_0.gguf,
// model-IQ4_XS.gguf, model-f16.gguf), or "".
var quantName = regexp.MustCompile(`(?i)(?:^|[-._])((?:I?Q[0-9]+(?:_[A-Z0-9]+)*)|BF16|F16|F32)$`)

// QuantOf is the quantization a file's name carries, or "".
func QuantOf(file string) string {
	base := path.Base(file)
	base = splitPart.ReplaceAllString(base, ".gguf")
	base = base[:len(base)-len(path.Ext(base))]
	if m := quantName.FindStringSubmatch(base); m != nil {
		return m[1]
	}
	return ""
}

// isGGUF says whether a repository path is a GGUF file.
func isGGUF(p string) bool { return strings.HasSuffix(strings.ToLower(p), ".gguf") }

// carries says whether name holds quant (case-insensitive) as a whole
// word: Q4_K matches neither Q4_K_M nor Q4_K_S, and Q4_XS not IQ4_XS.
func carries(name, quant string) bool {
	n, q := strings.ToLower(path.Base(name)), strings.ToLower(quant)
	word := func(c byte) bool {
		return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
	}
	for i := 0; i+len(q) <= len(n); i++ {
		j := strings.Index(n[i:], q)
		if j < 0 {
			return false
		}
		i += j
		end := i + len(q)
		if (i == 0 || !word(n[i-1])) && (end == len(n) || !word(n[end])) {
			return true
		}
	}
	return false
}

// pick chooses the file a reference without a file name means among a
// repository's paths.
func pick(repo, quant string, paths []string) (string, error) {
	var ggufs []string
	for _, p := range paths {
		if isGGUF(p) {
			ggufs = append(ggufs, p)
		}
	}
	if len(ggufs) == 0 {
		return "", fmt.Errorf("%w: %s holds no .gguf file", ErrNoMatch, repo)
	}
	if quant == "" {
		if len(ggufs) == 1 {
			return ggufs[0], nil
		}
		return "", fmt.Errorf("%w: %s holds %d GGUF files; name one with %s:QUANT (%s) or %s/FILE.gguf",
			ErrNoMatch, repo, len(ggufs), repo, quantList(ggufs), repo)
	}
	var match []string
	for _, p := range ggufs {
		if carries(p, quant) {
			match = append(match, p)
		}
	}
	switch {
	case len(match) == 0:
		return "", fmt.Errorf("%w: %s has no GGUF file for %s; it has %s", ErrNoMatch, repo, quant, quantList(ggufs))
	case splitPart.MatchString(match[0]) && slices.Equal(SplitParts(match[0]), match):
		// The parts of one split model, in order: the first names it.
		return match[0], nil
	case len(match) > 1:
		return "", fmt.Errorf("%w: %d files of %s carry %s (%s): name one with %s/FILE.gguf",
			ErrNoMatch, len(match), repo, quant, strings.Join(match, ", "), repo)
	}
	return match[0], nil
}

// quantList names the quantizations among files, or the files where a
// name carries none.
func quantList(files []string) string {
	var out []string
	seen := map[string]bool{}
	for _, f := range files {
		q := QuantOf(f)
		if q == "" {
			q = f
		}
		if !seen[strings.ToUpper(q)] {
			seen[strings.ToUpper(q)] = true
			out = append(out, q)
		}
	}
	return strings.Join(out, ", ")
}
