// Package tests runs the headinfer binary as a user would: it builds it
// once, then runs its commands on the test models and checks their output.
package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"headinfer/engine/gguf"
)

var binary string

// raceEnv, set to 1, builds the binary with the race detector (make test
// runs the server load test so).
const raceEnv = "HEADINFER_E2E_RACE"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "headinfer-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "headinfer")
	args := []string{"build", "-o", binary}
	if os.Getenv(raceEnv) == "1" {
		// The server tests then fail on the detector's "DATA RACE".
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building headinfer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary and returns its stdout and stderr.
func run(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// modelsDir is shared/models beside the checkout.
func modelsDir(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "shared", "models"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test models not found: %v", err)
	}
	return p
}

// rewriteModel copies the GGUF file src to dst with its metadata passed
// through edit.
func rewriteModel(t *testing.T, src, dst string, edit func([]gguf.KV) []gguf.KV) {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := edit(append([]gguf.KV(nil), f.KV...))
	var tensors []gguf.TensorData
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		tensors = append(tensors, gguf.TensorData{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: f.Data(ti)})
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := gguf.Write(out, kv, tensors); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
