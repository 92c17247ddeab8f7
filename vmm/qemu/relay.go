package qemu

import (
	"net"
	"time"
)

// relayOut copies the guest's console to Console.Out. If Out fails, the
// relay keeps reading and drops the bytes: a stalled socket would stall the
// guest's serial port.
func (b *Backend) relayOut(conn net.Conn) {
	buf := make([]byte, 32<<10)
	out := b.console.Out
	for {
		n, err := conn.Read(buf)
		if n > 0 && out != nil {
			if _, werr := out.Write(buf[:n]); werr != nil {
				out = nil
			}
		}
		if err != nil {
			return
		}
	}
}

// readMarkers reports each byte from the debug port.
func (b *Backend) readMarkers(conn net.Conn, start time.Time) {
	buf := make([]byte, 256)
	for {
		n, err := conn.Read(buf)
		if b.opts.OnBootMarker != nil {
			since := time.Since(start)
			for _, c := range buf[:n] {
				b.opts.OnBootMarker(c, since)
			}
		}
		if err != nil {
			return
		}
	}
}
