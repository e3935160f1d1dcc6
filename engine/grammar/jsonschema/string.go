package jsonschema

// formats are the string formats with a grammar, by format name.
var formats = map[string]string{"date": "date", "time": "time", "date-time": "", "uuid": "uuid"}

// str writes a JSON string under one of: a format, a pattern, or length
// bounds (combining them would need the intersection of two languages,
// which is refused).
func (c *converter) str(o *object, path string) (string, error) {
	var set []string
	for _, k := range []string{"format", "pattern", "minLength", "maxLength"} {
		if has(o, k) {
			set = append(set, k)
		}
	}
	if len(set) > 1 && !(len(set) == 2 && set[0] == "minLength" && set[1] == "maxLength") {
		return "", schemaError(pointer(path, set[1]), "%s together with %s is not supported", set[1], set[0])
	}
	q := `"\""`
	ws := c.prim("ws")
	if v, ok := o.get("format"); ok {
		f, _ := v.(string)
		prim, ok := formats[f]
		if !ok {
			return "", schemaError(pointer(path, "format"), "unsupported format %s (supported: date, time, date-time, uuid)", encodeString(v))
		}
		body := ""
		if f == "date-time" {
			body = c.prim("date") + ` "T" ` + c.prim("time")
		} else {
			body = c.prim(prim)
		}
		return q + " " + body + " " + q + " " + ws, nil
	}
	if v, ok := o.get("pattern"); ok {
		p, ok := v.(string)
		if !ok {
			return "", schemaError(pointer(path, "pattern"), "pattern must be a string")
		}
		body, err := c.pattern(p)
		if err != nil {
			return "", schemaError(pointer(path, "pattern"), "%v", err)
		}
		return q + " " + body + " " + q + " " + ws, nil
	}
	lo, err := count(o, "minLength", path)
	if err != nil {
		return "", err
	}
	hi, err := count(o, "maxLength", path)
	if err != nil {
		return "", err
	}
	if lo < 0 && hi < 0 {
		return c.prim("string"), nil
	}
	lo = max(lo, 0)
	if hi >= 0 && hi < lo {
		return "", schemaError(path, "maxLength %d is below minLength %d: nothing is accepted", hi, lo)
	}
	return q + " " + repeat(c.prim("char"), lo, hi) + " " + q + " " + ws, nil
}
