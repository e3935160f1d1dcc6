package offload

import (
	"fmt"

	"headinfer/vk"
)

// Read copies whole rows of positions from row on of the K (or V) slot
// of head h of layer l into out, wherever the slot lives: Write's
// counterpart, for KV snapshots. A ring slot gives at most its size of
// positions, the latest it was written. Work that writes the slot must
// have completed.
func (kc *Cache) Read(l, h int, isV bool, row int, out []byte) error {
	return kc.segments(l, h, isV, row, len(out), "read", func(dev vk.Range, host []byte, off int) error {
		seg := out[off : off+max(len(host), int(dev.Size))]
		if host != nil {
			copy(seg, host)
			return nil
		}
		return kc.d.Read(dev, seg)
	})
}

// Ring is the positions layer l's slots hold when they are rings, else 0.
func (kc *Cache) Ring(l int) int { return kc.lay.ring(l) }

// segments locates size bytes of whole rows of positions from row on of
// the K (or V) slot of head h of layer l, and calls fn for each
// contiguous piece (one, or two where a ring wraps) with a device range
// for a resident head or the host store's bytes for a streamed one, and
// the piece's offset within the size bytes.
func (kc *Cache) segments(l, h int, isV bool, row, size int, op string, fn func(dev vk.Range, host []byte, off int) error) error {
	lay := kc.lay
	rowBytes := int(lay.RowBytes(isV))
	switch {
	case l < 0 || l >= lay.Layers || h < 0 || h >= lay.KVHeads:
		return fmt.Errorf("offload: %s of head %d of layer %d (%d layers of %d KV heads)", op, h, l, lay.Layers, lay.KVHeads)
	case size == 0 || size%rowBytes != 0:
		return fmt.Errorf("offload: %s of %d bytes, not a positive number of %d-byte rows", op, size, rowBytes)
	case row < 0 || row+size/rowBytes > lay.Ctx:
		return fmt.Errorf("offload: %s of rows %d..%d past the context of %d", op, row, row+size/rowBytes, lay.Ctx)
	case kc.res[l].ring > 0 && size/rowBytes > kc.res[l].ring:
		return fmt.Errorf("offload: %s of %d positions of layer %d, whose ring holds %d", op, size/rowBytes, l, kc.res[l].ring)
	}
	ring := kc.res[l].ring
	if ring == 0 {
		dev, host, err := kc.rows(l, h, isV, row, size)
		if err != nil {
			return err
		}
		return fn(dev, host, 0)
	}
	for off := 0; off < size; {
		at := (row + off/rowBytes) % ring
		n := min(size-off, (ring-at)*rowBytes)
		dev, host, err := kc.rows(l, h, isV, at, n)
		if err != nil {
			return err
		}
		if err := fn(dev, host, off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// rows locates size bytes of whole rows of the K (or V) slot of head h of
// layer l from slot row row on: a device range for a resident head, the
// host store's bytes for a streamed one.
func (kc *Cache) rows(l, h int, isV bool, row, size int) (vk.Range, []byte, error) {
	lay := kc.lay
	rowBytes := lay.RowBytes(isV)
	if h < kc.res[l].heads {
		r := &kc.res[l]
		off := lay.bytes(isV, h*r.slotElems+row*lay.HeadDim)
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
