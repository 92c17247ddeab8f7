package main

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// outb executes the OUT instruction (port_amd64.s).
func outb(port uint16, value uint8)

// writePort writes one byte to an I/O port. ioperm grants access to the
// calling thread only, so the goroutine is pinned to its thread while it
// asks for access and writes.
func writePort(port uint16, value uint8) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(int(port), 1, 1); err != nil {
		return fmt.Errorf("ioperm: %w", err)
	}
	outb(port, value)
	// Drop the access again so nothing else on this thread can use it.
	unix.Ioperm(int(port), 1, 0)
	return nil
}
