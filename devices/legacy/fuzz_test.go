package legacy

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/wisp-vmm/wisp/devices"
)

// fuzzTarget is one device (or view) the fuzzer addresses, with the size of
// the port range the VMM would give it.
type fuzzTarget struct {
	name string
	dev  devices.Device
	size uint64
}

// fuzzRig is a full set of legacy devices wired to fakes that never fail,
// so every access must return nil.
type fuzzRig struct {
	serial  *Serial
	i8042   *I8042
	rtc     *RTC
	marker  *BootMarker
	pvpanic *PVPanic
	pm      *ACPIPM
	targets []fuzzTarget
}

func newFuzzRig() *fuzzRig {
	clk := &fakeClock{t: rtcTestTime}
	r := &fuzzRig{
		serial:  NewSerial(&countingIRQ{}, io.Discard),
		i8042:   NewI8042(func() {}),
		rtc:     NewRTC(clk.now),
		marker:  NewBootMarker(rtcTestTime, clk.now, func(byte, time.Duration) {}),
		pvpanic: NewPVPanic(func(PVPanicEvent) {}),
		pm:      NewACPIPM(&countingIRQ{}, func() {}),
	}
	r.targets = []fuzzTarget{
		{"serial", r.serial, SerialSize},
		{"i8042", r.i8042, I8042Size},
		{"i8042 data", r.i8042.DataPort(), 1},
		{"i8042 command", r.i8042.CommandPort(), 1},
		{"rtc", r.rtc, RTCSize},
		{"boot marker", r.marker, BootMarkerSize},
		{"pvpanic", r.pvpanic, PVPanicSize},
		{"acpi pm", r.pm, ACPIPMSize},
		{"acpi pm event", r.pm.EventBlock(), ACPIPMEventSize},
		{"acpi pm control", r.pm.ControlBlock(), ACPIPMControlSize},
	}
	return r
}

var fuzzWidths = [...]int{1, 2, 4, 1, 8, 0, 3, 16}

// Each operation is a 4-byte header then, for writes and host input, its
// payload: target, kind, offset, shape. shape's low 3 bits pick the width;
// bit 3 makes the offset raw (anywhere in 0-255) instead of near the
// device; bit 4 makes it huge (near 2^64).
const (
	opRead = iota
	opWrite
	opHost
	opKinds
)

func op(target, kind, offset, shape byte, payload ...byte) []byte {
	return append([]byte{target, kind, offset, shape}, payload...)
}

func (r *fuzzRig) run(t *testing.T, in []byte) {
	for len(in) >= 4 {
		tg := r.targets[int(in[0])%len(r.targets)]
		kind, rawOff, shape := in[1]%opKinds, in[2], in[3]
		in = in[4:]

		width := fuzzWidths[shape&7]
		offset := uint64(rawOff) % (tg.size + 2) // mostly in range, sometimes just past
		switch {
		case shape&0x10 != 0:
			offset = ^uint64(0) - uint64(rawOff)
		case shape&0x08 != 0:
			offset = uint64(rawOff)
		}
		payload := make([]byte, width)
		if kind != opRead {
			n := copy(payload, in)
			in = in[n:]
		}

		var err error
		switch kind {
		case opRead:
			err = tg.dev.Read(offset, payload)
		case opWrite:
			err = tg.dev.Write(offset, payload)
		default:
			err = r.host(rawOff, payload)
		}
		if err != nil {
			t.Fatalf("%s kind %d offset %#x width %d: %v", tg.name, kind, offset, width, err)
		}
	}
	if got := r.serial.Stats().InputBuffered; got > SerialInputCapacity {
		t.Fatalf("serial buffered %d bytes, more than its capacity", got)
	}
	if got := len(r.marker.Marks()); got > BootMarkerHistory {
		t.Fatalf("boot marker kept %d marks, more than its history", got)
	}
}

// host performs the host-side calls a VMM makes while the guest runs.
func (r *fuzzRig) host(sel byte, payload []byte) error {
	switch sel % 5 {
	case 0:
		_, err := r.serial.Queue(payload)
		return err
	case 1:
		return r.pm.PressPowerButton()
	case 2:
		var v uint64
		for _, b := range payload {
			v = v<<8 | uint64(b)
		}
		r.rtc.SetMemorySize(v, ^v)
		return nil
	case 3:
		if err := r.rtc.SetRAM(int(sel), 0x5a); err != nil && !errors.Is(err, ErrCMOSIndex) {
			return err
		}
		return nil
	default:
		_ = r.serial.Stats()
		_ = r.marker.Marks()
		_ = r.pvpanic.Reported()
		return nil
	}
}

func FuzzDevices(f *testing.F) {
	const (
		serial = iota
		i8042
		_
		i8042Cmd
		rtc
		marker
		pvpanic
		pm
		_
		pmCtl
	)
	const byteWide, wordWide, dwordWide, qwordWide, zeroWide = 0, 1, 2, 4, 5
	seeds := [][]byte{
		nil,
		// Linux's 8250 bring-up: divisor, line, FIFO, interrupts, output.
		concat(
			op(serial, opWrite, uartLCR, byteWide, 0x83),
			op(serial, opWrite, uartData, byteWide, 0x01),
			op(serial, opWrite, uartIER, byteWide, 0x00),
			op(serial, opWrite, uartLCR, byteWide, 0x03),
			op(serial, opWrite, uartIIR, byteWide, 0xc7),
			op(serial, opWrite, uartMCR, byteWide, 0x1a),
			op(serial, opRead, uartMSR, byteWide),
			op(serial, opWrite, uartMCR, byteWide, 0x0b),
			op(serial, opWrite, uartIER, byteWide, 0x0f),
			op(serial, opHost, 0, byteWide, 'k'),
			op(serial, opRead, uartIIR, byteWide),
			op(serial, opRead, uartData, byteWide),
			op(serial, opWrite, uartData, byteWide, 'x'),
			op(serial, opRead, uartLSR, byteWide),
			op(serial, opRead, uartData, wordWide),
			op(serial, opWrite, uartData, qwordWide, 1, 2, 3, 4, 5, 6, 7, 8),
		),
		// RTC: read the clock, set it in binary 12h mode, odd widths.
		concat(
			op(rtc, opWrite, RTCIndexOffset, byteWide, 0x8b),
			op(rtc, opWrite, RTCDataOffset, byteWide, 0x80|statusBBinary),
			op(rtc, opWrite, RTCIndexOffset, byteWide, cmosHours),
			op(rtc, opWrite, RTCDataOffset, byteWide, 0xff),
			op(rtc, opWrite, RTCIndexOffset, byteWide, cmosMonth),
			op(rtc, opWrite, RTCDataOffset, byteWide, 0xff),
			op(rtc, opWrite, RTCIndexOffset, byteWide, cmosStatusB),
			op(rtc, opWrite, RTCDataOffset, byteWide, 0x00),
			op(rtc, opRead, RTCDataOffset, byteWide),
			op(rtc, opWrite, RTCIndexOffset, byteWide, RTCCenturyIndex),
			op(rtc, opWrite, RTCDataOffset, byteWide, 0x99),
			op(rtc, opRead, RTCDataOffset, dwordWide),
			op(rtc, opHost, 2, qwordWide, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		),
		// i8042: configuration byte, output port, reset.
		concat(
			op(i8042Cmd, opWrite, 0, byteWide, i8042WriteCTR),
			op(i8042, opWrite, I8042DataOffset, byteWide, 0x47),
			op(i8042, opWrite, I8042CommandOffset, byteWide, i8042WriteOutPort),
			op(i8042, opWrite, I8042DataOffset, byteWide, 0x00),
			op(i8042Cmd, opWrite, 0, byteWide, 0xfe),
			op(i8042, opRead, 2, byteWide),
			op(i8042, opRead, I8042CommandOffset, wordWide),
		),
		// Boot marks, pvpanic, ACPI power button and S5.
		concat(
			op(marker, opWrite, 0, byteWide, 0x01),
			op(marker, opRead, 0, dwordWide),
			op(pvpanic, opRead, 0, byteWide),
			op(pvpanic, opWrite, 0, byteWide, 0xff),
			op(pm, opWrite, 2, wordWide, 0x00, 0x01),
			op(pm, opHost, 1, zeroWide),
			op(pm, opRead, 0, dwordWide),
			op(pm, opWrite, 0, dwordWide, 0xff, 0xff, 0xff, 0xff),
			op(pmCtl, opWrite, 0, wordWide, 0x01, 0x34),
			op(pm, opWrite, 3, wordWide, 0x01, 0x34),
			op(pm, opRead, 0, 0x10|qwordWide),
		),
		// Hostile offsets and widths everywhere.
		concat(
			op(serial, opRead, 0xff, 0x10|byteWide),
			op(i8042, opWrite, 0xff, 0x08|byteWide, 0xfe),
			op(rtc, opWrite, 0x01, 0x10|wordWide, 0, 0),
			op(pmCtl, opWrite, 0x01, 0x10|dwordWide, 0, 0x34, 0, 0),
			op(9, opRead, 0xff, 7),
			op(0xff, opKinds+opWrite, 0xff, 0xff),
		),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		newFuzzRig().run(t, in)
	})
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
