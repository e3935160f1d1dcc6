package cli

import (
	"fmt"
	"slices"
	"testing"

	"headinfer/engine/kernel"
)

// TestParseVectors checks --vectors of bench kernels: none by default,
// sorted distinct counts, and an error for anything outside 1 to the
// batched kernel's most.
func TestParseVectors(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "1,2,4,8": {1, 2, 4, 8}, "8, 1,4,1": {1, 4, 8}, "3": {3}} {
		got, err := parseVectors(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseVectors(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "9", "1,,2", "x", "1,9", fmt.Sprint(kernel.MatVecMaxBatch + 1)} {
		if got, err := parseVectors(in); err == nil {
			t.Errorf("parseVectors(%q) = %v, want an error", in, got)
		}
	}
}
