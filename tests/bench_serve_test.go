package tests

import (
	"bytes"
	"encoding/csv"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestBenchServe runs `bench serve` on stories260K with a shared prompt
// prefix and checks its CSV (one row per client count, every request
// answered, the prefix reused by every request) and that the plot is a
// PNG.
func TestBenchServe(t *testing.T) {
	dir := t.TempDir()
	csvPath, plotPath := filepath.Join(dir, "serve.csv"), filepath.Join(dir, "serve.png")
	const requests, prefix = 6, 12
	stdout, stderr, err := run(t, "bench", "serve", "-m", filepath.Join(modelsDir(t), "stories260K.gguf"), "-c", "256",
		"--parallel", "1", "--clients", "1,3", "--requests", strconv.Itoa(requests), "--prompt-tokens", "20", "--shared-prefix", strconv.Itoa(prefix),
		"--max-tokens", "5", "--csv", csvPath, "--plot", plotPath)
	if err != nil {
		t.Fatalf("bench serve: %v\n%s\n%s", err, stdout, stderr)
	}
	f, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(f)).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("CSV: %v\n%s", err, f)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for i, want := range []int{1, 3} {
		row := rows[i+1]
		num := func(name string) float64 {
			v, err := strconv.ParseFloat(row[col[name]], 64)
			if err != nil {
				t.Fatalf("column %s of %v: %v", name, row, err)
			}
			return v
		}
		if num("clients") != float64(want) || num("requests") != requests || num("errors") != 0 {
			t.Errorf("row %v: want %d clients, %d requests, no errors", row, want, requests)
		}
		// Greedy text may end early, but never beyond --max-tokens.
		if tok := num("tokens"); tok < requests || tok > 5*requests || num("tokens_per_second") <= 0 {
			t.Errorf("row %v: %v tokens", row, tok)
		}
		if num("ttft_p50_s") <= 0 || num("ttft_p95_s") < num("ttft_p50_s") {
			t.Errorf("row %v: time to first token", row)
		}
		// One sequence at a time (--parallel 1): each request finds the
		// shared prefix left in the slot by the one before.
		if c := num("cached_tokens"); c < prefix*requests {
			t.Errorf("row %v: %v cached prompt tokens, want at least %d", row, c, prefix*requests)
		}
	}
	p, err := os.Open(plotPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := png.Decode(p); err != nil {
		t.Errorf("plot: %v", err)
	}
}
