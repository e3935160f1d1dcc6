package engine

import (
	"fmt"
	"strings"

	"headinfer/engine/gguf"
	"headinfer/engine/kernel"
	"headinfer/engine/offload"
)

// kvTypes are the element types of the KV cache's keys and values, chosen
// apart as llama.cpp's -ctk and -ctv choose them: values tolerate coarser
// quantization than keys, whose errors the softmax amplifies.
type kvTypes struct{ K, V gguf.Type }

// kvTypeNames are the accepted KV type names, in the order errors list them.
var kvTypeNames = []string{"f16", "f32", "q8_0", "q4_0"}

// kvTypeOf parses a KV cache type name ("" is f16).
func kvTypeOf(name string) (gguf.Type, error) {
	switch strings.ToLower(name) {
	case "", "f16":
		return gguf.F16, nil
	case "f32":
		return gguf.F32, nil
	case "q8_0":
		return gguf.Q8_0, nil
	case "q4_0":
		return gguf.Q4_0, nil
	}
	return 0, fmt.Errorf("KV cache type %q is not supported (use one of %s)", name, strings.Join(kvTypeNames, ", "))
}

// kvTypesOf resolves the options' KV types for heads of headDim values:
// KVType sets both, KVTypeK and KVTypeV override it. A block-quantized type
// needs a head size that is a multiple of its 32-value blocks, and f32
// goes with f32 only (no kernel mixes it with the others).
func kvTypesOf(opt Options, headDim int) (kvTypes, error) {
	both, err := kvTypeOf(opt.KVType)
	if err != nil {
		return kvTypes{}, err
	}
	t := kvTypes{both, both}
	if opt.KVTypeK != "" {
		if t.K, err = kvTypeOf(opt.KVTypeK); err != nil {
			return kvTypes{}, fmt.Errorf("keys: %w", err)
		}
	}
	if opt.KVTypeV != "" {
		if t.V, err = kvTypeOf(opt.KVTypeV); err != nil {
			return kvTypes{}, fmt.Errorf("values: %w", err)
		}
	}
	for _, x := range []struct {
		what string
		t    gguf.Type
	}{{"keys", t.K}, {"values", t.V}} {
		if err := kernel.CheckKVType(x.t, headDim); err != nil {
			return kvTypes{}, fmt.Errorf("KV cache %s: %w", x.what, err)
		}
	}
	if t.K != t.V && (t.K == gguf.F32 || t.V == gguf.F32) {
		return kvTypes{}, fmt.Errorf("KV cache keys of type %s with values of type %s: f32 goes with f32 only", t.kName(), t.vName())
	}
	return t, nil
}

func (t kvTypes) kName() string { return strings.ToLower(t.K.String()) }
func (t kvTypes) vName() string { return strings.ToLower(t.V.String()) }

// String is the type's name when K and V share it, else "K/V" ("q8_0/q4_0").
func (t kvTypes) String() string {
	if t.K == t.V {
		return t.kName()
	}
	return t.kName() + "/" + t.vName()
}

// rowBytes is the size of one position of one KV head: its K and V rows.
func (t kvTypes) rowBytes(headDim int) uint64 {
	return uint64(t.K.RowBytes(headDim) + t.V.RowBytes(headDim))
}

// maxRowBytes is the larger of a K row and a V row of one KV head.
func (t kvTypes) maxRowBytes(headDim int) uint64 {
	return uint64(max(t.K.RowBytes(headDim), t.V.RowBytes(headDim)))
}

// slotRows is the rows a slot of rows positions takes in memory (the host
// store and the device cache pad quantized slots; see offload.Geometry).
func (t kvTypes) slotRows(rows int) int {
	return offload.Geometry{K: t.K, V: t.V}.SlotRows(rows)
}
