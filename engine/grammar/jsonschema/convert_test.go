package jsonschema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"headinfer/engine/grammar"
)

func mustCompile(t *testing.T, schema string) *grammar.Grammar {
	t.Helper()
	g, err := Compile([]byte(schema))
	if err != nil {
		src, _ := Convert([]byte(schema))
		t.Fatalf("Compile(%s): %v\n%s", schema, err, src)
	}
	return g
}

func TestSchemas(t *testing.T) {
	cases := []struct {
		schema  string
		yes, no []string
	}{
		{`{"type":"string"}`, []string{`""`, `"a\"b\\c\u00e9"`, `"x" `}, []string{`"a`, `'a'`, `"\ud800"`, "\"\x01\""}},
		{`{"type":"integer"}`, []string{`0`, `-12`, `1234567890123456`}, []string{`01`, `1.5`, `12345678901234567`, `-`}},
		{`{"type":"number"}`, []string{`0`, `-1.25e+3`, `3.0`}, []string{`.5`, `1.`, `+1`}},
		{`{"type":["boolean","null"]}`, []string{`true`, `null`}, []string{`1`, `"true"`}},
		{`{"enum":["a",1,null,{"k":[true]}]}`, []string{`"a"`, `1`, `null`, `{"k":[true]}`}, []string{`"b"`, `{"k":[]}`}},
		{`{"const":"x<y"}`, []string{`"x<y"`}, []string{`"x"`}},
		{`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}},"required":["b"],"additionalProperties":false}`,
			[]string{`{"b":""}`, `{"a":1,"b":"x"}`, `{ "a" : 1 , "b" : "x" }`},
			[]string{`{}`, `{"a":1}`, `{"b":"x","a":1}`, `{"b":"x","c":1}`, `{"a":1,,"b":""}`, `{,"b":""}`}},
		{`{"properties":{"a":{"const":1}},"additionalProperties":{"type":"boolean"}}`,
			[]string{`{}`, `{"a":1}`, `{"a":1,"ab":true}`, `{"b":false,"c":true}`, `{"":true}`},
			[]string{`{"a":true}`, `{"a":1,"a":true}`, `{"b":1}`, `{"a\u0062":true}`}},
		{`{"type":"object","properties":{"x":{}}}`, []string{`{"x":[1,{"y":null}],"z":"w"}`}, []string{`{"x":1,"x":2}`}},
		{`{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`,
			[]string{`[1]`, `[1,2,3]`, `[ 1 , 2 ]`}, []string{`[]`, `[1,2,3,4]`, `[1,]`, `["a"]`}},
		{`{"type":"array","prefixItems":[{"type":"string"},{"type":"null"}],"items":false}`,
			[]string{`[]`, `["a"]`, `["a",null]`}, []string{`[null]`, `["a",null,1]`}},
		{`{"type":"array","prefixItems":[{"const":1}],"minItems":2}`, []string{`[1,"x"]`, `[1,2,3]`}, []string{`[1]`, `[2,2]`}},
		{`{"type":"string","minLength":2,"maxLength":3}`, []string{`"ab"`, `"abc"`, `"\n\u00e9"`}, []string{`"a"`, `"abcd"`}},
		{`{"anyOf":[{"type":"integer"},{"type":"string","maxLength":1}]}`, []string{`5`, `"a"`}, []string{`"ab"`, `true`}},
		{`{"allOf":[{"properties":{"a":{"const":1}},"required":["a"]},{"properties":{"b":{"const":2}}}]}`,
			[]string{`{"a":1}`, `{"a":1,"b":2}`}, []string{`{"b":2}`}},
		{`{"allOf":[{"properties":{"a":{"const":1},"b":{"const":2}},"additionalProperties":false},{"properties":{"b":{"const":2},"c":{"const":3}}}]}`,
			[]string{`{"a":1,"b":2}`, `{}`}, []string{`{"c":3}`, `{"d":4}`}},
		{`{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#/$defs/node"}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/node"}`,
			[]string{`{"v":1}`, `{"v":1,"next":{"v":2,"next":{"v":3}}}`}, []string{`{"v":1,"next":{}}`}},
		{`{"type":"array","items":{"$ref":"#"},"maxItems":2}`, []string{`[]`, `[[],[[]]]`}, []string{`[1]`}},
		{`{"type":"string","format":"date"}`, []string{`"2024-02-28"`, `"1999-12-31"`, `"2024-04-30"`}, []string{`"2024-02-30"`, `"2024-04-31"`, `"2024-13-01"`, `"2024-1-01"`}},
		{`{"type":"string","format":"time"}`, []string{`"23:59:59Z"`, `"00:00:00.123+05:30"`}, []string{`"24:00:00Z"`, `"12:00:00"`}},
		{`{"type":"string","format":"date-time"}`, []string{`"2024-01-31T12:00:00Z"`}, []string{`"2024-01-31 12:00:00Z"`}},
		{`{"type":"string","format":"uuid"}`, []string{`"123e4567-e89b-12d3-a456-426614174000"`}, []string{`"123e4567e89b12d3a456426614174000"`}},
		{`{"type":"string","pattern":"^[a-c]+\\d{2}$"}`, []string{`"ab12"`}, []string{`"ab1"`, `"xab12"`, `"ab12x"`}},
		{`{"type":"string","pattern":"x(ab|cd)?y"}`, []string{`"xy"`, `"__xaby"`, `"xcdy__"`}, []string{`"xay"`, `"x"`}},
		{`{"type":"string","pattern":"^a\\.b\\\\\"$"}`, []string{`"a.b\\\""`}, []string{`"axb\\\""`}},
		{`{"type":"string","pattern":"^[^a]\\s$"}`, []string{`"b "`, `"b\n"`}, []string{`"a "`, `"\"\n"`}},
		{`true`, []string{`{"a":[1,2,{}]}`, `"s"`, `-1.5`}, []string{`{`}},
		{`{"required":["id"],"additionalProperties":{"type":"integer"}}`, []string{`{"id":1}`, `{"id":1,"n":2}`}, []string{`{}`, `{"n":2}`, `{"id":"x"}`}},
		{`{"properties":{"a":{}},"required":["b"]}`, []string{`{"b":null}`, `{"a":1,"b":[]}`}, []string{`{"a":1}`}},
	}
	for _, c := range cases {
		g := mustCompile(t, c.schema)
		for _, s := range c.yes {
			if !g.Match(s) {
				src, _ := Convert([]byte(c.schema))
				t.Errorf("%s does not accept %s\n%s", c.schema, s, src)
			}
		}
		for _, s := range c.no {
			if g.Match(s) {
				t.Errorf("%s accepts %s", c.schema, s)
			}
		}
	}
}

// TestIntegerRanges checks the digit-by-digit ranges against every
// integer near their bounds and the powers of ten between.
func TestIntegerRanges(t *testing.T) {
	bounds := []string{"-1000", "-999", "-101", "-100", "-99", "-10", "-9", "-1", "0", "1", "7", "9", "10", "19", "99", "100", "105", "999", "1000", "4096", "65535"}
	var probes []int64
	for _, p := range []int64{0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535, 65536, 99999, 100000} {
		probes = append(probes, p, -p)
	}
	for _, b := range bounds {
		n, _ := strconv.ParseInt(b, 10, 64)
		for d := int64(-2); d <= 2; d++ {
			probes = append(probes, n+d)
		}
	}
	for _, lo := range append(bounds, "") {
		for _, hi := range append(bounds, "") {
			var parts []string
			if lo != "" {
				parts = append(parts, `"minimum":`+lo)
			}
			if hi != "" {
				parts = append(parts, `"exclusiveMaximum":`+hi)
			}
			schema := `{"type":"integer"` + strings.Join(append([]string{""}, parts...), ",") + "}"
			l, _ := strconv.ParseInt(lo, 10, 64)
			h, _ := strconv.ParseInt(hi, 10, 64)
			if lo != "" && hi != "" && l >= h {
				if _, err := Convert([]byte(schema)); err == nil {
					t.Errorf("%s: empty range accepted", schema)
				}
				continue
			}
			g := mustCompile(t, schema)
			for _, x := range probes {
				want := (lo == "" || x >= l) && (hi == "" || x < h)
				if got := g.Match(strconv.FormatInt(x, 10)); got != want {
					t.Errorf("%s: %d accepted %v, want %v", schema, x, got, want)
				}
			}
		}
	}
	g := mustCompile(t, `{"type":"integer","minimum":2.5,"maximum":7.5}`)
	for x := 0; x <= 9; x++ {
		if g.Match(strconv.Itoa(x)) != (x >= 3 && x <= 7) {
			t.Errorf("[2.5, 7.5]: %d", x)
		}
	}
}

// TestPatterns compares patterns with Go's regexp on sample strings.
func TestPatterns(t *testing.T) {
	patterns := []string{`^\d{3}-\d{4}$`, `^[A-Z][a-z]*( [A-Z][a-z]*)*$`, `ab+c`, `^(?:x|yz){2,3}$`, `^\w+@\w+\.com$`, `^[^0-9]?$`, `^a{0}b$`, `^.{2}$`}
	samples := []string{"", "555-1234", "55-1234", "Hello World", "hello", "abbbc", "xxabcxx", "ac", "xyz", "xyzx", "x", "yzyzyz", "me@host.com", "me@host.org", "a", "5", "b", "ab", "é!"}
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		g := mustCompile(t, fmt.Sprintf(`{"type":"string","pattern":%q}`, p))
		for _, s := range samples {
			if got, want := g.Match(strconv.Quote(s)), re.MatchString(s); got != want {
				t.Errorf("pattern %s on %q: grammar %v, regexp %v", p, s, got, want)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	cases := []struct{ schema, msg string }{
		{`{"type":"string","not":{}}`, `unsupported keyword "not"`},
		{`{"properties":{"a":{"type":"object","patternProperties":{}}}}`, `at /properties/a: unsupported keyword "patternProperties"`},
		{`{"type":"strin"}`, `unknown type "strin"`},
		{`{"$ref":"http://example.com/s.json"}`, `only references within the schema`},
		{`{"$defs":{},"$ref":"#/$defs/missing"}`, `"missing" not found`},
		{`{"type":"string","format":"email"}`, `unsupported format "email"`},
		{`{"type":"number","minimum":0}`, `minimum is supported for type integer only`},
		{`{"type":"array","minItems":3,"maxItems":2}`, `below minItems`},
		{`{"type":"string","pattern":"(?=a)"}`, `not supported`},
		{`{"type":"string","pattern":"a\\1"}`, `escape \1 is not supported`},
		{`{"allOf":[{"type":"string"},{"type":"object"}]}`, `allOf is supported for object schemas only`},
		{`{"type":"object","required":["x"],"properties":{},"additionalProperties":false}`, `required property "x" is not in properties, and additionalProperties is false`},
		{`false`, `accepts nothing`},
		{`{"type":"string"`, `json schema`},
		{`{"type":"integer","minimum":1e300}`, `beyond`},
		{`{"type":"string","pattern":"a","maxLength":3}`, `maxLength together with pattern`},
	}
	for _, c := range cases {
		_, err := Convert([]byte(c.schema))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("Convert(%s) = %v, want an error with %q", c.schema, err, c.msg)
		}
	}
}

// FuzzConvert checks that any schema text converts to a grammar that
// compiles, or fails with an error; never a panic.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{"type":"object","properties":{"a":{"type":"integer","minimum":-5,"maximum":120}},"required":["a"]}`,
		`{"type":"array","prefixItems":[{"const":1}],"items":{"type":"string","maxLength":3},"maxItems":4}`,
		`{"anyOf":[{"type":"string","pattern":"^[a-z]{2,}(x|y)?$"},{"enum":[1,"a",null]}]}`,
		`{"$defs":{"n":{"properties":{"c":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		`{"allOf":[{"properties":{"a":{}}},{"required":["a"],"additionalProperties":false,"properties":{"a":{}}}]}`,
		`{"type":"string","format":"date-time"}`,
		`{"type":["string","null"],"minLength":1}`,
		`{"type":"string","pattern":"\\d{0,2}[^\\]\\\\]+."}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, schema string) {
		src, err := Convert([]byte(schema))
		if err != nil {
			return
		}
		if _, err := grammar.Parse(src); err != nil {
			t.Fatalf("the grammar of %s does not compile: %v\n%s", schema, err, src)
		}
	})
}
