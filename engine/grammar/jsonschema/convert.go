package jsonschema

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"headinfer/engine/grammar"
)

// Convert returns a GBNF grammar of the JSON texts valid against schema
// (JSON text). Errors name the unsupported keyword or the bad value and
// its place as a JSON pointer into the schema.
func Convert(schema []byte) (string, error) {
	src, _, err := convert(schema)
	return src, err
}

// Compile converts schema and compiles the grammar.
func Compile(schema []byte) (*grammar.Grammar, error) {
	_, g, err := convert(schema)
	return g, err
}

func convert(schema []byte) (string, *grammar.Grammar, error) {
	v, err := decode(schema)
	if err != nil {
		return "", nil, err
	}
	c := &converter{root: v, defined: map[string]bool{}, refs: map[string]string{}}
	for name := range primitives {
		c.defined[name] = true
	}
	expr, err := c.visit(v, "")
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "root ::= %s\n", expr)
	for _, r := range c.rules {
		fmt.Fprintf(&b, "%s ::= %s\n", r.name, r.body)
	}
	for _, name := range c.usedPrims() {
		fmt.Fprintf(&b, "%s ::= %s\n", name, primitives[name].body)
	}
	src := b.String()
	g, err := grammar.Parse(src)
	if err != nil {
		// The grammar is well formed by construction; what can fail is a
		// chain of $ref that comes back to itself before any value.
		return "", nil, fmt.Errorf("json schema: the schema cannot be turned into a grammar (a $ref cycle with no value in between?): %w", err)
	}
	return src, g, nil
}

type rule struct{ name, body string }

// converter writes the rules of one schema.
type converter struct {
	root    any
	rules   []rule
	defined map[string]bool   // names taken, primitives included
	refs    map[string]string // $ref → the rule of its target
	prims   map[string]bool   // primitives used
}

// primitive is a shared rule, written once when some schema uses it.
type primitive struct {
	body string
	deps []string
}

var primitives = map[string]primitive{
	"ws":      {`| " " | "\n" [ \t]{0,20}`, nil},
	"hex":     {`[0-9a-fA-F]`, nil},
	"char":    {`[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CeEfF] hex{3} | [dD] [0-7] hex{2} ) )`, []string{"hex"}},
	"string":  {`"\"" char* "\"" ws`, []string{"char", "ws"}},
	"number":  {`"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )? ws`, []string{"ws"}},
	"integer": {`"-"? ( "0" | [1-9] [0-9]{0,15} ) ws`, []string{"ws"}},
	"boolean": {`( "true" | "false" ) ws`, []string{"ws"}},
	"null":    {`"null" ws`, []string{"ws"}},
	"value":   {`object | array | string | number | boolean | null`, []string{"object", "array", "string", "number", "boolean", "null"}},
	"object":  {`"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws`, []string{"ws", "string", "value"}},
	"array":   {`"[" ws ( value ( "," ws value )* )? "]" ws`, []string{"ws", "value"}},
	"date":    {`[0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" day31 | ( "0" [469] | "11" ) "-" day30 | "02" "-" day28 )`, []string{"day28", "day30", "day31"}},
	"day28":   {`"0" [1-9] | "1" [0-9] | "2" [0-8]`, nil},
	"day30":   {`day28 | "29" | "30"`, []string{"day28"}},
	"day31":   {`day30 | "31"`, []string{"day30"}},
	"time":    {`( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`, nil},
	"uuid":    {`hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12}`, []string{"hex"}},
	// Characters of a pattern's JSON string: no escapes.
	"pchar": {`[^"\\\x7F\x00-\x1F]`, nil},
}

// prim marks a primitive (and what it needs) used and returns its name.
func (c *converter) prim(name string) string {
	if c.prims == nil {
		c.prims = map[string]bool{}
	}
	if !c.prims[name] {
		c.prims[name] = true
		for _, d := range primitives[name].deps {
			c.prim(d)
		}
	}
	return name
}

func (c *converter) usedPrims() []string {
	var names []string
	for n := range c.prims {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

var notWord = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// reserve returns an unused rule name based on hint.
func (c *converter) reserve(hint string) string {
	base := strings.Trim(notWord.ReplaceAllString(hint, "-"), "-")
	if base == "" {
		base = "r"
	}
	name := base
	for i := 2; c.defined[name] || name == "root"; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	c.defined[name] = true
	return name
}

// define adds a rule under a reserved name.
func (c *converter) define(name, body string) { c.rules = append(c.rules, rule{name, body}) }

// newRule adds a rule with a fresh name based on hint and returns the name.
func (c *converter) newRule(hint, body string) string {
	name := c.reserve(hint)
	c.define(name, body)
	return name
}

// lit writes s as a GBNF string literal.
func lit(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(&b, `\x%02X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// alt joins alternatives into one group.
func alt(alts []string) string {
	if len(alts) == 1 {
		return alts[0]
	}
	return "( " + strings.Join(alts, " | ") + " )"
}

// Keywords read as annotations: they do not constrain the text.
var annotations = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true, "$schema": true,
	"$id": true, "$comment": true, "deprecated": true, "readOnly": true, "writeOnly": true,
}

// Keywords this package enforces.
var supported = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true,
	"enum": true, "const": true, "anyOf": true, "oneOf": true, "allOf": true,
	"items": true, "prefixItems": true, "minItems": true, "maxItems": true,
	"minLength": true, "maxLength": true, "pattern": true, "format": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"$ref": true, "$defs": true, "definitions": true,
}

// schemaError is an error at path (a JSON pointer into the schema).
func schemaError(path, format string, args ...any) error {
	if path == "" {
		path = "/"
	}
	return fmt.Errorf("json schema: at %s: %s", path, fmt.Sprintf(format, args...))
}

func pointer(path string, parts ...any) string {
	for _, p := range parts {
		s := fmt.Sprint(p)
		s = strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
		path += "/" + s
	}
	return path
}

// constraining returns the keywords of o that constrain the text (not
// annotations nor definitions), in the schema's order.
func constraining(o *object) []string {
	var ks []string
	for _, k := range o.keys {
		if !annotations[k] && k != "$defs" && k != "definitions" {
			ks = append(ks, k)
		}
	}
	return ks
}

// visit returns a GBNF expression for the texts schema s accepts, each
// followed by whitespace.
func (c *converter) visit(s any, path string) (string, error) {
	switch s := s.(type) {
	case bool:
		if !s {
			return "", schemaError(path, "the schema false accepts nothing")
		}
		return c.prim("value"), nil
	case *object:
		return c.visitObject(s, path)
	}
	return "", schemaError(path, "a schema must be an object or a boolean, not %s", encodeString(s))
}

func (c *converter) visitObject(o *object, path string) (string, error) {
	for _, k := range o.keys {
		if !annotations[k] && !supported[k] {
			return "", schemaError(path, "unsupported keyword %q", k)
		}
	}
	keys := constraining(o)
	if ref, ok := o.get("$ref"); ok {
		if len(keys) > 1 {
			return "", schemaError(path, "keyword %q beside $ref is not supported", firstOther(keys, "$ref"))
		}
		r, ok := ref.(string)
		if !ok {
			return "", schemaError(pointer(path, "$ref"), "$ref must be a string")
		}
		return c.ref(r, path)
	}
	if v, ok := o.get("const"); ok {
		return lit(encodeString(v)) + " " + c.prim("ws"), nil
	}
	if v, ok := o.get("enum"); ok {
		vals, ok := v.([]any)
		if !ok || len(vals) == 0 {
			return "", schemaError(pointer(path, "enum"), "enum must be a non-empty array")
		}
		var alts []string
		for _, x := range vals {
			alts = append(alts, lit(encodeString(x)))
		}
		return alt(alts) + " " + c.prim("ws"), nil
	}
	if _, ok := o.get("allOf"); ok {
		return c.allOf(o, path)
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		v, ok := o.get(k)
		if !ok {
			continue
		}
		if len(keys) > 1 {
			return "", schemaError(path, "keyword %q beside %s is not supported", firstOther(keys, k), k)
		}
		subs, ok := v.([]any)
		if !ok || len(subs) == 0 {
			return "", schemaError(pointer(path, k), "%s must be a non-empty array", k)
		}
		var alts []string
		for i, sub := range subs {
			e, err := c.visit(sub, pointer(path, k, i))
			if err != nil {
				return "", err
			}
			alts = append(alts, e)
		}
		return alt(alts), nil
	}
	types, err := typesOf(o, path)
	if err != nil {
		return "", err
	}
	var alts []string
	for _, t := range types {
		e, err := c.typed(o, t, path)
		if err != nil {
			return "", err
		}
		alts = append(alts, e)
	}
	return alt(alts), nil
}

func firstOther(keys []string, not string) string {
	for _, k := range keys {
		if k != not {
			return k
		}
	}
	return ""
}

var typeNames = []string{"object", "array", "string", "number", "integer", "boolean", "null"}

// typesOf reads type, or guesses the type from the other keywords; "" is
// any value.
func typesOf(o *object, path string) ([]string, error) {
	v, ok := o.get("type")
	if !ok {
		switch {
		case has(o, "properties", "required", "additionalProperties"):
			return []string{"object"}, nil
		case has(o, "items", "prefixItems", "minItems", "maxItems"):
			return []string{"array"}, nil
		case has(o, "minLength", "maxLength", "pattern", "format"):
			return []string{"string"}, nil
		case has(o, "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
			return []string{"number"}, nil
		}
		return []string{""}, nil
	}
	var types []string
	switch v := v.(type) {
	case string:
		types = []string{v}
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, schemaError(pointer(path, "type"), "type must be a string or an array of strings")
			}
			types = append(types, s)
		}
	default:
		return nil, schemaError(pointer(path, "type"), "type must be a string or an array of strings")
	}
	if len(types) == 0 {
		return nil, schemaError(pointer(path, "type"), "type is an empty array: nothing is accepted")
	}
	for _, t := range types {
		if !slices.Contains(typeNames, t) {
			return nil, schemaError(pointer(path, "type"), "unknown type %q", t)
		}
	}
	return types, nil
}

func has(o *object, keys ...string) bool {
	for _, k := range keys {
		if _, ok := o.get(k); ok {
			return true
		}
	}
	return false
}

// typed returns the expression for the values of type t that o accepts.
func (c *converter) typed(o *object, t, path string) (string, error) {
	switch t {
	case "":
		return c.prim("value"), nil
	case "object":
		return c.object(o, path)
	case "array":
		return c.array(o, path)
	case "string":
		return c.str(o, path)
	case "integer":
		return c.integer(o, path)
	case "number":
		for _, k := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} {
			if has(o, k) {
				return "", schemaError(pointer(path, k), "%s is supported for type integer only, not number", k)
			}
		}
		return c.prim("number"), nil
	case "boolean":
		return c.prim("boolean"), nil
	}
	return c.prim("null"), nil
}

// ref returns the rule of a local reference, writing it on first use; the
// rule is named before its body is written, so a schema may refer to
// itself.
func (c *converter) ref(ref, path string) (string, error) {
	if name, ok := c.refs[ref]; ok {
		return name, nil
	}
	if !strings.HasPrefix(ref, "#") {
		return "", schemaError(pointer(path, "$ref"), "$ref %q: only references within the schema (#/...) are supported", ref)
	}
	target, err := c.resolve(ref)
	if err != nil {
		return "", schemaError(pointer(path, "$ref"), "%v", err)
	}
	hint := "ref"
	if i := strings.LastIndex(ref, "/"); i >= 0 && i+1 < len(ref) {
		hint = ref[i+1:]
	}
	name := c.reserve(hint)
	c.refs[ref] = name
	body, err := c.visit(target, strings.TrimPrefix(ref, "#"))
	if err != nil {
		return "", err
	}
	c.define(name, body)
	return name, nil
}

// resolve follows a JSON pointer fragment from the root.
func (c *converter) resolve(ref string) (any, error) {
	cur := c.root
	frag := strings.TrimPrefix(ref, "#")
	if frag == "" {
		return cur, nil
	}
	if !strings.HasPrefix(frag, "/") {
		return nil, fmt.Errorf("$ref %q: anchors are not supported, use a JSON pointer (#/$defs/name)", ref)
	}
	for _, part := range strings.Split(frag[1:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		switch x := cur.(type) {
		case *object:
			v, ok := x.get(part)
			if !ok {
				return nil, fmt.Errorf("$ref %q: %q not found", ref, part)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("$ref %q: no item %q", ref, part)
			}
			cur = x[i]
		default:
			return nil, fmt.Errorf("$ref %q: %q not found", ref, part)
		}
	}
	return cur, nil
}

// count reads a non-negative integer keyword; -1 when absent.
func count(o *object, key, path string) (int, error) {
	v, ok := o.get(key)
	if !ok {
		return -1, nil
	}
	n, isNum := v.(interface{ Int64() (int64, error) })
	if !isNum {
		return 0, schemaError(pointer(path, key), "%s must be a non-negative integer", key)
	}
	i, err := n.Int64()
	if err != nil || i < 0 {
		return 0, schemaError(pointer(path, key), "%s must be a non-negative integer", key)
	}
	if i > maxCount {
		return 0, schemaError(pointer(path, key), "%s %d is above the supported %d", key, i, maxCount)
	}
	return int(i), nil
}

// maxCount bounds the counts a grammar writes out (see grammar's limits).
const maxCount = 10000

// repeat writes x{lo,hi}; hi −1 is unbounded.
func repeat(x string, lo, hi int) string {
	switch {
	case hi < 0 && lo == 0:
		return x + "*"
	case hi < 0 && lo == 1:
		return x + "+"
	case hi < 0:
		return fmt.Sprintf("%s{%d,}", x, lo)
	case lo == hi:
		if lo == 0 {
			return `""`
		}
		return fmt.Sprintf("%s{%d}", x, lo)
	case lo == 0 && hi == 1:
		return x + "?"
	}
	return fmt.Sprintf("%s{%d,%d}", x, lo, hi)
}
