package engine

import (
	"context"
	"path/filepath"
	"testing"
)

// TestProgressReports checks what Options.Progress hears: the weight
// upload, growing to every byte uploaded, and each chunk of a prefill of
// more than one chunk, and nothing for a prefill of one.
func TestProgressReports(t *testing.T) {
	var got []Progress
	m := loadModel(t, filepath.Join(modelsDir(t), "stories260K.gguf"), Options{
		CtxSize: 128, Chunk: 16, Progress: func(p Progress) { got = append(got, p) },
	})
	if len(got) < 2 {
		t.Fatalf("load reported %d times, want one report per uploaded group of tensors", len(got))
	}
	for i, p := range got {
		if p.Work != ProgressLoad || p.Total != got[0].Total || p.Done > p.Total || (i > 0 && p.Done <= got[i-1].Done) {
			t.Fatalf("load report %d: %+v after %+v; want growing weight bytes of one total", i, p, got[max(i-1, 0)])
		}
	}
	if last := got[len(got)-1]; last.Done != int64(m.WeightBytes()) {
		t.Errorf("load reports end at %d bytes, the model uploaded %d", last.Done, m.WeightBytes())
	}

	se, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer se.Close()
	got = nil
	ids := make([]int32, 40)
	for i := range ids {
		ids[i] = int32(10 + i)
	}
	if err := se.Prefill(context.Background(), ids, false); err != nil {
		t.Fatal(err)
	}
	want := []Progress{
		{Work: ProgressPrefill, Done: 16, Total: 40, Chunk: 1, Chunks: 3},
		{Work: ProgressPrefill, Done: 32, Total: 40, Chunk: 2, Chunks: 3},
		{Work: ProgressPrefill, Done: 40, Total: 40, Chunk: 3, Chunks: 3},
	}
	if len(got) != len(want) {
		t.Fatalf("prefill of 40 tokens in chunks of 16 reported %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("prefill report %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	got = nil
	if err := se.Prefill(context.Background(), ids[:10], false); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("a one-chunk prefill reported %+v", got)
	}
}
