package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestSplitModel writes a real model as 3 files, as gguf-split does, and
// opens the first: every tensor and key of the whole file is there, with
// the same bytes. Opening a later part, a set with a part missing, a part
// of another set and a renamed first part fail with errors naming them.
func TestSplitModel(t *testing.T) {
	whole, _ := openModel(t, "stories260K.gguf")
	dir := t.TempDir()
	prefix := filepath.Join(dir, "stories260K")
	paths, err := WriteSplit(prefix, whole.KV, whole.AllTensorData(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(paths[2]) != "stories260K-00003-of-00003.gguf" {
		t.Fatalf("parts named %v", paths)
	}
	if got := SplitParts(paths[1]); len(got) != 3 || got[0] != paths[0] || got[2] != paths[2] {
		t.Fatalf("SplitParts(%s) = %v, want %v", paths[1], got, paths)
	}
	f, err := Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != len(whole.Tensors) || len(f.parts) != 2 {
		t.Fatalf("%d tensors in %d extra parts, want %d in 2", len(f.Tensors), len(f.parts), len(whole.Tensors))
	}
	for i := range whole.Tensors {
		w := &whole.Tensors[i]
		g, ok := f.Tensor(w.Name)
		if !ok || g.Type != w.Type || !bytes.Equal(f.Data(g), whole.Data(w)) || len(f.Data(g)) == 0 {
			t.Errorf("tensor %s differs in the split model", w.Name)
		}
	}
	for _, kv := range whole.KV {
		if v, ok := f.Value(kv.Key); !ok || !reflect.DeepEqual(v, kv.Value) {
			t.Errorf("key %s lost in the split", kv.Key)
		}
	}

	fail := func(what string, path string, want ...string) {
		t.Helper()
		g, err := Open(path)
		if err == nil {
			g.Close()
			t.Errorf("%s: opened", what)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", what, err, w)
			}
		}
	}
	fail("a later part", paths[1], "part 2 of 3", "00001-of-00003")

	renamed := filepath.Join(dir, "renamed.gguf")
	if err := os.Link(paths[0], renamed); err != nil {
		t.Fatal(err)
	}
	fail("a renamed first part", renamed, "renamed.gguf")

	other := filepath.Join(dir, "other")
	otherPaths, err := WriteSplit(other, whole.KV, whole.AllTensorData(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(paths[1], paths[1]+".away"); err != nil {
		t.Fatal(err)
	}
	fail("a missing part", paths[0], "part 2 of 3", filepath.Base(paths[1]))
	if err := os.Link(otherPaths[1], paths[1]); err != nil {
		t.Fatal(err)
	}
	fail("a part of another set", paths[0], filepath.Base(paths[1]))
}
