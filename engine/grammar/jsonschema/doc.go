// Package jsonschema translates a JSON Schema into a GBNF grammar
// (package grammar) whose sentences are JSON texts valid against the
// schema, so that a model constrained by it can only write such texts.
//
// Supported:
//
//   - type: object, array, string, number, integer, boolean, null, and
//     unions of them (["string", "null"]); without type, the kind is
//     taken from the other keywords, or any JSON value.
//   - properties, required, additionalProperties (false, true, or a
//     schema; when absent, extra properties of any value are allowed).
//     A required name that properties does not list must be present, with
//     additionalProperties' schema (refused when that is false).
//     Properties come in the order the schema lists them, then the extra
//     ones, whose names are never one of the listed names and hold no
//     escapes (so that no escape can spell a listed name).
//   - enum, const (any JSON values); anyOf and oneOf (as alternatives:
//     oneOf's exclusivity is not enforced); allOf of objects, merged
//     (a single-branch allOf of anything).
//   - items, prefixItems, minItems, maxItems (items: false allowed).
//   - minLength, maxLength (in characters), pattern, and format date,
//     time, date-time and uuid for strings. Dates never fall on
//     February 29, so that every generated date exists; times have a
//     second below 60 and an offset (Z or ±hh:mm).
//   - minimum, maximum, exclusiveMinimum, exclusiveMaximum for integers,
//     exactly: the grammar spells the decimal numbers of the range digit
//     by digit. Like the generic numbers, integers have at most 16 digits
//     where the range is open. Bounds on type number are refused.
//   - $ref to the same document (#, #/$defs/…, #/definitions/…, any JSON
//     pointer into it), recursion included.
//   - pattern: a subset of regular expressions: literal characters and
//     escapes (\. \n \t \uXXXX …), classes [a-z] [^…] \d \w \s \D \W \S,
//     ., groups (…) and (?:…), alternation |, quantifiers * + ? {m} {m,}
//     {m,n} (lazy forms read as greedy), anchors ^ at the start and $ at
//     the end. A pattern without ^ or $ may have any characters before or
//     after its match, as JSON Schema's search semantics say. Characters
//     a pattern produces are never control characters (other than the
//     escapes \n \t \r written by \s), and negated classes and . never
//     produce " or \.
//   - title, description, default, examples, $schema, $id, $comment,
//     deprecated, readOnly, writeOnly are read as annotations.
//
// Any other keyword is refused with an error that names it and where it
// is, rather than ignored: a client must not get output that its schema
// would reject.
//
// Every value is followed by bounded whitespace, strings escape as JSON
// requires, and numbers have at most 16 integer and fraction digits.
package jsonschema
