package pci

import (
	"encoding/binary"
	"testing"
)

// FuzzConfigAccess drives the bus with arbitrary configuration accesses
// through both mechanisms (each op: mechanism, devfn, register, width,
// value) and checks that nothing panics, read-only identity stays put and
// every BAR the bus thinks is mapped answers where its registers say.
func FuzzConfigAccess(f *testing.F) {
	f.Add([]byte{
		2, 8, 0x04, 0x00, 1, 0x07, 0x00, 0x00, 0x00, // command = IO|MEM|BM
		3, 8, 0x10, 0x00, 2, 0xff, 0xff, 0xff, 0xff, // size BAR 0
		1, 8, 0x10, 0x00, 2, 0x00, 0x00, 0x00, 0x00, // read the size back
		3, 8, 0x10, 0x00, 2, 0x00, 0x00, 0x00, 0xd0, // move BAR 0
		2, 8, 0x1c, 0x00, 2, 0x01, 0x00, 0x00, 0x00, // BAR 2 high half
		3, 8, 0xcd, 0x00, 1, 0xff, 0xff, 0x00, 0x00, // word across a dword
		2, 8, 0x20, 0x00, 2, 0x01, 0xc0, 0x00, 0x00, // BAR 4 (I/O) moved
		3, 8, 0x04, 0x00, 0, 0x00, 0x00, 0x00, 0x00, // decode off
	})
	f.Fuzz(func(t *testing.T, ops []byte) {
		b := newTestBus(t)
		d := newTestDevice(t, 0x1042)
		if _, err := b.Add(d); err != nil {
			t.Fatal(err)
		}
		const opLen = 9
		for len(ops) >= opLen {
			op := ops[:opLen]
			ops = ops[opLen:]
			fn := op[1]
			reg := int(binary.LittleEndian.Uint16(op[2:]) & 0xfff)
			n := []int{1, 2, 4, 8, 3}[int(op[4])%5]
			data := make([]byte, n)
			copy(data, op[5:])
			write := op[0]&2 != 0
			if op[0]&1 == 0 {
				// Type 1: point CONFIG_ADDRESS at the register, then
				// access CONFIG_DATA at the register's byte.
				var addr [4]byte
				binary.LittleEndian.PutUint32(addr[:], 1<<31|uint32(fn)<<8|uint32(reg&0xfc))
				_ = b.ConfigIO().Write(0, addr[:])
				off := uint64(4 + reg&3)
				if off+uint64(n) > 8 {
					continue // the port bus refuses accesses past 0xcff
				}
				if write {
					_ = b.ConfigIO().Write(off, data)
				} else {
					_ = b.ConfigIO().Read(off, data)
				}
			} else {
				off := uint64(fn)<<12 | uint64(reg)
				if write {
					_ = b.ECAM().Write(off, data)
				} else {
					_ = b.ECAM().Read(off, data)
				}
			}
			if id := d.cfg.Uint32(RegVendorID); id != 0x1042_1af4 {
				t.Fatalf("identity changed to %#x", id)
			}
			if id := b.slots[0].dev.Config().Uint32(RegVendorID); id != 0x0008_1b36 {
				t.Fatalf("host bridge identity changed to %#x", id)
			}
			s := b.slots[1]
			for i, m := range s.bars {
				if !m.mapped {
					continue
				}
				want, on := decodes(d.cfg, i)
				if !on || want != m.addr {
					t.Fatalf("BAR %d mapped at %#x, registers say %#x (decode %v)", i, m.addr, want, on)
				}
				if err := b.busFor(d.cfg, i).Read(m.addr, make([]byte, 1)); err != nil {
					t.Fatalf("BAR %d mapped at %#x does not answer: %v", i, m.addr, err)
				}
			}
		}
	})
}
