package server

import (
	"bytes"
	"encoding/json"
	"sync"

	"headinfer/engine/grammar"
	"headinfer/engine/grammar/jsonschema"
	"headinfer/engine/tokenizer"
)

// constraintFields are the request fields that constrain the output to a
// language: OpenAI's response_format, and llama-server's grammar (GBNF)
// and json_schema. Every generation route reads them.
type constraintFields struct {
	ResponseFormat json.RawMessage `json:"response_format"`
	Grammar        *string         `json:"grammar"`
	JSONSchema     json.RawMessage `json:"json_schema"`
}

// responseFormat is OpenAI's response_format: {"type": "text"},
// {"type": "json_object"} or {"type": "json_schema", "json_schema":
// {"name", "schema", "strict"}}. llama-server's {"type": "json_object",
// "schema": {...}} is read as a schema too.
type responseFormat struct {
	Type       string          `json:"type"`
	Schema     json.RawMessage `json:"schema"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"` // accepted: the grammar is always strict
	} `json:"json_schema"`
}

// grammarOf compiles the request's constraint, or returns nil when it
// asks for none. A grammar or schema that cannot be compiled is a 400
// whose message says where (line:column, or the keyword and its place).
func grammarOf(f *constraintFields) (*grammar.Grammar, *apiError) {
	var set []string
	if f.Grammar != nil && *f.Grammar != "" {
		set = append(set, "grammar")
	}
	if !isNull(f.JSONSchema) {
		set = append(set, "json_schema")
	}
	var rf responseFormat
	if !isNull(f.ResponseFormat) {
		if err := json.Unmarshal(f.ResponseFormat, &rf); err != nil {
			return nil, badRequest("response_format", "invalid_type", "response_format must be an object with a type: %v", err)
		}
		switch rf.Type {
		case "text":
		case "json_object", "json_schema":
			set = append(set, "response_format")
		default:
			return nil, badRequest("response_format", "invalid_value", "response_format.type %q is not one of text, json_object, json_schema", rf.Type)
		}
	}
	if len(set) > 1 {
		return nil, badRequest(set[1], "invalid_value", "%s and %s both constrain the output: send one of them", set[0], set[1])
	}
	if len(set) == 0 {
		return nil, nil
	}
	switch set[0] {
	case "grammar":
		g, err := grammar.Parse(*f.Grammar)
		if err != nil {
			return nil, badRequest("grammar", "invalid_grammar", "%v", err)
		}
		return g, nil
	case "json_schema":
		return schemaGrammar("json_schema", f.JSONSchema)
	}
	schema := rf.Schema
	if rf.Type == "json_schema" {
		if rf.JSONSchema == nil {
			return nil, badRequest("response_format", "invalid_value", "response_format of type json_schema needs a json_schema object")
		}
		schema = rf.JSONSchema.Schema
	}
	if isNull(schema) {
		g, err := grammar.Parse(grammar.JSON)
		if err != nil {
			return nil, &apiError{Status: 500, Type: "server_error", Message: err.Error()}
		}
		return g, nil
	}
	return schemaGrammar("response_format", schema)
}

// schemaGrammar compiles a JSON Schema given in field param.
func schemaGrammar(param string, schema json.RawMessage) (*grammar.Grammar, *apiError) {
	if t := bytes.TrimSpace(schema); len(t) == 0 || (t[0] != '{' && string(t) != "true" && string(t) != "false") {
		return nil, badRequest(param, "invalid_type", "%s: the schema must be a JSON object", param)
	}
	g, err := jsonschema.Compile(schema)
	if err != nil {
		return nil, badRequest(param, "invalid_schema", "%v", err)
	}
	return g, nil
}

// grammarVocab is the vocabulary trie that grammar masks walk, built on
// the first constrained request: a model that never serves one does not
// pay for it.
type grammarVocab struct {
	once sync.Once
	v    *grammar.Vocab
}

func (g *grammarVocab) get(tok tokenizer.Tokenizer) *grammar.Vocab {
	g.once.Do(func() { g.v = grammar.VocabOf(tok) })
	return g.v
}
