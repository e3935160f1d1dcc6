package jsonschema

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// maxDigits bounds the integers of an open range, as the generic integer
// rule does.
const maxDigits = 16

// integer writes the integers within o's bounds, exactly: each bound is
// split by sign and by number of digits, and the numbers of one length
// between two bounds are spelled digit by digit.
func (c *converter) integer(o *object, path string) (string, error) {
	var lo, hi *int64
	bound := func(key string, up bool, shift int64) error {
		v, ok := o.get(key)
		if !ok {
			return nil
		}
		n, ok := v.(json.Number)
		if !ok {
			return schemaError(pointer(path, key), "%s must be a number", key)
		}
		f, ok := new(big.Float).SetString(string(n))
		if !ok {
			return schemaError(pointer(path, key), "%s must be a number", key)
		}
		// The integers ≥ x start at ceil(x), those ≤ x end at floor(x);
		// exclusive bounds move one further when x is an integer.
		i, acc := f.Int(nil)
		if up && acc == big.Below {
			i.Add(i, big.NewInt(1))
		} else if !up && acc == big.Above {
			i.Sub(i, big.NewInt(1))
		} else if acc == big.Exact {
			i.Add(i, big.NewInt(shift))
		}
		if !i.IsInt64() || i.Int64() > 1e15 || i.Int64() < -1e15 {
			return schemaError(pointer(path, key), "%s %s is beyond the ±10^15 this grammar supports", key, n)
		}
		x := i.Int64()
		if up {
			if lo == nil || x > *lo {
				lo = &x
			}
		} else if hi == nil || x < *hi {
			hi = &x
		}
		return nil
	}
	for _, b := range []struct {
		key   string
		up    bool
		shift int64
	}{{"minimum", true, 0}, {"exclusiveMinimum", true, 1}, {"maximum", false, 0}, {"exclusiveMaximum", false, -1}} {
		if err := bound(b.key, b.up, b.shift); err != nil {
			return "", err
		}
	}
	ws := c.prim("ws")
	if lo == nil && hi == nil {
		return c.prim("integer"), nil
	}
	if lo != nil && hi != nil && *lo > *hi {
		return "", schemaError(path, "no integer lies between the bounds %d and %d", *lo, *hi)
	}
	var alts []string
	if lo == nil || *lo < 0 {
		// Negative numbers: "-" and a magnitude in [max(1, −hi), −lo].
		from := int64(1)
		if hi != nil && *hi < 0 {
			from = -*hi
		}
		to := int64(-1)
		if lo != nil {
			to = -*lo
		}
		alts = append(alts, `"-" `+positive(from, to))
	}
	if hi == nil || *hi >= 0 {
		from := int64(0)
		if lo != nil && *lo > 0 {
			from = *lo
		}
		to := int64(-1)
		if hi != nil {
			to = *hi
		}
		alts = append(alts, positive(from, to))
	}
	return alt(alts) + " " + ws, nil
}

// positive writes the integers of [from, to] without sign or leading
// zeros; to −1 is open (up to maxDigits digits, or from's length).
func positive(from, to int64) string {
	a := strconv.FormatInt(from, 10)
	maxLen := max(maxDigits, len(a))
	if to >= 0 {
		maxLen = len(strconv.FormatInt(to, 10))
	}
	var alts []string
	full := 0 // lengths whose every number is in range, pending a merge
	flush := func(upto int) {
		if full == 0 {
			return
		}
		first := upto - full + 1
		if first == 1 {
			// [0-9] as one digit, then the longer ones.
			alts = append(alts, "[0-9]")
			first++
		}
		if first <= upto {
			alts = append(alts, "[1-9] "+repeat("[0-9]", first-1, upto-1))
		}
		full = 0
	}
	for n := len(a); n <= maxLen; n++ {
		lo := strings.Repeat("0", n)
		if n > 1 {
			lo = "1" + lo[1:]
		}
		hi := strings.Repeat("9", n)
		isFull := true
		if n == len(a) && a != lo {
			lo, isFull = a, false
		}
		if to >= 0 && n == maxLen {
			if b := strconv.FormatInt(to, 10); b != hi {
				hi, isFull = b, false
			}
		}
		if isFull {
			full++
			continue
		}
		flush(n - 1)
		alts = append(alts, between(lo, hi))
	}
	flush(maxLen)
	return alt(alts)
}

// between writes the digit strings of one length from lo to hi.
func between(lo, hi string) string {
	if lo == hi {
		return lit(lo)
	}
	if len(lo) == 1 {
		return fmt.Sprintf("[%c-%c]", lo[0], hi[0])
	}
	if lo[0] == hi[0] {
		return lit(lo[:1]) + " " + between(lo[1:], hi[1:])
	}
	n := len(lo) - 1
	zeros, nines := strings.Repeat("0", n), strings.Repeat("9", n)
	var alts []string
	first, last := lo[0], hi[0]
	if lo[1:] != zeros {
		alts = append(alts, lit(lo[:1])+" "+between(lo[1:], nines))
		first++
	}
	if hi[1:] != nines {
		last--
	}
	if first <= last {
		d := fmt.Sprintf("[%c-%c]", first, last)
		if first == last {
			d = lit(string(first))
		}
		alts = append(alts, d+" "+repeat("[0-9]", n, n))
	}
	if hi[1:] != nines {
		alts = append(alts, lit(hi[:1])+" "+between(zeros, hi[1:]))
	}
	return alt(alts)
}
