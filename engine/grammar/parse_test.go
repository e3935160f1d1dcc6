package grammar

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		grammar string
		yes, no []string
	}{
		{`root ::= "a" "b" | "c"`, []string{"ab", "c"}, []string{"", "a", "abc", "b"}},
		{`root ::= [a-c]+ # letters` + "\n", []string{"a", "abcabc"}, []string{"", "d", "ad"}},
		{`root ::= [^a-c\n]*`, []string{"", "xyz", "é€"}, []string{"a", "x\n"}},
		{`root ::= "x"? "y"*`, []string{"", "x", "yyy", "xy"}, []string{"yx", "xx"}},
		{`root ::= "ab"{2}`, []string{"abab"}, []string{"ab", "ababab"}},
		{`root ::= "a"{2,}`, []string{"aa", "aaaaa"}, []string{"a"}},
		{`root ::= "a"{1,3}`, []string{"a", "aa", "aaa"}, []string{"", "aaaa"}},
		{`root ::= "a"{,2} "b"`, []string{"b", "ab", "aab"}, []string{"aaab"}},
		{`root ::= ("a" | "b" "c")+ .`, []string{"aa", "bcaZ", "a€"}, []string{"bc", "b"}},
		{"root ::= item (\",\" item)*\nitem ::= [0-9]+\n", []string{"1", "12,3,456"}, []string{"1,", ",1"}},
		{`root ::= "\x41\u00e9\U0001F600\t\"\\"`, []string{"Aé😀\t\"\\"}, []string{"A"}},
		{`root ::= [\x00-\x1f\]\-]`, []string{"\x01", "]", "-"}, []string{"a"}},
		// A line that begins with | goes on with the rule.
		{"root ::= \"a\"\n  | \"b\"\nother ::= \"c\"", []string{"a", "b"}, []string{"c"}},
		// Recursion that consumes a character first is fine.
		{"root ::= \"(\" root \")\" | \"\"", []string{"", "()", "((()))"}, []string{"(()", ")("}},
		{"root ::= (\n  \"a\"\n  | \"b\"\n)", []string{"a", "b"}, []string{"ab"}},
	}
	for _, c := range cases {
		g := mustParse(t, c.grammar)
		for _, s := range c.yes {
			if !g.Match(s) {
				t.Errorf("%q does not match %q", c.grammar, s)
			}
		}
		for _, s := range c.no {
			if g.Match(s) {
				t.Errorf("%q matches %q", c.grammar, s)
			}
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		grammar   string
		line, col int
		msg       string
	}{
		{`root ::= "a`, 1, 10, "unterminated string"},
		{"root ::= \"a\"\nfoo ::= bar", 2, 9, `"bar" is used but not defined`},
		{`foo ::= "a"`, 1, 1, "no root rule"},
		{`root ::= [b-a]`, 1, 12, "reversed"},
		{"root ::= \"a\" )", 1, 14, "unexpected ')'"},
		{"root := \"a\"", 1, 6, "expected ::="},
		{"root ::= (\"a\"", 1, 14, "expected ) to close the group at 1:10"},
		{`root ::= "a"{3,1}`, 1, 13, "below the minimum"},
		{`root ::= "a"{99999}`, 1, 13, "above 10000"},
		{`root ::= "\q"`, 1, 11, `unknown escape \q`},
		{`root ::= "\x4"`, 1, 11, "2 hexadecimal digits"},
		{"root ::= a\na ::= a \"x\"", 2, 1, `"a" is left-recursive`},
		{"root ::= b\nb ::= \"\" | c\nc ::= \"x\"? root", 1, 1, "left-recursive"},
		{"root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"},
		{`root ::= ""*`, 1, 12, "nothing to repeat"},
		{"root ::= * \"a\"", 1, 10, "unexpected '*'"},
		{"# only a comment\n\n  root ::= [", 3, 12, "unterminated character class"},
		{"root ::= \"é\" @", 1, 14, "unexpected '@'"},
	}
	for _, c := range cases {
		_, err := Parse(c.grammar)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a SyntaxError", c.grammar, err)
			continue
		}
		if se.Line != c.line || se.Col != c.col || !strings.Contains(se.Msg, c.msg) {
			t.Errorf("Parse(%q) = %v, want %d:%d: …%s…", c.grammar, err, c.line, c.col, c.msg)
		}
	}
}

// FuzzParse checks that any text either compiles or fails with a
// SyntaxError inside the text, and that a compiled grammar can be matched
// against the text without trouble.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`root ::= "a" | [b-z]+ ("x" "y"){1,3}`,
		"root ::= item (\",\" item)*\nitem ::= [0-9]+ # digits\n",
		`root ::= "\u00e9\x41" [^\]\\] .? "z"{,4}`,
		"root ::= (\n \"a\"\n | b\n)\nb ::= \"\" | \"b\" b",
		"root ::= a\na ::= a \"x\"",
		"root ::= \"a\"{2,}",
		"root ::= [",
		"root ::= \"(\" root \")\" | \"\"",
		"root ::= ((((((\"a\"))))))*",
	} {
		f.Add(s, "ab")
	}
	f.Fuzz(func(t *testing.T, src, text string) {
		g, err := Parse(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): %v is not a SyntaxError", src, err)
			}
			if lines := strings.Count(src, "\n") + 1; se.Line < 1 || se.Line > lines || se.Col < 1 {
				t.Fatalf("Parse(%q): position %d:%d outside the text", src, se.Line, se.Col)
			}
			return
		}
		g.Match(text)
	})
}

// llamaCppJSON is llama.cpp's grammars/json.gbnf, as its users write
// grammars: rules over several lines, groups across lines, comments.
const llamaCppJSON = `root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
`

func TestLlamaCppGrammars(t *testing.T) {
	g := mustParse(t, llamaCppJSON)
	for _, s := range []string{`{}`, `{"a": [1, -2.5e3, "x\u00e9\n"], "b": {"c": null}}`, "{\n  \"k\": true\n}"} {
		if !g.Match(s) {
			t.Errorf("json.gbnf does not match %q", s)
		}
	}
	for _, s := range []string{`[]`, `{"a" 1}`, `{"a": 01}`} {
		if g.Match(s) {
			t.Errorf("json.gbnf matches %q", s)
		}
	}
	arith := mustParse(t, "root  ::= (expr \"=\" ws term \"\\n\")+\nexpr  ::= term ([-+*/] term)*\nterm  ::= ident | num | \"(\" ws expr \")\" ws\nident ::= [a-z] [a-z0-9_]* ws\nnum   ::= [0-9]+ ws\nws    ::= [ \\t\\n]*\n")
	if !arith.Match("(a+1)*b2= 7\n") || arith.Match("a+=1\n") {
		t.Error("arithmetic.gbnf")
	}
}
