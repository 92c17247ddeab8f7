package legacy

import (
	"fmt"
	"io"
	"sync"

	"github.com/wisp-vmm/wisp/devices"
)

const (
	// SerialSize is the number of ports a UART occupies.
	SerialSize = 8
	// SerialInputCapacity bounds the bytes queued for the guest to read;
	// input beyond it is dropped and counted in SerialStats.InputDropped.
	SerialInputCapacity = 64 << 10
)

// UART register offsets. Several share an offset and are told apart by the
// direction of the access or by LCR.DLAB.
const (
	uartData = 0 // read RBR, write THR; DLL when DLAB is set
	uartIER  = 1 // DLM when DLAB is set
	uartIIR  = 2 // read IIR, write FCR
	uartLCR  = 3
	uartMCR  = 4
	uartLSR  = 5
	uartMSR  = 6
	uartSCR  = 7
)

const (
	ierRDA  = 0x01 // ERBFI: received data available
	ierTHRE = 0x02 // ETBEI: transmitter holding register empty
	ierRLS  = 0x04 // ELSI: receiver line status
	ierMS   = 0x08 // EDSSI: modem status
	ierMask = 0x0f // the 16550A has no bits above these

	iirNone = 0x01 // no interrupt pending
	iirMS   = 0x00
	iirTHRE = 0x02
	iirRDA  = 0x04
	iirRLS  = 0x06
	iirFIFO = 0xc0 // both bits set: FIFOs enabled, which makes Linux say 16550A

	fcrEnable  = 0x01
	fcrClearRx = 0x02
	fcrKept    = 0xc9 // enable, DMA mode, receive trigger level: no register reads them back, but keep them

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR     = 0x01
	lsrOE     = 0x02
	lsrTHRE   = 0x20
	lsrTEMT   = 0x40
	lsrErrors = 0x1e // OE, PE, FE, BI: the bits that raise a line-status interrupt

	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80
)

// SerialStats counts what the UART had to drop or could not do. None of it
// is the guest's fault, so none of it is reported as an access error.
type SerialStats struct {
	InputBuffered   int    // bytes queued and not yet read by the guest
	InputDropped    uint64 // bytes Queue refused because the buffer was full
	OutputErrors    uint64 // failed or short writes to the output
	LastOutputError error  // the most recent of those, nil if none
}

// Serial is an 8250/16550A UART. Bytes the guest transmits go to an
// io.Writer; bytes the host queues are received by the guest. Transmission
// is instantaneous, so THR is always empty and the transmitter always idle.
//
// Interrupts follow the 16550A: the line is the OR of the enabled sources
// (line status, received data, THR empty, modem status) and the IRQ is
// pulsed on each low-to-high transition of that line, which is what an
// edge-triggered ISA interrupt sees. Linux's 8250 handler reads IIR until it
// reports no interrupt, so it sees every transition.
type Serial struct {
	irq devices.IRQ
	out io.Writer

	mu sync.Mutex
	tx [1]byte // the transmit buffer, reused so output allocates nothing
	rx byteRing

	ier, fcr, lcr, mcr, scr byte
	dll, dlm                byte
	lineErrors              byte // sticky error bits, cleared by reading LSR
	msrDelta                byte // delta bits, cleared by reading MSR
	threPending             bool // THR-empty interrupt not yet acknowledged
	irqLine                 bool // level of the interrupt output as last computed

	inputDropped    uint64
	outputErrors    uint64
	lastOutputError error
}

var _ devices.Device = (*Serial)(nil)

// NewSerial returns a UART that writes transmitted bytes to out (nil
// discards them) and pulses irq when an enabled interrupt becomes pending
// (nil means no interrupt line; the guest must poll). The registers start
// as firmware would leave them: 8N1, 9600 baud, OUT2 set, FIFOs off.
//
// Writes to out happen with the UART's lock held, so output from several
// vCPUs stays in order; a writer that blocks stalls the guest's console,
// so give it one that does not (a buffered or non-blocking sink).
func NewSerial(irq devices.IRQ, out io.Writer) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{
		irq: irq,
		out: out,
		rx:  newByteRing(SerialInputCapacity),
		lcr: 0x03, // 8 data bits, no parity, 1 stop bit
		mcr: mcrOUT2,
		dll: 0x0c, // divisor 12: 9600 baud from the 1.8432 MHz clock
	}
}

// Queue buffers input for the guest to read, as if typed on the line, and
// raises the received-data interrupt if the guest enabled it. It returns how
// many bytes were accepted; the rest did not fit in SerialInputCapacity and
// were dropped and counted. The error is only ever a failure to raise the
// interrupt.
func (s *Serial) Queue(input []byte) (int, error) {
	s.mu.Lock()
	n := s.rx.push(input)
	s.inputDropped += uint64(len(input) - n)
	raise := s.updateLine()
	s.mu.Unlock()
	return n, s.pulse(raise)
}

// Stats returns a snapshot of the UART's counters.
func (s *Serial) Stats() SerialStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SerialStats{
		InputBuffered:   s.rx.len(),
		InputDropped:    s.inputDropped,
		OutputErrors:    s.outputErrors,
		LastOutputError: s.lastOutputError,
	}
}

// Read serves a guest read of one UART register. Registers are 8 bits wide;
// other widths read as all ones.
func (s *Serial) Read(offset uint64, data []byte) error {
	if len(data) != 1 || offset >= SerialSize {
		floatBus(data)
		return nil
	}
	s.mu.Lock()
	data[0] = s.readRegister(offset)
	raise := s.updateLine()
	s.mu.Unlock()
	return s.pulse(raise)
}

// Write serves a guest write of one UART register. Other widths are ignored.
func (s *Serial) Write(offset uint64, data []byte) error {
	if len(data) != 1 || offset >= SerialSize {
		return nil
	}
	s.mu.Lock()
	s.writeRegister(offset, data[0])
	raise := s.updateLine()
	s.mu.Unlock()
	return s.pulse(raise)
}

func (s *Serial) readRegister(offset uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case uartData:
		if dlab {
			return s.dll
		}
		b, _ := s.rx.pop() // an empty receiver reads 0
		return b
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		id := s.interruptID()
		if id == iirTHRE {
			// Reading IIR while it reports THR empty acknowledges that
			// interrupt; the others clear by servicing their cause.
			s.threPending = false
		}
		if s.fcr&fcrEnable != 0 {
			id |= iirFIFO
		}
		return id
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := lsrTHRE | lsrTEMT | s.lineErrors
		if s.rx.len() > 0 {
			v |= lsrDR
		}
		s.lineErrors = 0
		return v
	case uartMSR:
		v := s.modemStatus() | s.msrDelta
		s.msrDelta = 0
		return v
	default: // uartSCR
		return s.scr
	}
}

func (s *Serial) writeRegister(offset uint64, v byte) {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case uartData:
		if dlab {
			s.dll = v
			return
		}
		s.transmit(v)
	case uartIER:
		if dlab {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & ierMask
		if old&ierTHRE == 0 && s.ier&ierTHRE != 0 {
			// A 16550A asserts THR-empty again whenever ETBEI is turned
			// on while the transmitter is idle. Linux tests for exactly
			// this at startup and kicks transmission this way.
			s.threPending = true
		}
	case uartIIR: // FCR
		if v&fcrEnable == 0 {
			s.fcr = 0 // the other FCR bits only take with FIFOs enabled
			return
		}
		s.fcr = v & fcrKept
		if v&fcrClearRx != 0 {
			s.rx.reset()
		}
		// Clearing the transmit FIFO is a no-op: it is always empty.
	case uartLCR:
		s.lcr = v
	case uartMCR:
		before := s.modemStatus()
		s.mcr = v & mcrMask
		s.noteModemChange(before, s.modemStatus())
	case uartLSR, uartMSR:
		// Writable only in factory test modes; ignored.
	default: // uartSCR
		s.scr = v
	}
}

// transmit sends one byte from THR: to the output, or back to the receiver
// in loopback mode. Either way THR is empty again at once.
func (s *Serial) transmit(v byte) {
	s.threPending = true
	if s.mcr&mcrLoop != 0 {
		if s.rx.push1(v) == 0 {
			s.lineErrors |= lsrOE
		}
		return
	}
	s.tx[0] = v
	n, err := s.out.Write(s.tx[:])
	if err == nil && n != len(s.tx) {
		err = io.ErrShortWrite
	}
	if err != nil {
		// The guest's console must not die because the host's terminal
		// did; count it for the VMM to report.
		s.outputErrors++
		s.lastOutputError = err
	}
}

// modemStatus returns MSR's status bits. With nothing attached the lines
// say a modem is present and ready (DCD, DSR, CTS), so a guest that waits
// for carrier or clear-to-send proceeds. In loopback mode the MCR outputs
// drive them, which Linux's probe checks.
func (s *Serial) modemStatus() byte {
	if s.mcr&mcrLoop == 0 {
		return msrDCD | msrDSR | msrCTS
	}
	var v byte
	if s.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if s.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if s.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// noteModemChange sets MSR's delta bits for status lines that changed.
func (s *Serial) noteModemChange(before, after byte) {
	changed := before ^ after
	if changed&msrCTS != 0 {
		s.msrDelta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		s.msrDelta |= msrDDSR
	}
	if before&msrRI != 0 && after&msrRI == 0 { // trailing edge only
		s.msrDelta |= msrTERI
	}
	if changed&msrDCD != 0 {
		s.msrDelta |= msrDDCD
	}
}

// interruptID returns the highest-priority enabled pending interrupt in
// IIR's encoding.
func (s *Serial) interruptID() byte {
	switch {
	case s.ier&ierRLS != 0 && s.lineErrors&lsrErrors != 0:
		return iirRLS
	case s.ier&ierRDA != 0 && s.rx.len() > 0:
		return iirRDA
	case s.ier&ierTHRE != 0 && s.threPending:
		return iirTHRE
	case s.ier&ierMS != 0 && s.msrDelta != 0:
		return iirMS
	default:
		return iirNone
	}
}

// updateLine recomputes the interrupt output and reports whether it just
// went from low to high, which is when the IRQ must be pulsed.
func (s *Serial) updateLine() bool {
	line := s.interruptID() != iirNone
	rising := line && !s.irqLine
	s.irqLine = line
	return rising
}

// pulse triggers the IRQ outside the lock, so a backend that takes time
// (an ioctl) does not hold up other vCPUs touching the UART.
func (s *Serial) pulse(raise bool) error {
	if !raise || s.irq == nil {
		return nil
	}
	if err := s.irq.Trigger(); err != nil {
		return fmt.Errorf("serial: raise interrupt: %w", err)
	}
	return nil
}

// byteRing is a fixed-capacity FIFO of bytes.
type byteRing struct {
	buf     []byte
	head, n int
}

func newByteRing(capacity int) byteRing { return byteRing{buf: make([]byte, capacity)} }

func (r *byteRing) len() int { return r.n }

func (r *byteRing) reset() { r.head, r.n = 0, 0 }

// push appends as much of p as fits and returns how much that was.
func (r *byteRing) push(p []byte) int {
	if free := len(r.buf) - r.n; len(p) > free {
		p = p[:free]
	}
	if len(p) == 0 {
		return 0
	}
	tail := (r.head + r.n) % len(r.buf)
	c := copy(r.buf[tail:], p)
	copy(r.buf, p[c:]) // wrap around; cannot reach head because p fits
	r.n += len(p)
	return len(p)
}

// push1 appends one byte and returns 1, or 0 if the ring is full.
func (r *byteRing) push1(b byte) int {
	if r.n == len(r.buf) {
		return 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = b
	r.n++
	return 1
}

func (r *byteRing) pop() (byte, bool) {
	if r.n == 0 {
		return 0, false
	}
	b := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return b, true
}
