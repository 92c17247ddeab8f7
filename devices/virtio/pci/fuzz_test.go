package pci

import (
	"encoding/binary"
	"testing"
)

// FuzzTransport drives a transport with arbitrary BAR and configuration
// accesses (each op: kind, offset, width, value) as a hostile driver
// would, including DRIVER_OK on whatever rings it set up, and checks that
// nothing panics and that the status never claims FEATURES_OK for
// features the device did not offer.
func FuzzTransport(f *testing.F) {
	f.Add([]byte{
		0, 0x14, 0x00, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, // status: ACK|DRIVER|FEATURES_OK
		0, 0x1c, 0x00, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, // queue_enable
		0, 0x14, 0x00, 0, 0x0f, 0, 0, 0, 0, 0, 0, 0, // DRIVER_OK
		0, 0x00, 0x30, 1, 0x00, 0, 0, 0, 0, 0, 0, 0, // notify queue 0
		1, 0x50, 0x00, 2, 0x00, 0, 0, 0, 0, 0, 0, 0, // config write
	})
	f.Fuzz(func(t *testing.T, ops []byte) {
		dev := newEchoDevice()
		tr, err := New(dev, Options{Memory: make(sliceMemory, 1<<16), MSI: newMSIRouter(), Notify: newNotifyRecorder()})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		const opLen = 12
		for len(ops) >= opLen {
			op := ops[:opLen]
			ops = ops[opLen:]
			off := uint64(binary.LittleEndian.Uint16(op[1:]))
			n := []int{1, 2, 4, 8, 3}[int(op[3])%5]
			data := make([]byte, n)
			copy(data, op[4:])
			switch op[0] % 5 {
			case 0:
				_ = tr.WriteBAR(BARIndex, off, data)
			case 1:
				_ = tr.WriteConfig(int(off&0xfff), data)
			case 2:
				_ = tr.ReadBAR(BARIndex, off, data)
			case 3:
				_ = tr.ReadConfig(int(off&0xfff), data)
			case 4:
				_ = tr.BARMapped(BARIndex, off<<12, op[4]&1 == 0)
			}
			tr.mu.Lock()
			accepted := tr.status&0x08 != 0
			bad := tr.driverFeatures&^tr.offered != 0
			tr.mu.Unlock()
			if accepted && bad {
				t.Fatalf("FEATURES_OK with features %#x beyond the offer %#x", tr.driverFeatures, tr.offered)
			}
		}
	})
}
