package server

import (
	"fmt"
	"strconv"
	"strings"

	"headinfer/engine/grammar"
)

// toolJob gives j the request's tools; with tool_choice "required" or a
// named function the output is constrained to calls, which cannot go
// with another constraint of the output.
func toolJob(j *job, spec *toolSpec, f *constraintFields) *apiError {
	j.tools = spec
	if !spec.constrained() {
		return nil
	}
	if j.grammar != nil {
		param := "response_format"
		switch {
		case f.Grammar != nil && *f.Grammar != "":
			param = "grammar"
		case !isNull(f.JSONSchema):
			param = "json_schema"
		}
		return badRequest(param, "invalid_value", "%s and tool_choice both constrain the output: a required tool call cannot also follow %s", param, param)
	}
	g, err := spec.grammar()
	if err != nil {
		return badRequest("tools", "invalid_schema", "the tools' grammar does not compile: %v", err)
	}
	j.grammar = g
	return nil
}

// grammar is the GBNF grammar of an answer that is only calls in the
// spec's format, of the named function or of any tool, one call or (with
// parallel_tool_calls) several. Each call writes "name" first, with the
// name as a literal, then the arguments in the language of the tool's
// parameters schema.
func (s *toolSpec) grammar() (*grammar.Grammar, error) {
	var b strings.Builder
	var calls []string
	argsKey := "arguments"
	if s.format == formatLlama3 {
		argsKey = "parameters"
	}
	for i, t := range s.tools {
		if s.choice == choiceNamed && t.name != s.named {
			continue
		}
		prefix := "t" + strconv.Itoa(i) + "-"
		rules, err := prefixRules(t.gbnf, prefix)
		if err != nil {
			return nil, err
		}
		b.WriteString(rules)
		rule := "call" + strconv.Itoa(i)
		open := `{"name": "` + t.name + `", "` + argsKey + `": `
		fmt.Fprintf(&b, "%s ::= %s %sroot \"}\"\n", rule, gbnfLiteral(open), prefix)
		calls = append(calls, rule)
	}
	fmt.Fprintf(&b, "call ::= %s\n", strings.Join(calls, " | "))
	many := func(open, sep, close string) string {
		if s.parallel {
			return fmt.Sprintf("%s call ( %s call )* %s", gbnfLiteral(open), gbnfLiteral(sep), gbnfLiteral(close))
		}
		return fmt.Sprintf("%s call %s", gbnfLiteral(open), gbnfLiteral(close))
	}

	var root string
	switch s.format {
	case formatGeneric:
		root = many(`{"tool_call": `, "", "}")
		if s.parallel {
			root = many(`{"tool_calls": [`, ", ", "]}")
		}
	case formatLlama3:
		root = many("", "\n", "")
	case formatHermes:
		if s.parallel {
			root = `"<tool_call>\n" call "\n</tool_call>" ( "\n<tool_call>\n" call "\n</tool_call>" )*`
		} else {
			root = `"<tool_call>\n" call "\n</tool_call>"`
		}
	case formatMistral:
		root = many("[", ", ", "]")
	}
	fmt.Fprintf(&b, "root ::= %s\n", strings.TrimSpace(strings.ReplaceAll(root, `""`, "")))
	return grammar.Parse(b.String())
}

// gbnfLiteral is s as a GBNF string literal.
func gbnfLiteral(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// prefixRules renames every rule of the GBNF text src, definitions and
// references, to prefix+name, so that the grammars of several schemas
// (each with its own "root", "value", "ws"...) can live in one grammar.
// Names are words outside string literals, character classes and
// comments.
func prefixRules(src, prefix string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '"' || c == '[':
			end := byte('"')
			if c == '[' {
				end = ']'
			}
			j := i + 1
			for j < len(src) && src[j] != end {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(src) {
				return "", fmt.Errorf("an unterminated %c in the schema's grammar", c)
			}
			b.WriteString(src[i : j+1])
			i = j + 1
		case c == '#':
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = len(src) - i
			}
			i += j
		case isRuleChar(c):
			j := i
			for j < len(src) && isRuleChar(src[j]) {
				j++
			}
			b.WriteString(prefix)
			b.WriteString(src[i:j])
			i = j
		case c == '{':
			// A repetition count, {m,n}: digits, not names.
			j := strings.IndexByte(src[i:], '}')
			if j < 0 {
				return "", fmt.Errorf("an unterminated { in the schema's grammar")
			}
			b.WriteString(src[i : i+j+1])
			i += j + 1
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// isRuleChar is GBNF's character of rule names.
func isRuleChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
