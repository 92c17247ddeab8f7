// Package legacy holds the small PC devices a Linux guest expects to find on
// the port I/O bus: an 8250/16550A UART, the i8042 reset line, the CMOS RTC,
// wisp's boot-marker port, the pvpanic device and the ACPI PM1a registers.
//
// Every device implements devices.Device and knows nothing about KVM or QEMU:
// offsets are relative to the base the VMM inserted the device at, and
// interrupts go out through devices.IRQ. Each device guards its state with its
// own mutex, so several vCPU goroutines may call it at once.
//
// The guest is untrusted. A device never panics on any (offset, width) pair:
// an access it does not implement reads as all ones (what an undriven ISA bus
// returns) and is ignored on write, and the call returns nil, because a guest
// poking the wrong register is not a host error. Errors are returned only for
// host-side failures, such as an interrupt line that cannot be raised.
//
// Callbacks (reset, power-off, panic, boot marks) run on the calling vCPU's
// goroutine after the device has released its lock, so they may call back
// into the device, but they should return quickly.
package legacy

import "github.com/wisp-vmm/wisp/devices"

// Conventional PC port addresses for these devices. Where a device sits and
// which interrupt it uses is the VMM's choice; these are the values a Linux
// guest looks for without being told otherwise.
const (
	COM1Port        = 0x3f8
	COM2Port        = 0x2f8
	I8042DataPort   = 0x60
	I8042CmdPort    = 0x64
	RTCPort         = 0x70
	BootMarkerPort  = 0x440 // wisp's own choice
	PVPanicPort     = 0x505 // QEMU's default for the pvpanic ISA device
	ACPIPM1aEvtPort = 0x600 // where wisp's FADT places PM1a_EVT_BLK
	ACPIPM1aCntPort = 0x604 // where wisp's FADT places PM1a_CNT_BLK
)

// floatBus fills a read buffer with all ones: what a PC reads from a port no
// device drives, and what these devices return for accesses they don't serve.
func floatBus(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// within reports whether [offset, offset+width) lies inside [0, size),
// without overflowing on hostile offsets.
func within(offset uint64, width int, size uint64) bool {
	return offset < size && uint64(width) <= size-offset
}

// window is a view of part of a device's register file, so a device that
// spans non-adjacent port ranges can be inserted once per range.
type window struct {
	dev        devices.Device
	base, size uint64
}

var _ devices.Device = window{}

func (w window) Read(offset uint64, data []byte) error {
	if !within(offset, len(data), w.size) {
		floatBus(data)
		return nil
	}
	return w.dev.Read(w.base+offset, data)
}

func (w window) Write(offset uint64, data []byte) error {
	if !within(offset, len(data), w.size) {
		return nil
	}
	return w.dev.Write(w.base+offset, data)
}
