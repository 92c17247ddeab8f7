package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// conn reads messages with their descriptors off the front end's socket.
type conn struct {
	c   *net.UnixConn
	oob []byte
}

func newConn(c *net.UnixConn) *conn {
	// One extra slot: a message with more descriptors than any request
	// may carry is then seen as too many rather than as truncated.
	return &conn{c: c, oob: make([]byte, unix.CmsgSpace((maxFDs+1)*4))}
}

// readFull fills b, collecting any descriptors that arrive on the way
// into *fds (which the caller closes on error). io.EOF means the front end
// hung up between messages.
func (c *conn) readFull(b []byte, fds *[]int) error {
	for got := 0; got < len(b); {
		n, oobn, flags, _, err := c.c.ReadMsgUnix(b[got:], c.oob)
		if oobn > 0 {
			rights, perr := parseRights(c.oob[:oobn])
			*fds = append(*fds, rights...)
			if perr != nil {
				return perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fmt.Errorf("more file descriptors than fit in one message: %w", ErrProtocol)
		}
		got += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				if got > 0 {
					return io.ErrUnexpectedEOF
				}
				return io.EOF
			}
			return err
		}
		if n == 0 {
			// A stream socket reads 0 bytes only at end of file.
			if got == 0 {
				return io.EOF
			}
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

// parseRights extracts the descriptors of SCM_RIGHTS messages; anything
// else in the ancillary data is a protocol error (after the descriptors
// found so far are returned, so they get closed).
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("ancillary data: %w: %w", ErrProtocol, err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			return fds, fmt.Errorf("ancillary data of level %d type %d: %w", m.Header.Level, m.Header.Type, ErrProtocol)
		}
		r, err := unix.ParseUnixRights(&m)
		fds = append(fds, r...)
		if err != nil {
			return fds, fmt.Errorf("SCM_RIGHTS: %w: %w", ErrProtocol, err)
		}
	}
	return fds, nil
}

// read reads and decodes one message and returns the descriptors that
// came with it, which the caller then owns; on error they are closed.
func (c *conn) read() (*message, []int, error) {
	var fds []int
	var hb [headerSize]byte
	if err := c.readFull(hb[:], &fds); err != nil {
		closeFDs(fds)
		return nil, nil, err
	}
	h, err := decodeHeader(hb[:])
	if err != nil {
		closeFDs(fds)
		return nil, nil, err
	}
	payload := make([]byte, h.Size)
	if err := c.readFull(payload, &fds); err != nil {
		closeFDs(fds)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("%v: payload: %w", h.Request, err)
	}
	if len(fds) > maxFDs {
		closeFDs(fds)
		return nil, nil, fmt.Errorf("%v: %d file descriptors, at most %d: %w", h.Request, len(fds), maxFDs, ErrProtocol)
	}
	m, err := decodeMessage(h, payload, len(fds))
	if err != nil {
		closeFDs(fds)
		return nil, nil, err
	}
	return m, fds, nil
}

// write sends one reply.
func (c *conn) write(b []byte) error {
	_, err := c.c.Write(b)
	return err
}
