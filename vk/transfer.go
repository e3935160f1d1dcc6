package vk

import (
	"fmt"
	"sync"
)

// stagingSize is the size of the reusable staging buffer that Write and
// Read go through when the destination is not mapped; larger transfers
// are done in chunks.
const stagingSize = 32 << 20

// stager serializes the synchronous transfers of Write and Read.
type stager struct {
	mu           sync.Mutex
	buf          *Buffer   // Upload memory, mapped
	cmds         *Commands // on the transfer queue
	chunk        uint64    // stagingSize; tests lower it to exercise chunking
	forceStaging bool      // tests: stage even mapped memory
}

func (s *stager) free() {
	if s.cmds != nil {
		s.cmds.Free()
		s.cmds = nil
	}
	if s.buf != nil {
		s.buf.Free()
		s.buf = nil
	}
}

// Write copies data into dst and returns when it is on the device.
// len(data) must equal dst.Size. It is not ordered with submissions still
// running: no such submission may use dst.
func (d *Device) Write(dst Range, data []byte) error {
	if err := dst.check(d); err != nil {
		return fmt.Errorf("vk: Write: %v", err)
	}
	if uint64(len(data)) != dst.Size {
		return fmt.Errorf("vk: Write of %d bytes into a range of %d bytes of %q", len(data), dst.Size, dst.Buf.label)
	}
	return d.stage.transfer(d, dst, data, true)
}

// Read copies src into out. len(out) must equal src.Size. Work that
// writes src must have completed (Run, or a waited-for Submit).
func (d *Device) Read(src Range, out []byte) error {
	if err := src.check(d); err != nil {
		return fmt.Errorf("vk: Read: %v", err)
	}
	if uint64(len(out)) != src.Size {
		return fmt.Errorf("vk: Read of a range of %d bytes of %q into %d bytes", src.Size, src.Buf.label, len(out))
	}
	return d.stage.transfer(d, src, out, false)
}

// transfer moves bytes between host memory p and device range r, in the
// direction toDevice says.
func (s *stager) transfer(d *Device, r Range, p []byte, toDevice bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := r.Buf.mappedBytes(); m != nil && !s.forceStaging {
		// Host-visible coherent memory (Upload, Readback, and everything
		// on integrated and CPU devices) needs no staging copy.
		m = m[r.Off : r.Off+r.Size]
		if toDevice {
			copy(m, p)
		} else {
			copy(p, m)
		}
		return nil
	}
	if s.chunk == 0 {
		s.chunk = stagingSize
	}
	if s.buf == nil || s.buf.Size() < s.chunk {
		s.free()
		b, err := d.Alloc(Upload, s.chunk, "staging")
		if err != nil {
			return err
		}
		c, err := d.NewTransferCommands()
		if err != nil {
			b.Free()
			return err
		}
		s.buf, s.cmds = b, c
	}
	stage := s.buf.Bytes()
	for done := uint64(0); done < r.Size; {
		n := min(s.chunk, r.Size-done)
		part := r.Buf.Range(r.Off+done, n)
		if err := s.cmds.Reset(); err != nil {
			return err
		}
		if toDevice {
			copy(stage, p[done:done+n])
			s.cmds.Copy(part, s.buf.Range(0, n))
		} else {
			s.cmds.Copy(s.buf.Range(0, n), part)
		}
		if err := s.cmds.End(); err != nil {
			return err
		}
		q := d.transfer
		if err := q.Submit(s.cmds, nil, nil); err != nil {
			return err
		}
		if err := s.cmds.wait(); err != nil {
			return err
		}
		if !toDevice {
			copy(p[done:done+n], stage)
		}
		done += n
	}
	return nil
}
