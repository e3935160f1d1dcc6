// Package kernel wraps each compute shader of the forward pass in a Go type
// that knows the shader's bindings, push constants and workgroup geometry,
// and records it into vk.Commands. Each wrapper is checked against a float64
// reference in its test.
package kernel

import (
	"encoding/binary"
	"fmt"
	"math"
)

// push packs push-constant values in declaration order, 4 bytes each
// (uint32, int32 or float32), as a std430 block of scalars lays them out.
// Values of other types are a programming error; ints go through
// pushChecked.
func push(vals ...any) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		switch v := v.(type) {
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, v)
		case int32:
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		case float32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		default:
			panic(fmt.Sprintf("kernel: push constant of type %T", v))
		}
	}
	return b
}

// pushChecked is push for values that may include ints, which must fit a
// uint32: one that does not is an error (sizes come from callers' input).
func pushChecked(vals ...any) ([]byte, error) {
	conv := make([]any, len(vals))
	for i, v := range vals {
		if n, ok := v.(int); ok {
			if n < 0 || uint64(n) > math.MaxUint32 {
				return nil, fmt.Errorf("kernel: push constant %d (argument %d) is outside the uint32 range", n, i)
			}
			v = uint32(n)
		}
		conv[i] = v
	}
	return push(conv...), nil
}

// groups returns the number of workgroups of size per needed to cover n items.
func groups(n, per int) uint32 { return uint32((n + per - 1) / per) }
