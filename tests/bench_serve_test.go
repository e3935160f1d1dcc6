package tests

import (
	"bytes"
	"encoding/csv"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	checkSteps(t, stdout, rows, 1)
	p, err := os.Open(plotPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := png.Decode(p); err != nil {
		t.Errorf("plot: %v", err)
	}
}

// TestBenchServeSteps runs `bench serve` with several sequences per step
// and checks the engine's decode steps it reports: a step time, and the
// sequences per step (exactly one with one client).
func TestBenchServeSteps(t *testing.T) {
	csvPath := filepath.Join(t.TempDir(), "serve.csv")
	const parallel = 3
	stdout, stderr, err := run(t, "bench", "serve", "-m", filepath.Join(modelsDir(t), "stories260K.gguf"), "-c", "256",
		"--parallel", strconv.Itoa(parallel), "--clients", "1,3", "--requests", "6", "--prompt-tokens", "16",
		"--max-tokens", "8", "--csv", csvPath)
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
	checkSteps(t, stdout, rows, parallel)
	if one := rows[1][slices.Index(rows[0], "seqs_per_step")]; one != "1.000" {
		t.Errorf("one client: %s sequences per step, want 1", one)
	}
}

// checkSteps checks the decode-step columns of bench serve's table
// (stdout) and CSV (rows, a header first): every client count ran steps
// that took time, of 1 to parallel sequences.
func checkSteps(t *testing.T, stdout string, rows [][]string, parallel int) {
	t.Helper()
	if !strings.Contains(stdout, "| step ms p50 | seqs/step |") {
		t.Errorf("the table lacks the step columns:\n%s", stdout)
	}
	col := func(name string) int {
		i := slices.Index(rows[0], name)
		if i < 0 {
			t.Fatalf("CSV has no column %s: %v", name, rows[0])
		}
		return i
	}
	step, seqs, steps := col("step_p50_s"), col("seqs_per_step"), col("steps")
	for _, row := range rows[1:] {
		num := func(i int) float64 {
			v, err := strconv.ParseFloat(row[i], 64)
			if err != nil {
				t.Fatalf("column %s of %v: %v", rows[0][i], row, err)
			}
			return v
		}
		if num(steps) < 1 || num(step) <= 0 {
			t.Errorf("row %v: %v steps of median %v s", row, num(steps), num(step))
		}
		if s := num(seqs); s < 1 || s > float64(parallel) {
			t.Errorf("row %v: %v sequences per step, want 1 to %d", row, s, parallel)
		}
	}
}
