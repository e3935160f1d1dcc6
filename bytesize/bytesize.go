// Package bytesize formats and parses byte counts the way the command line
// and the error messages show them: "512.0 MiB", "6GiB", "1.5GB".
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Format writes n bytes with the largest binary unit that keeps the number
// at or above one.
func Format(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

var units = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// Parse reads a byte count such as 1536, 512MiB, 6GiB, 6G or 1.5GB.
// Binary prefixes (KiB, MiB, GiB, TiB, and K, M, G, T alone) count in
// powers of 1024, decimal ones (KB, MB, GB, TB) in powers of 1000.
func Parse(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && !(t[i-1] >= '0' && t[i-1] <= '9' || t[i-1] == '.') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mul, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q is not a non-negative number of bytes", s)
	}
	b := v * mul
	if b >= math.MaxUint64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return uint64(b), nil
}
