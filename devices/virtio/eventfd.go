package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// EventFD is a Linux eventfd: the currency of both transports. KVM signals
// queue kicks through ioeventfds and takes interrupts through irqfds;
// vhost-user passes kick and call eventfds over its socket.
type EventFD struct{ fd int }

// NewEventFD makes a non-blocking eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{fd: fd}, nil
}

// AdoptEventFD takes ownership of fd (e.g. received over a unix socket) and
// makes it non-blocking.
func AdoptEventFD(fd int) (*EventFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("eventfd %d: set non-blocking: %w", fd, err)
	}
	return &EventFD{fd: fd}, nil
}

// Fd is the descriptor, for registering with KVM or sending to QEMU.
func (e *EventFD) Fd() int { return e.fd }

// Signal adds one to the counter, waking a waiter.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	for {
		_, err := unix.Write(e.fd, b[:])
		switch {
		case err == nil, errors.Is(err, unix.EAGAIN): // EAGAIN: counter saturated, already signalled
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return fmt.Errorf("eventfd %d: signal: %w", e.fd, err)
		}
	}
}

// Trigger makes an EventFD usable as an Interrupt (an irqfd or a vhost-user
// call fd).
func (e *EventFD) Trigger() error { return e.Signal() }

// Drain resets the counter and returns what it was (0 if not signalled).
func (e *EventFD) Drain() (uint64, error) {
	var b [8]byte
	for {
		_, err := unix.Read(e.fd, b[:])
		switch {
		case err == nil:
			return binary.LittleEndian.Uint64(b[:]), nil
		case errors.Is(err, unix.EAGAIN):
			return 0, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return 0, fmt.Errorf("eventfd %d: drain: %w", e.fd, err)
		}
	}
}

// signalled reports, without blocking or draining, whether e is signalled.
func (e *EventFD) signalled() bool {
	fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}

// Close closes the descriptor.
func (e *EventFD) Close() error { return unix.Close(e.fd) }

// Wait blocks until e or stop is signalled. It drains e and reports
// stopped=true if stop fired (stop is left signalled, so every worker
// sharing it sees it).
func Wait(e, stop *EventFD) (stopped bool, err error) {
	fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}, {Fd: int32(stop.fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll eventfds: %w", err)
		}
		if fds[1].Revents != 0 {
			return true, nil
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return false, fmt.Errorf("eventfd %d: poll error %#x", e.fd, fds[0].Revents)
		}
		_, err = e.Drain()
		return false, err
	}
}
