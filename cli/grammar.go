package cli

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"headinfer/engine/grammar"
	"headinfer/engine/grammar/jsonschema"
)

// grammarFlags constrain generate's output to a language.
func grammarFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "grammar", Usage: "constrain the output to the GBNF grammar in `FILE` (llama.cpp's notation, start rule root)"},
		&cli.StringFlag{Name: "json-schema", Usage: "constrain the output to JSON valid against the JSON Schema in `FILE`"},
	}
}

// grammarOf compiles the grammar the flags name, or returns nil when they
// name none. It runs before the model loads, so that a typo costs no
// load.
func grammarOf(c *cli.Context) (*grammar.Grammar, error) {
	gf, sf := c.String("grammar"), c.String("json-schema")
	switch {
	case gf != "" && sf != "":
		return nil, fmt.Errorf("--grammar and --json-schema both constrain the output: pass one of them")
	case gf != "":
		src, err := os.ReadFile(gf)
		if err != nil {
			return nil, err
		}
		g, err := grammar.Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("--grammar %s: %w", gf, err)
		}
		return g, nil
	case sf != "":
		src, err := os.ReadFile(sf)
		if err != nil {
			return nil, err
		}
		g, err := jsonschema.Compile(src)
		if err != nil {
			return nil, fmt.Errorf("--json-schema %s: %w", sf, err)
		}
		return g, nil
	}
	return nil, nil
}
