package jsonschema

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// object writes an object with o's properties in their order, the
// required ones always and the others optionally, then the extra
// properties additionalProperties allows. Commas go between the members
// present, which takes two rules per property: the rest of the object
// when nothing was written yet (first) and after something was (then).
func (c *converter) object(o *object, path string) (string, error) {
	props := &object{vals: map[string]any{}}
	if v, ok := o.get("properties"); ok {
		if props, ok = v.(*object); !ok {
			return "", schemaError(pointer(path, "properties"), "properties must be an object")
		}
	}
	required := map[string]bool{}
	if v, ok := o.get("required"); ok {
		list, ok := v.([]any)
		if !ok {
			return "", schemaError(pointer(path, "required"), "required must be an array of strings")
		}
		for _, x := range list {
			name, ok := x.(string)
			if !ok {
				return "", schemaError(pointer(path, "required"), "required must be an array of strings")
			}
			required[name] = true
		}
	}
	add, ok := o.get("additionalProperties")
	if !ok {
		add = true
	}
	// A required name that properties does not list is an extra property
	// that must be there: it takes additionalProperties' schema.
	list, _ := o.vals["required"].([]any)
	for _, x := range list {
		name, _ := x.(string)
		if _, ok := props.get(name); ok {
			continue
		}
		if add == false {
			return "", schemaError(pointer(path, "required"), "required property %q is not in properties, and additionalProperties is false", name)
		}
		grown := &object{keys: append(slices.Clone(props.keys), name), vals: maps.Clone(props.vals)}
		grown.vals[name] = add
		props = grown
	}
	ws := c.prim("ws")
	var extra string // one extra member, or "" when none is allowed
	if add != false {
		val, err := c.visit(add, pointer(path, "additionalProperties"))
		if err != nil {
			return "", err
		}
		key := c.keyNotIn(props.keys)
		extra = c.newRule("extra-kv", key+` ":" `+ws+" "+val)
	}
	hint := "obj"
	if path != "" {
		hint = path[strings.LastIndex(path, "/")+1:]
	}
	n := len(props.keys)
	first, then := make([]string, n+1), make([]string, n+1)
	if extra != "" {
		first[n] = "( " + extra + ` ( "," ` + ws + " " + extra + " )* )?"
		then[n] = `( "," ` + ws + " " + extra + " )*"
	} else {
		first[n], then[n] = `""`, `""`
	}
	for i := n - 1; i >= 0; i-- {
		name := props.keys[i]
		val, err := c.visit(props.vals[name], pointer(path, "properties", name))
		if err != nil {
			return "", err
		}
		kv := lit(marshal(name)) + " " + ws + ` ":" ` + ws + " " + val
		f := kv + " " + then[i+1]
		t := `"," ` + ws + " " + kv + " " + then[i+1]
		if !required[name] {
			f += " | " + first[i+1]
			t += " | " + then[i+1]
		}
		first[i] = c.newRule(hint+"-"+strconv.Itoa(i), f)
		then[i] = c.newRule(hint+"-"+strconv.Itoa(i)+"-then", t)
	}
	return `"{" ` + ws + " " + first[0] + ` "}" ` + ws, nil
}

// keyNotIn returns a rule for an object key (a JSON string and the
// whitespace after it) that is none of names. It follows a trie of the
// names: at each node the key may end (unless a name ends there), go on
// with a character no name continues with (after which anything goes),
// or follow a name further. Extra keys hold no escapes, since an escape
// could spell a name's character.
func (c *converter) keyNotIn(names []string) string {
	ws := c.prim("ws")
	pchar := c.prim("pchar")
	if len(names) == 0 {
		return `"\"" ` + pchar + `* "\"" ` + ws
	}
	type node struct {
		next map[rune]*node
		end  bool
	}
	root := &node{next: map[rune]*node{}}
	for _, name := range names {
		n := root
		for _, r := range name {
			if n.next[r] == nil {
				n.next[r] = &node{next: map[rune]*node{}}
			}
			n = n.next[r]
		}
		n.end = true
	}
	var rule func(n *node) string
	rule = func(n *node) string {
		name := c.reserve("key")
		runes := make([]rune, 0, len(n.next))
		for r := range n.next {
			runes = append(runes, r)
		}
		slices.Sort(runes)
		var alts []string
		if !n.end {
			alts = append(alts, `"\""`)
		}
		var cls strings.Builder
		cls.WriteString(`[^"\\\x7F\x00-\x1F`)
		for _, r := range runes {
			cls.WriteString(classChar(r))
		}
		cls.WriteString("]")
		alts = append(alts, cls.String()+" "+pchar+`* "\""`)
		for _, r := range runes {
			alts = append(alts, lit(string(r))+" "+rule(n.next[r]))
		}
		c.define(name, strings.Join(alts, " | "))
		return name
	}
	return `"\"" ` + rule(root) + " " + ws
}

// classChar writes r for inside a GBNF character class.
func classChar(r rune) string {
	switch {
	case r == ']' || r == '[' || r == '\\' || r == '^' || r == '-' || r == '"':
		return `\` + string(r)
	case r < 0x20 || r == 0x7F:
		return `\x` + strconv.FormatInt(int64(r)+0x100, 16)[1:]
	}
	return string(r)
}

// allOf merges branches that are objects into one object: the union of
// their properties and required names; where a branch forbids extra
// properties, only its properties remain possible.
func (c *converter) allOf(o *object, path string) (string, error) {
	subs, ok := o.vals["allOf"].([]any)
	if !ok || len(subs) == 0 {
		return "", schemaError(pointer(path, "allOf"), "allOf must be a non-empty array")
	}
	type branch struct {
		s    any
		path string
	}
	var branches []branch
	rest := &object{vals: map[string]any{}}
	for _, k := range o.keys {
		if k != "allOf" {
			rest.keys = append(rest.keys, k)
			rest.vals[k] = o.vals[k]
		}
	}
	if len(constraining(rest)) > 0 {
		branches = append(branches, branch{rest, path})
	}
	for i, s := range subs {
		branches = append(branches, branch{s, pointer(path, "allOf", i)})
	}
	if len(branches) == 1 {
		return c.visit(branches[0].s, branches[0].path)
	}
	merged := &object{vals: map[string]any{}}
	props := &object{vals: map[string]any{}}
	var required []any
	var allowed map[string]bool // nil: any name
	for _, b := range branches {
		s := b.s
		for depth := 0; ; depth++ {
			x, ok := s.(*object)
			if !ok || depth > 32 {
				break
			}
			ref, ok := x.get("$ref")
			if !ok || len(constraining(x)) > 1 {
				break
			}
			r, _ := ref.(string)
			t, err := c.resolve(r)
			if err != nil {
				return "", schemaError(b.path, "%v", err)
			}
			s = t
		}
		x, ok := s.(*object)
		if !ok {
			return "", schemaError(b.path, "allOf is supported for object schemas only")
		}
		for _, k := range constraining(x) {
			switch k {
			case "type":
				if t, _ := x.vals[k].(string); t != "object" {
					return "", schemaError(b.path, "allOf is supported for object schemas only (type %s)", encodeString(x.vals[k]))
				}
			case "properties", "required", "additionalProperties":
			default:
				return "", schemaError(pointer(b.path, k), "keyword %q in an allOf branch is not supported: allOf merges objects (properties, required, additionalProperties)", k)
			}
		}
		bp, _ := x.vals["properties"].(*object)
		if bp != nil {
			for _, k := range bp.keys {
				if prev, dup := props.get(k); dup && encodeString(prev) != encodeString(bp.vals[k]) {
					return "", schemaError(pointer(b.path, "properties", k), "property %q has different schemas in two allOf branches", k)
				} else if !dup {
					props.keys = append(props.keys, k)
					props.vals[k] = bp.vals[k]
				}
			}
		}
		if r, ok := x.vals["required"].([]any); ok {
			required = append(required, r...)
		}
		switch add := x.vals["additionalProperties"]; add {
		case nil, true:
		case false:
			own := map[string]bool{}
			if bp != nil {
				for _, k := range bp.keys {
					if allowed == nil || allowed[k] {
						own[k] = true
					}
				}
			}
			allowed = own
		default:
			return "", schemaError(pointer(b.path, "additionalProperties"), "additionalProperties with a schema inside allOf is not supported")
		}
	}
	if allowed != nil {
		kept := &object{vals: map[string]any{}}
		for _, k := range props.keys {
			if allowed[k] {
				kept.keys = append(kept.keys, k)
				kept.vals[k] = props.vals[k]
			}
		}
		for _, r := range required {
			if name, _ := r.(string); !allowed[name] {
				return "", schemaError(pointer(path, "allOf"), "property %q is required by one allOf branch and forbidden by another's additionalProperties: false", name)
			}
		}
		props = kept
		merged.keys = append(merged.keys, "additionalProperties")
		merged.vals["additionalProperties"] = false
	}
	seen := map[string]bool{}
	var req []any
	for _, r := range required {
		if name, _ := r.(string); !seen[name] {
			seen[name] = true
			req = append(req, r)
		}
	}
	merged.keys = append(merged.keys, "properties", "required")
	merged.vals["properties"], merged.vals["required"] = props, req
	return c.object(merged, path)
}
