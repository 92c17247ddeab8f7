package legacy

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestSerial() (*Serial, *bytes.Buffer, *countingIRQ) {
	var out bytes.Buffer
	irq := &countingIRQ{}
	return NewSerial(irq, &out), &out, irq
}

func TestSerialResetValues(t *testing.T) {
	tests := []struct {
		name   string
		offset uint64
		want   byte
	}{
		{"RBR empty", uartData, 0x00},
		{"IER", uartIER, 0x00},
		{"IIR no interrupt, FIFOs off", uartIIR, 0x01},
		{"LCR 8N1", uartLCR, 0x03},
		{"MCR OUT2", uartMCR, 0x08},
		{"LSR THRE|TEMT", uartLSR, 0x60},
		{"MSR DCD|DSR|CTS", uartMSR, 0xb0},
		{"SCR", uartSCR, 0x00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, irq := newTestSerial()
			assert.Equal(t, tt.want, readByte(t, s, tt.offset))
			assert.Zero(t, irq.count())
		})
	}
}

func TestSerialOutputGoesToWriter(t *testing.T) {
	s, out, irq := newTestSerial()
	for _, b := range []byte("hello, wisp\n") {
		writeByte(t, s, uartData, b)
		assert.Equal(t, byte(0x60), readByte(t, s, uartLSR), "THR is empty again at once")
	}
	assert.Equal(t, "hello, wisp\n", out.String())
	assert.Zero(t, irq.count(), "no interrupt without ETBEI")
}

func TestSerialOutputAllocatesNothing(t *testing.T) {
	s := NewSerial(&countingIRQ{}, io.Discard)
	writeByte(t, s, uartIER, ierTHRE) // the interrupt path must not allocate either
	b := []byte{'x'}
	allocs := testing.AllocsPerRun(1000, func() {
		_ = s.Write(uartData, b)
		var iir [1]byte
		_ = s.Read(uartIIR, iir[:])
	})
	assert.Zero(t, allocs)
}

func TestSerialDivisorLatch(t *testing.T) {
	s, out, _ := newTestSerial()
	writeByte(t, s, uartIER, 0x05)
	writeByte(t, s, uartLCR, 0x83) // DLAB on, 8N1 kept
	assert.Equal(t, byte(0x0c), readByte(t, s, uartData), "default divisor 12 (9600 baud)")
	assert.Equal(t, byte(0x00), readByte(t, s, uartIER))

	writeByte(t, s, uartData, 0x01) // DLL: 115200 baud
	writeByte(t, s, uartIER, 0x02)  // DLM
	assert.Equal(t, byte(0x01), readByte(t, s, uartData))
	assert.Equal(t, byte(0x02), readByte(t, s, uartIER))
	assert.Empty(t, out.String(), "a DLL write is not a transmission")

	writeByte(t, s, uartLCR, 0x03) // DLAB off
	assert.Equal(t, byte(0x05), readByte(t, s, uartIER), "IER untouched by DLM writes")
	assert.Equal(t, byte(0x00), readByte(t, s, uartData), "RBR again, and empty")
	writeByte(t, s, uartData, 'A')
	assert.Equal(t, "A", out.String())

	writeByte(t, s, uartLCR, 0x80)
	assert.Equal(t, byte(0x01), readByte(t, s, uartData), "divisor survives DLAB toggling")
	assert.Equal(t, byte(0x02), readByte(t, s, uartIER))
}

func TestSerialRegisterReadBack(t *testing.T) {
	tests := []struct {
		name   string
		offset uint64
		write  byte
		want   byte
	}{
		{"IER keeps only its 4 bits", uartIER, 0xff, 0x0f},
		{"LCR", uartLCR, 0x1b, 0x1b},
		{"MCR keeps only its 5 bits", uartMCR, 0xe3, 0x03},
		{"SCR", uartSCR, 0xa5, 0xa5},
		{"LSR is read-only", uartLSR, 0x00, 0x60},
		{"MSR is read-only", uartMSR, 0x00, 0xb0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			writeByte(t, s, tt.offset, tt.write)
			assert.Equal(t, tt.want, readByte(t, s, tt.offset))
		})
	}
}

func TestSerialFIFOControl(t *testing.T) {
	tests := []struct {
		name    string
		fcr     byte
		wantIIR byte
	}{
		{"enable", 0x01, 0xc1},
		{"enable, clear both, trigger 14", 0xc7, 0xc1},
		{"disable", 0x00, 0x01},
		{"clear without enable does nothing", 0x06, 0x01},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			writeByte(t, s, uartIIR, tt.fcr)
			assert.Equal(t, tt.wantIIR, readByte(t, s, uartIIR))
		})
	}
}

func TestSerialFIFOClearReceiver(t *testing.T) {
	s, _, _ := newTestSerial()
	_, err := s.Queue([]byte("abc"))
	require.NoError(t, err)

	writeByte(t, s, uartIIR, fcrClearRx) // FIFOs off: ignored
	assert.Equal(t, byte(lsrDR), readByte(t, s, uartLSR)&lsrDR)

	writeByte(t, s, uartIIR, fcrEnable|fcrClearRx)
	assert.Zero(t, readByte(t, s, uartLSR)&lsrDR)
	assert.Zero(t, s.Stats().InputBuffered)
}

func TestSerialInputQueue(t *testing.T) {
	s, _, _ := newTestSerial()
	assert.Zero(t, readByte(t, s, uartLSR)&lsrDR, "nothing to read yet")

	n, err := s.Queue([]byte("hi"))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, 2, s.Stats().InputBuffered)

	steps := []struct {
		wantRBR byte
		wantDR  bool
	}{
		{'h', true},
		{'i', false},
		{0, false}, // empty receiver reads 0
	}
	for i, st := range steps {
		assert.Equal(t, st.wantRBR, readByte(t, s, uartData), "step %d", i)
		assert.Equal(t, st.wantDR, readByte(t, s, uartLSR)&lsrDR != 0, "step %d", i)
	}
}

func TestSerialInputOverflowDropsAndCounts(t *testing.T) {
	s, _, _ := newTestSerial()
	fill := bytes.Repeat([]byte{'.'}, SerialInputCapacity-1)
	n, err := s.Queue(fill)
	require.NoError(t, err)
	require.Equal(t, len(fill), n)

	n, err = s.Queue([]byte("xyz"))
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only one byte fits")
	st := s.Stats()
	assert.Equal(t, uint64(2), st.InputDropped)
	assert.Equal(t, SerialInputCapacity, st.InputBuffered)

	for range fill {
		readByte(t, s, uartData)
	}
	assert.Equal(t, byte('x'), readByte(t, s, uartData), "order is kept and the tail dropped")
	assert.Zero(t, readByte(t, s, uartLSR)&lsrDR)
}

func TestByteRingWrapsAround(t *testing.T) {
	tests := []struct {
		name     string
		pushes   []string
		pops     []int // pops after each push
		wantRest string
	}{
		{"fits", []string{"abc"}, []int{0}, "abc"},
		{"wraps", []string{"abcd", "ef"}, []int{3, 0}, "def"},
		{"full drops tail", []string{"abcdef"}, []int{0}, "abcde"},
		{"wraps then fills", []string{"abcde", "vwxyz"}, []int{4, 0}, "evwxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newByteRing(5)
			for i, p := range tt.pushes {
				r.push([]byte(p))
				for range tt.pops[i] {
					_, ok := r.pop()
					require.True(t, ok)
				}
			}
			var rest []byte
			for r.len() > 0 {
				b, _ := r.pop()
				rest = append(rest, b)
			}
			assert.Equal(t, tt.wantRest, string(rest))
			_, ok := r.pop()
			assert.False(t, ok)
		})
	}
}

// serialStep is one guest or host action and what must hold after it.
type serialStep struct {
	name       string
	do         func(t *testing.T, s *Serial)
	wantPulses int64
	wantIIR    int // -1: don't read IIR (reading it has side effects)
}

func runSerialSteps(t *testing.T, steps []serialStep) {
	s, _, irq := newTestSerial()
	for _, st := range steps {
		st.do(t, s)
		assert.Equal(t, st.wantPulses, irq.count(), "pulses after %q", st.name)
		if st.wantIIR >= 0 {
			assert.Equal(t, byte(st.wantIIR), readByte(t, s, uartIIR), "IIR after %q", st.name)
		}
	}
}

func guestWrite(offset uint64, v byte) func(*testing.T, *Serial) {
	return func(t *testing.T, s *Serial) { writeByte(t, s, offset, v) }
}

func guestRead(offset uint64) func(*testing.T, *Serial) {
	return func(t *testing.T, s *Serial) { readByte(t, s, offset) }
}

func hostQueue(in string) func(*testing.T, *Serial) {
	return func(t *testing.T, s *Serial) {
		_, err := s.Queue([]byte(in))
		require.NoError(t, err)
	}
}

func TestSerialTHREInterrupt(t *testing.T) {
	runSerialSteps(t, []serialStep{
		{"transmit with interrupts off", guestWrite(uartData, 'a'), 0, 0x01},
		{"enable ETBEI while idle raises THRE", guestWrite(uartIER, ierTHRE), 1, 0x02},
		{"the IIR read acknowledged it", func(*testing.T, *Serial) {}, 1, 0x01},
		{"THR write empties at once: THRE again", guestWrite(uartData, 'b'), 2, -1},
		{"second write while pending: no new edge", guestWrite(uartData, 'c'), 2, 0x02},
		{"after acknowledging, a write pulses again", guestWrite(uartData, 'd'), 3, 0x02},
		{"rewriting the same IER does not re-arm", guestWrite(uartIER, ierTHRE), 3, 0x01},
		{"turning ETBEI off", guestWrite(uartIER, 0), 3, 0x01},
		{"and on again re-arms (Linux's THRE test)", guestWrite(uartIER, ierTHRE), 4, 0x02},
		{"a pending THRE masked by IER drops the line", func(t *testing.T, s *Serial) {
			writeByte(t, s, uartData, 'e')
			writeByte(t, s, uartIER, 0)
		}, 5, 0x01},
	})
}

func TestSerialReceiveInterrupt(t *testing.T) {
	runSerialSteps(t, []serialStep{
		{"input with ERBFI off: no interrupt", hostQueue("a"), 0, 0x01},
		{"enabling ERBFI with data waiting", guestWrite(uartIER, ierRDA), 1, 0x04},
		{"IIR read does not clear RDA", func(*testing.T, *Serial) {}, 1, 0x04},
		{"more input while pending: no new edge", hostQueue("bc"), 1, 0x04},
		{"draining", func(t *testing.T, s *Serial) {
			for range 3 {
				readByte(t, s, uartData)
			}
		}, 1, 0x01},
		{"new input after draining pulses", hostQueue("d"), 2, 0x04},
		{"reading the byte clears it", guestRead(uartData), 2, 0x01},
		{"an empty Queue call does nothing", hostQueue(""), 2, 0x01},
	})
}

func TestSerialIIRPriority(t *testing.T) {
	s, _, irq := newTestSerial()
	// Fill the receiver, then make every source pending at once:
	// entering loopback changes MSR (delta bits), a loopback write into the
	// full receiver overruns (OE) and leaves THR empty.
	_, err := s.Queue(bytes.Repeat([]byte{'.'}, SerialInputCapacity))
	require.NoError(t, err)
	writeByte(t, s, uartMCR, mcrLoop)
	writeByte(t, s, uartData, 'x')
	assert.Zero(t, irq.count(), "nothing enabled yet")
	writeByte(t, s, uartIER, ierMask)
	assert.Equal(t, int64(1), irq.count())

	steps := []struct {
		name    string
		wantIIR byte
		service func()
	}{
		{"line status first", iirRLS, func() {
			assert.Equal(t, byte(lsrDR|lsrOE|lsrTHRE|lsrTEMT), readByte(t, s, uartLSR))
		}},
		{"then received data", iirRDA, func() { writeByte(t, s, uartIIR, fcrEnable|fcrClearRx) }},
		{"then THR empty, cleared by the IIR read itself", iirTHRE | iirFIFO, func() {}},
		{"then modem status", iirMS | iirFIFO, func() {
			assert.Equal(t, byte(msrDCTS|msrDDSR|msrDDCD), readByte(t, s, uartMSR), "DCD, DSR, CTS all dropped")
		}},
		{"then nothing", iirNone | iirFIFO, func() {}},
	}
	for _, st := range steps {
		assert.Equal(t, st.wantIIR, readByte(t, s, uartIIR), st.name)
		st.service()
	}
	assert.Equal(t, int64(1), irq.count(), "the line stayed high throughout: one edge")
}

func TestSerialLoopback(t *testing.T) {
	s, out, _ := newTestSerial()
	writeByte(t, s, uartMCR, mcrLoop|mcrOUT2)
	writeByte(t, s, uartData, 'x')
	writeByte(t, s, uartData, 'y')
	assert.Empty(t, out.String(), "loopback output never leaves the UART")
	assert.Equal(t, byte(lsrDR), readByte(t, s, uartLSR)&lsrDR)
	assert.Equal(t, byte('x'), readByte(t, s, uartData))
	assert.Equal(t, byte('y'), readByte(t, s, uartData))
	assert.Zero(t, readByte(t, s, uartLSR)&lsrDR)

	writeByte(t, s, uartMCR, mcrOUT2)
	writeByte(t, s, uartData, 'z')
	assert.Equal(t, "z", out.String())
	assert.Zero(t, readByte(t, s, uartLSR)&lsrDR)
}

func TestSerialLoopbackModemLines(t *testing.T) {
	tests := []struct {
		name string
		mcr  byte
		want byte // MSR status nibble
	}{
		{"none", 0, 0},
		{"DTR drives DSR", mcrDTR, msrDSR},
		{"RTS drives CTS", mcrRTS, msrCTS},
		{"OUT1 drives RI", mcrOUT1, msrRI},
		{"OUT2 drives DCD", mcrOUT2, msrDCD},
		{"Linux's probe value", mcrRTS | mcrOUT2, 0x90},
		{"all", 0x0f, 0xf0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			writeByte(t, s, uartMCR, mcrLoop|tt.mcr)
			assert.Equal(t, tt.want, readByte(t, s, uartMSR)&0xf0)
		})
	}
}

func TestSerialModemStatusDeltas(t *testing.T) {
	tests := []struct {
		name      string
		from, to  byte // MCR values, both in loopback
		wantDelta byte
	}{
		{"DSR rises", mcrLoop, mcrLoop | mcrDTR, msrDDSR},
		{"DSR falls", mcrLoop | mcrDTR, mcrLoop, msrDDSR},
		{"CTS changes", mcrLoop, mcrLoop | mcrRTS, msrDCTS},
		{"DCD changes", mcrLoop | mcrOUT2, mcrLoop, msrDDCD},
		{"RI trailing edge", mcrLoop | mcrOUT1, mcrLoop, msrTERI},
		{"RI leading edge is not reported", mcrLoop, mcrLoop | mcrOUT1, 0},
		{"no change", mcrLoop | mcrDTR, mcrLoop | mcrDTR, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, irq := newTestSerial()
			writeByte(t, s, uartMCR, tt.from)
			readByte(t, s, uartMSR) // clear deltas from entering loopback
			writeByte(t, s, uartIER, ierMS)
			writeByte(t, s, uartMCR, tt.to)
			assert.Equal(t, tt.wantDelta, readByte(t, s, uartMSR)&0x0f)
			assert.Zero(t, readByte(t, s, uartMSR)&0x0f, "reading MSR clears the deltas")
			wantPulses := int64(0)
			if tt.wantDelta != 0 {
				wantPulses = 1
			}
			assert.Equal(t, wantPulses, irq.count())
		})
	}
}

// TestSerialLinuxProbe replays the register tests Linux's 8250 autoconfig
// does, which decide whether the port exists and that it is a 16550A.
func TestSerialLinuxProbe(t *testing.T) {
	s, out, _ := newTestSerial()
	writeByte(t, s, uartIER, 0)
	assert.Equal(t, byte(0), readByte(t, s, uartIER)&0x0f)
	writeByte(t, s, uartIER, 0x0f)
	assert.Equal(t, byte(0x0f), readByte(t, s, uartIER)&0x0f)
	writeByte(t, s, uartIER, 0)

	writeByte(t, s, uartMCR, mcrLoop|0x0a)
	assert.Equal(t, byte(0x90), readByte(t, s, uartMSR)&0xf0, "loopback test")
	writeByte(t, s, uartMCR, 0)

	writeByte(t, s, uartLCR, 0)
	writeByte(t, s, uartIIR, fcrEnable)
	assert.Equal(t, byte(3), readByte(t, s, uartIIR)>>6, "FIFO bits say 16550A")
	writeByte(t, s, uartLCR, 0xbf)
	assert.NotZero(t, readByte(t, s, uartIIR), "no EFR: not mistaken for a 16650")
	writeByte(t, s, uartLCR, 0)
	assert.Zero(t, readByte(t, s, uartIIR)&0x20, "no 64-byte FIFO: not a 16750")

	writeByte(t, s, uartSCR, 0xa5)
	assert.Equal(t, byte(0xa5), readByte(t, s, uartSCR))
	assert.Empty(t, out.String())
}

type failingWriter struct {
	n   int
	err error
}

func (w failingWriter) Write([]byte) (int, error) { return w.n, w.err }

var errTerminalGone = errors.New("terminal gone")

func TestSerialOutputErrorsAreCountedNotReturned(t *testing.T) {
	tests := []struct {
		name    string
		w       io.Writer
		wantErr error
	}{
		{"write error", failingWriter{0, errTerminalGone}, errTerminalGone},
		{"short write", failingWriter{0, nil}, io.ErrShortWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSerial(nil, tt.w)
			writeByte(t, s, uartData, 'a') // returns nil: checked by writeByte
			writeByte(t, s, uartData, 'b')
			st := s.Stats()
			assert.Equal(t, uint64(2), st.OutputErrors)
			assert.ErrorIs(t, st.LastOutputError, tt.wantErr)
			assert.Equal(t, byte(0x60), readByte(t, s, uartLSR), "the guest still sees an idle transmitter")
		})
	}
}

var errIRQ = errors.New("irq line broken")

func TestSerialInterruptFailureIsReturned(t *testing.T) {
	irq := &countingIRQ{err: errIRQ}
	s := NewSerial(irq, io.Discard)
	err := s.Write(uartIER, []byte{ierTHRE | ierRDA})
	assert.ErrorIs(t, err, errIRQ)

	readByte(t, s, uartIIR) // acknowledge THRE so the line drops
	_, err = s.Queue([]byte("a"))
	assert.ErrorIs(t, err, errIRQ)
	assert.Equal(t, int64(2), irq.count())
}

func TestSerialWithoutIRQOrOutput(t *testing.T) {
	s := NewSerial(nil, nil)
	writeByte(t, s, uartIER, ierMask)
	writeByte(t, s, uartData, 'a')
	_, err := s.Queue([]byte("b"))
	require.NoError(t, err)
	assert.Equal(t, byte(0x04), readByte(t, s, uartIIR), "interrupts still show in IIR for polling")
}

func TestSerialUnsupportedAccesses(t *testing.T) {
	tests := []struct {
		name   string
		offset uint64
		width  int
	}{
		{"word at RBR", uartData, 2},
		{"dword at LSR", uartLSR, 4},
		{"qword", 0, 8},
		{"past the end", SerialSize, 1},
		{"huge offset", ^uint64(0), 1},
		{"zero width", uartData, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, out, irq := newTestSerial()
			_, err := s.Queue([]byte("q"))
			require.NoError(t, err)

			data := make([]byte, tt.width)
			require.NoError(t, s.Read(tt.offset, data))
			assert.Equal(t, bytes.Repeat([]byte{0xff}, tt.width), data)

			require.NoError(t, s.Write(tt.offset, bytes.Repeat([]byte{'w'}, tt.width)))
			assert.Empty(t, out.String())
			assert.Equal(t, 1, s.Stats().InputBuffered, "the odd read consumed nothing")
			assert.Zero(t, irq.count())
		})
	}
}

func TestSerialConcurrentUse(t *testing.T) {
	var out bytes.Buffer
	irq := &countingIRQ{}
	s := NewSerial(irq, &out)
	writeByte(t, s, uartIER, ierRDA|ierTHRE)

	const writers, perWriter = 4, 500
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range perWriter {
				_ = s.Write(uartData, []byte{'x'})
				var b [1]byte
				_ = s.Read(uartIIR, b[:])
			}
		})
	}
	wg.Go(func() {
		for range perWriter {
			_, _ = s.Queue([]byte("in"))
			var b [1]byte
			_ = s.Read(uartData, b[:])
		}
	})
	wg.Wait()
	assert.Equal(t, writers*perWriter, out.Len())
	st := s.Stats()
	assert.Equal(t, perWriter, st.InputBuffered, "two queued, one read, per round")
	assert.Zero(t, st.InputDropped)
}
