package jsonschema

// array writes "[" items "]" with minItems and maxItems: the first items
// follow prefixItems, the rest items (any value when absent; none when
// items is false).
func (c *converter) array(o *object, path string) (string, error) {
	lo, err := count(o, "minItems", path)
	if err != nil {
		return "", err
	}
	hi, err := count(o, "maxItems", path)
	if err != nil {
		return "", err
	}
	lo = max(lo, 0)
	if hi >= 0 && hi < lo {
		return "", schemaError(path, "maxItems %d is below minItems %d: nothing is accepted", hi, lo)
	}
	var prefix []string
	if v, ok := o.get("prefixItems"); ok {
		list, ok := v.([]any)
		if !ok {
			return "", schemaError(pointer(path, "prefixItems"), "prefixItems must be an array of schemas")
		}
		for i, s := range list {
			e, err := c.visit(s, pointer(path, "prefixItems", i))
			if err != nil {
				return "", err
			}
			prefix = append(prefix, e)
		}
	}
	rest := c.prim("value") // "" when no more items are allowed
	if v, ok := o.get("items"); ok {
		if v == false {
			rest = ""
		} else if rest, err = c.visit(v, pointer(path, "items")); err != nil {
			return "", err
		}
	}
	if rest == "" {
		if lo > len(prefix) {
			return "", schemaError(path, "minItems %d needs more items than prefixItems has, and items is false", lo)
		}
		if hi < 0 || hi > len(prefix) {
			hi = len(prefix)
		}
	}
	if hi >= 0 && len(prefix) > hi {
		prefix = prefix[:hi]
	}
	ws := c.prim("ws")
	sep := `"," ` + ws + " "
	// tail(i) is the rest of the array after i items.
	var tail func(i int) string
	tail = func(i int) string {
		if i == hi {
			return ""
		}
		if i < len(prefix) {
			item := prefix[i]
			if i > 0 {
				item = sep + item
			}
			seq := item + " " + tail(i+1)
			if i < lo {
				return seq
			}
			return "( " + seq + " )?"
		}
		more := -1
		if hi >= 0 {
			more = hi - i
		}
		if i == 0 {
			// The first item takes no comma.
			after := -1
			if more > 0 {
				after = more - 1
			}
			seq := rest + " " + repeat("( "+sep+rest+" )", max(lo-1, 0), after)
			if lo == 0 {
				return "( " + seq + " )?"
			}
			return seq
		}
		return repeat("( "+sep+rest+" )", max(lo-i, 0), more)
	}
	return `"[" ` + ws + " " + tail(0) + ` "]" ` + ws, nil
}
