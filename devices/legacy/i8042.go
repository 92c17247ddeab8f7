package legacy

import (
	"sync"

	"github.com/wisp-vmm/wisp/devices"
)

// The i8042's two ports are four apart (0x60 and 0x64), so the device is
// laid out as a 5-port window: offset 0 is the data port, offset 4 the
// status/command port, offsets 1-3 are not decoded. Insert the two views from
// DataPort and CommandPort (one port each) to leave 0x61-0x63 free: 0x61 is
// the PC speaker / NMI status port, which KVM's in-kernel PIT serves.
const (
	I8042DataOffset    = 0
	I8042CommandOffset = 4
	I8042Size          = 5
)

// Controller commands (written to the command port).
const (
	i8042ReadCTR      = 0x20
	i8042WriteCTR     = 0x60
	i8042DisableAux   = 0xa7
	i8042EnableAux    = 0xa8
	i8042SelfTest     = 0xaa
	i8042KbdTest      = 0xab
	i8042DisableKbd   = 0xad
	i8042EnableKbd    = 0xae
	i8042ReadOutPort  = 0xd0
	i8042WriteOutPort = 0xd1
	// 0xf0-0xff pulse the output port bits whose mask bit is 0 low for a
	// few microseconds; bit 0 is the CPU reset line, so 0xfe resets.
	i8042PulseBase = 0xf0
)

const (
	i8042StatusOBF      = 0x01 // output buffer full: a byte waits at port 0x60
	i8042StatusSys      = 0x04 // system flag, mirrors CTR bit 2
	i8042StatusCommand  = 0x08 // last write went to the command port
	i8042StatusUnlocked = 0x10 // keyboard not inhibited

	i8042CTRSys        = 0x04
	i8042CTRKbdDisable = 0x10
	i8042CTRAuxDisable = 0x20

	i8042OutPortReset = 0x01 // active low: clearing it resets the CPU
	i8042OutPortA20   = 0x02

	i8042SelfTestOK = 0x55
	i8042KbdTestOK  = 0x00
)

// I8042 is just enough of the PS/2 controller to give the guest a reset
// line: pulsing output-port bit 0 (command 0xfe, what Linux's reboot=k and
// its fallback reboot path write) or writing the output port with bit 0
// clear calls the reset callback. It also answers the basic controller
// commands (configuration byte, controller and keyboard self tests, output
// port) so the status and configuration a guest reads are coherent. No
// keyboard or mouse is attached and no interrupt is raised; commands it does
// not know are ignored, so a guest that waits for their answer times out.
// Linux does not probe the controller at all when the FADT's IAPC_BOOT_ARCH
// lacks the 8042 flag, and still resets through port 0x64.
type I8042 struct {
	reset func()

	mu          sync.Mutex
	ctr         byte // controller configuration byte ("command byte")
	outPort     byte
	out         byte // output buffer, read at the data port
	outFull     bool
	pending     byte // command waiting for its data byte, 0 if none
	lastCommand bool // last write was to the command port (status bit 3)
}

var _ devices.Device = (*I8042)(nil)

// NewI8042 returns a controller that calls reset (which may be nil) when
// the guest asks for a CPU reset.
func NewI8042(reset func()) *I8042 {
	return &I8042{
		reset:   reset,
		ctr:     i8042CTRSys,
		outPort: i8042OutPortReset | i8042OutPortA20,
	}
}

// DataPort returns the one-port view of the data port (0x60).
func (k *I8042) DataPort() devices.Device {
	return window{dev: k, base: I8042DataOffset, size: 1}
}

// CommandPort returns the one-port view of the status/command port (0x64).
func (k *I8042) CommandPort() devices.Device {
	return window{dev: k, base: I8042CommandOffset, size: 1}
}

// Read serves a one-byte read of the data or status port in the 5-port
// layout; anything else reads as all ones.
func (k *I8042) Read(offset uint64, data []byte) error {
	if len(data) != 1 || (offset != I8042DataOffset && offset != I8042CommandOffset) {
		floatBus(data)
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if offset == I8042CommandOffset {
		data[0] = k.status()
		return nil
	}
	// With the buffer empty, the last byte is read again, as on hardware.
	data[0] = k.out
	k.outFull = false
	return nil
}

// Write serves a one-byte write of the data or command port; anything else
// is ignored.
func (k *I8042) Write(offset uint64, data []byte) error {
	if len(data) != 1 || (offset != I8042DataOffset && offset != I8042CommandOffset) {
		return nil
	}
	k.mu.Lock()
	var reset bool
	if offset == I8042CommandOffset {
		reset = k.command(data[0])
	} else {
		reset = k.data(data[0])
	}
	k.mu.Unlock()
	if reset && k.reset != nil {
		k.reset()
	}
	return nil
}

func (k *I8042) status() byte {
	v := byte(i8042StatusUnlocked)
	if k.outFull {
		v |= i8042StatusOBF
	}
	if k.ctr&i8042CTRSys != 0 {
		v |= i8042StatusSys
	}
	if k.lastCommand {
		v |= i8042StatusCommand
	}
	return v
}

func (k *I8042) respond(v byte) {
	k.out = v
	k.outFull = true
}

// command runs a controller command and reports whether it resets the CPU.
func (k *I8042) command(cmd byte) bool {
	k.lastCommand = true
	k.pending = 0
	switch {
	case cmd == i8042ReadCTR:
		k.respond(k.ctr)
	case cmd == i8042WriteCTR, cmd == i8042WriteOutPort:
		k.pending = cmd
	case cmd == i8042DisableAux:
		k.ctr |= i8042CTRAuxDisable
	case cmd == i8042EnableAux:
		k.ctr &^= i8042CTRAuxDisable
	case cmd == i8042SelfTest:
		k.respond(i8042SelfTestOK)
	case cmd == i8042KbdTest:
		k.respond(i8042KbdTestOK)
	case cmd == i8042DisableKbd:
		k.ctr |= i8042CTRKbdDisable
	case cmd == i8042EnableKbd:
		k.ctr &^= i8042CTRKbdDisable
	case cmd == i8042ReadOutPort:
		k.respond(k.outPort)
	case cmd >= i8042PulseBase:
		return cmd&i8042OutPortReset == 0
	}
	return false
}

// data takes a byte written to the data port and reports whether it resets
// the CPU. Without a pending command it would go to the keyboard, and there
// is none.
func (k *I8042) data(v byte) bool {
	k.lastCommand = false
	cmd := k.pending
	k.pending = 0
	switch cmd {
	case i8042WriteCTR:
		k.ctr = v
	case i8042WriteOutPort:
		k.outPort = v
		return v&i8042OutPortReset == 0
	}
	return false
}
