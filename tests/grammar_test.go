package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerateGrammar runs generate under --json-schema and --grammar:
// the text follows them, greedy and sampled, and a bad file is reported
// with where it is wrong, before the model loads.
func TestGenerateGrammar(t *testing.T) {
	model := filepath.Join(modelsDir(t), "stories260K.gguf")
	dir := t.TempDir()
	schema := filepath.Join(dir, "schema.json")
	os.WriteFile(schema, []byte(`{"type": "object", "properties": {"hero": {"type": "string", "maxLength": 10},
		"age": {"type": "integer", "minimum": 3, "maximum": 9}}, "required": ["hero", "age"], "additionalProperties": false}`), 0o644)
	gbnf := filepath.Join(dir, "g.gbnf")
	os.WriteFile(gbnf, []byte("root ::= \"The \" animal \" is \" (\"big\" | \"small\") \".\"\nanimal ::= \"cat\" | \"dog\" # pets\n"), 0o644)
	for _, temp := range []string{"0", "1"} {
		out, stderr, err := run(t, "generate", "-m", model, "-p", "Once upon a time", "-n", "60", "--temp", temp, "--seed", "3", "--json-schema", schema, "--json")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		var o struct {
			Text   string
			Finish string `json:"finish_reason"`
		}
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Hero *string
			Age  *int
		}
		dec := json.NewDecoder(strings.NewReader(o.Text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil || o.Finish != "stop" || v.Hero == nil || v.Age == nil || *v.Age < 3 || *v.Age > 9 {
			t.Errorf("--temp %s --json-schema: %q (%s) does not follow the schema: %v", temp, o.Text, o.Finish, err)
		}
		out, stderr, err = run(t, "generate", "-m", model, "-p", "Once upon a time", "-n", "30", "--temp", temp, "--grammar", gbnf)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if out = strings.TrimSpace(out); !strings.HasPrefix(out, "The ") || !strings.HasSuffix(out, ".") || (!strings.Contains(out, "cat") && !strings.Contains(out, "dog")) {
			t.Errorf("--temp %s --grammar: %q", temp, out)
		}
	}
	bad := filepath.Join(dir, "bad.gbnf")
	os.WriteFile(bad, []byte("root ::= x\nx ::= (\"a\" | \"b\"\n"), 0o644)
	_, stderr, err := run(t, "generate", "-m", "no-such-model.gguf", "-p", "x", "--grammar", bad)
	if err == nil || !strings.Contains(stderr, "bad.gbnf: grammar: 3:1: expected ) to close the group at 2:7") {
		t.Errorf("a bad grammar: %v, %q", err, stderr)
	}
	os.WriteFile(bad, []byte(`{"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}`), 0o644)
	_, stderr, err = run(t, "generate", "-m", "no-such-model.gguf", "-p", "x", "--json-schema", bad)
	if err == nil || !strings.Contains(stderr, `/properties/a/format`) || !strings.Contains(stderr, `"email"`) {
		t.Errorf("a bad schema: %v, %q", err, stderr)
	}
}
