// Package deploy checks the container image's Dockerfile without Docker:
// hadolint is not packaged for Debian, so a small line parser checks the
// rules this project cares about.
package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it begins
	cmd  string // upper case: FROM, RUN, ...
	args string
}

var known = map[string]bool{
	"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true,
	"ADD": true, "COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true,
	"WORKDIR": true, "ARG": true, "ONBUILD": true, "STOPSIGNAL": true,
	"HEALTHCHECK": true, "SHELL": true,
}

// parse splits a Dockerfile into instructions: comments and blank lines are
// dropped and a line ending in a backslash continues on the next.
func parse(t *testing.T, name string) []instruction {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(l)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() != 0 {
		t.Fatalf("%s: a continuation runs past the end", name)
	}
	return out
}

// stage is one FROM and the instructions after it.
type stage struct {
	image, name string
	body        []instruction
}

func stages(t *testing.T, ins []instruction) []stage {
	t.Helper()
	var out []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			} else if len(f) != 1 {
				t.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
			}
			out = append(out, s)
			continue
		}
		if len(out) == 0 {
			if in.cmd != "ARG" {
				t.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		out[len(out)-1].body = append(out[len(out)-1].body, in)
	}
	return out
}

var aptInstall = regexp.MustCompile(`apt-get\s+install\b`)

func TestDockerfile(t *testing.T) {
	ins := parse(t, "../Dockerfile")
	for _, in := range ins {
		if !known[in.cmd] {
			t.Errorf("line %d: unknown instruction %q", in.line, in.cmd)
		}
		// The JSON (exec) form: signals reach the server, not a shell.
		if in.cmd == "ENTRYPOINT" || in.cmd == "CMD" {
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
				t.Errorf("line %d: %s %s: want the JSON exec form", in.line, in.cmd, in.args)
			}
		}
		if in.cmd == "RUN" && aptInstall.MatchString(in.args) {
			for _, want := range []string{"apt-get update", "--no-install-recommends", "rm -rf /var/lib/apt/lists/*"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("line %d: apt-get install without %q in the same RUN", in.line, want)
				}
			}
		}
		if in.cmd == "ADD" {
			t.Errorf("line %d: ADD: use COPY", in.line)
		}
	}

	st := stages(t, ins)
	if len(st) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(st))
	}
	names := map[string]bool{}
	for _, s := range st {
		if s.name == "" {
			t.Errorf("FROM %s: stage without a name", s.image)
		}
		names[s.name] = true
		ref := s.image
		if names[ref] && ref != s.name {
			continue // built on an earlier stage
		}
		tag := ""
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			tag = ref[i+1:]
		}
		if tag == "" || tag == "latest" {
			t.Errorf("FROM %s: pin a tag other than latest", ref)
		}
	}
	if !strings.HasPrefix(st[0].image, "golang:") || !strings.Contains(st[0].image, "bookworm") {
		t.Errorf("build stage FROM %s, want a golang bookworm image", st[0].image)
	}
	final := st[len(st)-1]
	if !strings.HasPrefix(final.image, "debian:bookworm-slim") {
		t.Errorf("runtime stage FROM %s, want debian:bookworm-slim", final.image)
	}

	// The runtime stage: its packages, a non-root user at the end, the
	// binary from the build stage, the entry point and port.
	last := map[string]string{}
	var runs, copies []string
	for _, in := range final.body {
		last[in.cmd] = in.args
		switch in.cmd {
		case "RUN":
			runs = append(runs, in.args)
		case "COPY":
			copies = append(copies, in.args)
		}
	}
	all := strings.Join(runs, "\n")
	for _, pkg := range []string{"libvulkan1", "mesa-vulkan-drivers", "ca-certificates"} {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(all) {
			t.Errorf("runtime stage does not install %s", pkg)
		}
	}
	user := last["USER"]
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("runtime stage USER %q, want a non-root user", user)
	}
	if uid != "10001" {
		t.Errorf("USER %q: want the numeric uid 10001, so that runAsNonRoot can check it", user)
	}
	if !strings.Contains(all, "--uid 10001") {
		t.Errorf("runtime stage does not create the user with uid 10001")
	}
	binary := false
	for _, c := range copies {
		if strings.HasPrefix(c, "--from="+st[0].name+" ") && strings.HasSuffix(c, " /usr/local/bin/headinfer") {
			binary = true
		}
	}
	if !binary {
		t.Errorf("runtime stage does not copy the binary from stage %q to /usr/local/bin/headinfer", st[0].name)
	}
	if last["ENTRYPOINT"] != `["headinfer"]` {
		t.Errorf("ENTRYPOINT %s, want [\"headinfer\"]", last["ENTRYPOINT"])
	}
	if last["CMD"] != `["serve", "--host", "0.0.0.0", "--port", "8080"]` {
		t.Errorf("CMD %s, want serve on 0.0.0.0:8080", last["CMD"])
	}
	if last["EXPOSE"] != "8080" {
		t.Errorf("EXPOSE %q, want 8080", last["EXPOSE"])
	}

	// The build stage builds with go build (make build would apt-get the
	// development set) and no window tag.
	var build []string
	for _, in := range st[0].body {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = append(build, in.args)
		}
	}
	if len(build) != 1 || strings.Contains(build[0], "-tags") || !strings.Contains(build[0], "CGO_ENABLED=1") {
		t.Errorf("build stage: want one RUN CGO_ENABLED=1 go build without tags, have %q", build)
	}
}

// TestDockerignore checks that the build context keeps what go build needs:
// a pattern that matched shaders/*.spv would build a binary without kernels
// (go:embed fails) and one that matched go.sum would fail the download.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Errorf("%q: exceptions are not checked here; keep the file to plain exclusions", l)
			}
			patterns = append(patterns, l)
		}
	}
	need := []string{"go.mod", "go.sum", "main.go", "shaders/shaders.go", "shaders/add.spv", "vk/device.go", "cli/serve.go", "server/server.go"}
	for _, p := range need {
		for _, pat := range patterns {
			if ignored(pat, p) {
				t.Errorf(".dockerignore pattern %q excludes %s", pat, p)
			}
		}
	}
	for _, p := range []string{".git", "headinfer", "deploy", "models/x.gguf"} {
		hit := false
		for _, pat := range patterns {
			hit = hit || ignored(pat, p)
		}
		if !hit {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
}

// ignored approximates Docker's matching: a pattern matches a path or one
// of its parent directories, and a leading **/ matches at any depth.
func ignored(pat, p string) bool {
	pat = strings.TrimPrefix(path.Clean(pat), "/")
	for q := p; q != "." && q != "/"; q = path.Dir(q) {
		if ok, _ := path.Match(pat, q); ok {
			return true
		}
		if rest, ok := strings.CutPrefix(pat, "**/"); ok {
			for s := q; ; {
				if ok, _ := path.Match(rest, s); ok {
					return true
				}
				_, after, found := strings.Cut(s, "/")
				if !found {
					break
				}
				s = after
			}
		}
	}
	return false
}
