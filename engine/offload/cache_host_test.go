package offload

import "testing"

// TestHostBindRows checks the windows through which the KV store writes
// a host slot larger than one binding: every window starts on a multiple
// of 256 bytes for f16, Q8_0 and Q4_0 rows (a million positions of
// 136-byte rows used to start the second window 8 bytes short of one),
// and a slot that fits is one window.
func TestHostBindRows(t *testing.T) {
	const limit = 128 << 20
	for _, row := range []uint64{256, 136, 72, 34, 18, 64} {
		for _, ctx := range []int{1000, 1 << 20, 4 << 20} {
			n := hostBindRows(ctx, limit, row)
			if uint64(n)*row > limit || n < 1 {
				t.Errorf("rows of %d bytes, %d positions: windows of %d rows bind %d bytes", row, ctx, n, uint64(n)*row)
			}
			if uint64(ctx)*row <= limit {
				if n != ctx {
					t.Errorf("rows of %d bytes, %d positions fit one binding: windows of %d rows", row, ctx, n)
				}
				continue
			}
			for w0 := n; w0 < ctx; w0 += n {
				if off := uint64(w0) * row; off%256 != 0 {
					t.Fatalf("rows of %d bytes, %d positions: the window at row %d starts at byte %d", row, ctx, w0, off)
				}
			}
		}
	}
}
