package offload

import (
	"fmt"

	"headinfer/vk"
)

// Read copies whole rows from position row on of the K (or V) slot of
// head h of layer l into out, wherever the slot lives: Write's
// counterpart, for KV snapshots. Work that writes the slot must have
// completed.
func (kc *Cache) Read(l, h int, isV bool, row int, out []byte) error {
	dev, host, err := kc.rows(l, h, isV, row, len(out), "read")
	if err != nil {
		return err
	}
	if host != nil {
		copy(out, host)
		return nil
	}
	return kc.d.Read(dev, out)
}

// rows locates size bytes of whole rows from position row on of the K
// (or V) slot of head h of layer l: a device range for a resident head,
// the host store's bytes for a streamed one.
func (kc *Cache) rows(l, h int, isV bool, row, size int, op string) (vk.Range, []byte, error) {
	lay := kc.lay
	rowBytes := lay.RowBytes()
	switch {
	case l < 0 || l >= lay.Layers || h < 0 || h >= lay.KVHeads:
		return vk.Range{}, nil, fmt.Errorf("offload: %s of head %d of layer %d (%d layers of %d KV heads)", op, h, l, lay.Layers, lay.KVHeads)
	case size == 0 || uint64(size)%rowBytes != 0:
		return vk.Range{}, nil, fmt.Errorf("offload: %s of %d bytes, not a positive number of %d-byte rows", op, size, rowBytes)
	case row < 0 || row+size/int(rowBytes) > lay.Ctx:
		return vk.Range{}, nil, fmt.Errorf("offload: %s of rows %d..%d past the context of %d", op, row, row+size/int(rowBytes), lay.Ctx)
	}
	if h < kc.res[l].heads {
		r := &kc.res[l]
		off := uint64(h*kc.slotElems)*lay.Elem + uint64(row)*rowBytes
		if isV {
			off += r.vOff
		}
		return r.buf.Range(off, uint64(size)), nil, nil
	}
	k, v, err := kc.host.Slot(l, h, row, size/int(rowBytes))
	if err != nil {
		return vk.Range{}, nil, err
	}
	if isV {
		k = v
	}
	return vk.Range{}, k.Buf.Bytes()[k.Off : k.Off+k.Size], nil
}
