package jsonschema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sjs "github.com/santhosh-tekuri/jsonschema/v6"

	"headinfer/engine/gguf"
	"headinfer/engine/grammar"
	"headinfer/engine/sample"
	"headinfer/engine/tokenizer"
)

var llama struct {
	once sync.Once
	tok  tokenizer.Tokenizer
	v    *grammar.Vocab
	err  error
}

// llamaVocab reads the real Llama-2 vocabulary from shared/models, found
// above the working directory.
func llamaVocab(t testing.TB) (tokenizer.Tokenizer, *grammar.Vocab) {
	t.Helper()
	llama.once.Do(func() {
		dir, err := os.Getwd()
		for err == nil {
			p := filepath.Join(dir, "shared", "models", "llama-2-tiny-random.gguf")
			if _, e := os.Stat(p); e == nil {
				f, e := gguf.Open(p)
				if e != nil {
					llama.err = e
					return
				}
				defer f.Close()
				if llama.tok, llama.err = tokenizer.FromGGUF(f); llama.err == nil {
					llama.v = grammar.VocabOf(llama.tok)
				}
				return
			}
			if filepath.Dir(dir) == dir {
				err = fmt.Errorf("shared/models/llama-2-tiny-random.gguf not found above the working directory")
			}
			dir = filepath.Dir(dir)
		}
		llama.err = err
	})
	if llama.err != nil {
		t.Fatal(llama.err)
	}
	return llama.tok, llama.v
}

// schemaGen makes random schemas whose texts are bounded (strings,
// arrays and objects have maximum sizes), so that a generation of random
// tokens ends.
type schemaGen struct{ r *rand.Rand }

var words = []string{"id", "name", "tags", "x", "value", "é", "a b", "kind", "on", "list"}

func (g schemaGen) pick(xs ...any) any { return xs[g.r.IntN(len(xs))] }

func (g schemaGen) schema(depth int) map[string]any {
	r := g.r
	kinds := 10
	if depth > 2 {
		kinds = 7 // no more nesting
	}
	switch r.IntN(kinds) {
	case 0:
		s := map[string]any{"type": "string", "maxLength": r.IntN(8)}
		if r.IntN(2) == 0 {
			s["minLength"] = r.IntN(s["maxLength"].(int) + 1)
		}
		return s
	case 1:
		switch r.IntN(3) {
		case 0:
			return map[string]any{"type": "string", "format": g.pick("date", "time", "date-time", "uuid")}
		case 1:
			return map[string]any{"type": "string", "pattern": g.pick(`^[a-z]{1,5}$`, `^\d{3}-\d{2}$`, `^(foo|bar){1,3}$`, `^[A-Z]\w{0,3}\.?$`, `^\S{2}\s[^a-z"]$`)}
		}
		return map[string]any{"enum": []any{"red", 3, nil, "a\"b", map[string]any{"k": []any{1}}}[:1+r.IntN(5)]}
	case 2:
		s := map[string]any{"type": "integer"}
		if r.IntN(3) > 0 {
			s["minimum"] = r.IntN(2000) - 1000
		}
		if r.IntN(3) > 0 {
			if lo, ok := s["minimum"].(int); ok {
				s["maximum"] = lo + r.IntN(5000)
			} else {
				s["maximum"] = r.IntN(3000) - 1000
			}
		}
		if r.IntN(4) == 0 {
			s["exclusiveMinimum"] = r.IntN(100) - 50
		}
		return s
	case 3:
		return map[string]any{"type": "number"}
	case 4:
		return map[string]any{"type": g.pick("boolean", "null", []any{"boolean", "null"})}
	case 5:
		return map[string]any{"const": g.pick("c", 42, false, []any{1, "x"})}
	case 6:
		return map[string]any{"type": []any{"string", "integer"}, "maxLength": 3, "minimum": 0, "maximum": 9}
	case 7:
		s := map[string]any{"type": "array", "items": g.schema(depth + 1), "maxItems": r.IntN(4)}
		s["minItems"] = r.IntN(s["maxItems"].(int) + 1)
		if r.IntN(3) == 0 {
			s["prefixItems"] = []any{g.schema(depth + 1), g.schema(depth + 1)}
			s["items"] = false
			delete(s, "minItems")
		}
		return s
	case 8:
		if r.IntN(3) == 0 {
			// oneOf is generated as anyOf, so its branches must not
			// overlap for every text to be valid: different types.
			return map[string]any{"oneOf": []any{
				map[string]any{"type": "integer", "minimum": r.IntN(10)},
				map[string]any{"type": "array", "items": g.schema(depth + 1), "maxItems": 2},
			}}
		}
		return map[string]any{"anyOf": []any{g.schema(depth + 1), g.schema(depth + 1)}}
	}
	props := map[string]any{}
	var required []any
	for range 1 + r.IntN(4) {
		w := words[r.IntN(len(words))]
		props[w] = g.schema(depth + 1)
		if r.IntN(2) == 0 {
			required = append(required, w)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = dedupe(required)
	}
	if r.IntN(4) == 0 {
		// The same object as allOf: the closed branch bounds the other.
		other := map[string]any{"properties": map[string]any{}}
		for k, v := range props {
			if r.IntN(2) == 0 {
				other["properties"].(map[string]any)[k] = v
			}
		}
		return map[string]any{"allOf": []any{s, other}}
	}
	return s
}

func dedupe(xs []any) []any {
	seen := map[any]bool{}
	var out []any
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// fixedSchemas are shapes the random ones lack: recursion through $ref.
var fixedSchemas = []string{
	`{"$defs":{"t":{"type":"object","properties":{"v":{"type":"integer","minimum":-3,"maximum":3},"kids":{"type":"array","items":{"$ref":"#/$defs/t"},"maxItems":2}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/t"}`,
	`{"type":"object","properties":{"when":{"type":"string","format":"date-time"},"who":{"$ref":"#/$defs/id"}},"required":["when","who"],"additionalProperties":{"type":"boolean"},"maxProperties":null,"$defs":{"id":{"type":"string","format":"uuid"}}}`,
}

// generate draws tokens at temperature 1 from random logits constrained
// by g until EOS; the fake model gives EOS a large bonus, so that a text
// ends once the grammar lets it. It returns the text and whether EOS came
// within limit tokens.
//
// With quotes the fake model also favours tokens that hold a quote, as a
// model writing short strings would: under grammars with unbounded
// strings (keys of extra properties, json_object), random tokens would
// otherwise take thousands of steps to close one.
func generate(t *testing.T, tok tokenizer.Tokenizer, v *grammar.Vocab, g *grammar.Grammar, seed uint64, limit int, quotes bool) (string, bool) {
	r := rand.New(rand.NewPCG(seed, 7))
	m := grammar.NewMatcher(g, v)
	s := sample.New(sample.Params{Temperature: 1, Seed: seed})
	logits := make([]float32, v.Size())
	var out strings.Builder
	for range limit {
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * 2)
		}
		logits[tok.EOS()] += 30
		if quotes {
			for _, id := range quoteTokens(tok) {
				logits[id] += 8
			}
		}
		if err := m.Mask(logits); err != nil {
			t.Fatalf("after %q: %v", out.String(), err)
		}
		id := s.Sample(logits, nil)
		if err := m.Accept(id); err != nil {
			t.Fatalf("after %q: sampled a masked token: %v", out.String(), err)
		}
		if tok.IsEOG(id) {
			return out.String(), true
		}
		out.WriteString(tok.Piece(id))
	}
	return out.String(), false
}

var quoteIDs struct {
	once sync.Once
	ids  []int32
}

// quoteTokens are the tokens whose text holds a double quote.
func quoteTokens(tok tokenizer.Tokenizer) []int32 {
	quoteIDs.once.Do(func() {
		for id := range tok.VocabSize() {
			if strings.Contains(tok.Piece(int32(id)), `"`) {
				quoteIDs.ids = append(quoteIDs.ids, int32(id))
			}
		}
	})
	return quoteIDs.ids
}

// tail shortens a long text for a message.
func tail(s string) string {
	if len(s) > 300 {
		return "…" + s[len(s)-300:]
	}
	return s
}

// TestGeneratedTextsValidate samples texts under random schemas and
// checks each with an independent JSON Schema validator (formats
// asserted).
func TestGeneratedTextsValidate(t *testing.T) {
	tok, v := llamaVocab(t)
	schemas := append([]string(nil), fixedSchemas...)
	gen := schemaGen{rand.New(rand.NewPCG(11, 12))}
	n := 60
	if testing.Short() {
		n = 10
	}
	for range n {
		b, _ := json.Marshal(gen.schema(0))
		schemas = append(schemas, string(b))
	}
	schemas[1] = strings.Replace(schemas[1], `,"maxProperties":null`, "", 1)
	for i, schema := range schemas {
		g, err := Compile([]byte(schema))
		if err != nil {
			t.Fatalf("schema %d %s: %v", i, schema, err)
		}
		doc, err := sjs.UnmarshalJSON(strings.NewReader(schema))
		if err != nil {
			t.Fatal(err)
		}
		c := sjs.NewCompiler()
		c.AssertFormat()
		if err := c.AddResource("schema.json", doc); err != nil {
			t.Fatal(err)
		}
		validator, err := c.Compile("schema.json")
		if err != nil {
			t.Fatalf("schema %d %s: the validator refuses it: %v", i, schema, err)
		}
		for seed := range uint64(3) {
			text, ended := generate(t, tok, v, g, uint64(i)*100+seed, 1500, i < len(fixedSchemas))
			if !ended {
				t.Errorf("schema %d %s seed %d: no end after 1500 tokens: %q", i, schema, seed, text)
				continue
			}
			inst, err := sjs.UnmarshalJSON(bytes.NewReader([]byte(text)))
			if err != nil {
				t.Errorf("schema %d %s seed %d: %q is not JSON: %v", i, schema, seed, text, err)
				continue
			}
			if err := validator.Validate(inst); err != nil {
				t.Errorf("schema %d %s seed %d: %q does not validate: %v", i, schema, seed, text, err)
			}
		}
	}
}

// TestJSONObjectTexts samples under the generic JSON grammar of
// response_format json_object; every text that ends is one JSON object.
func TestJSONObjectTexts(t *testing.T) {
	tok, v := llamaVocab(t)
	g, err := grammar.Parse(grammar.JSON)
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for seed := range uint64(4) {
		text, ended := generate(t, tok, v, g, seed, 3000, true)
		if !ended {
			t.Errorf("seed %d: no end after 3000 tokens", seed)
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(text), &obj); err != nil {
			t.Errorf("seed %d: %q is not a JSON object: %v", seed, tail(text), err)
		}
		members += len(obj)
	}
	if members == 0 {
		t.Error("every object is empty: the test shows nothing of the grammar")
	}
}
