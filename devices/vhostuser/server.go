// Package vhostuser serves a wisp virtio device to QEMU over vhost-user: it
// is the back end ("slave") of QEMU's docs/interop/vhost-user.rst. QEMU
// emulates the virtio-pci transport and the guest's CPUs; the device's
// queues live in guest RAM, which QEMU shares as memfds, and are served by
// the same virtio.Device code wisp's KVM backend uses.
//
// One Server serves one device to one front end at a time. It implements
// the split-ring subset QEMU 7.2's vhost-user-blk-pci, vhost-user-rng-pci
// and vhost-user netdev use: features and protocol features (MQ,
// REPLY_ACK, CONFIG, RESET_DEVICE), the memory table, ring setup with kick
// and call eventfds, ring enable, and config space.
//
// Everything the front end sends is checked: a malformed message ends that
// connection with an error wrapping ErrProtocol (the Server then waits for
// the next one); nothing a front end or guest does panics the process.
//
// Rings are started and stopped one by one (a kick eventfd starts a ring,
// GET_VRING_BASE stops it), while a virtio.Device is activated with all its
// queues at once. The server bridges the two by re-activating: whenever
// the set of runnable rings changes, the device is reset (its workers
// stop, and each queue's next available index is kept) and activated again
// with the runnable rings, resuming where they were.
package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// ErrServing: Serve was called while the Server already serves.
var ErrServing = errors.New("vhost-user: server already serving")

// Options tunes a Server; the zero value works.
type Options struct {
	// Name labels the server's errors, e.g. "disk0".
	Name string
	// OnError receives what ended a connection (a protocol violation, a
	// memory table that cannot be mapped) and what kept a ring or the
	// device from starting (a guest's invalid ring, a failed Activate).
	// It is called from Serve's goroutine; nil drops the errors.
	OnError func(error)
	// Trace, if set, receives one line per message handled, for debugging
	// a front end.
	Trace func(line string)
}

// Server serves one virtio device over vhost-user.
type Server struct {
	dev     virtio.Device
	opts    Options
	serving atomic.Bool
}

// NewServer returns a server for dev. The server resets dev when a front
// end disconnects but never closes it: the caller owns dev.
func NewServer(dev virtio.Device, o Options) *Server {
	return &Server{dev: dev, opts: o}
}

// Serve accepts front-end connections on l and serves them one after the
// other (QEMU reconnects after a disconnect if its chardev has reconnect
// set) until ctx ends. It closes l, and with it the socket file, when it
// returns. It returns nil when ctx ended and an error if accepting fails;
// errors of single connections go to Options.OnError.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	defer l.Close()
	if !s.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	defer s.serving.Store(false)
	// When ctx ends, a deadline in the past wakes Accept; Serve then
	// closes l itself, so the descriptor is gone when Serve returns.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		_ = l.SetDeadline(time.Unix(1, 0))
	})
	// Nothing of Serve outlives it: a wake-up already under way is waited
	// for.
	defer func() {
		if !stop() {
			<-woken
		}
	}()
	for {
		c, err := l.AcceptUnix()
		if ctx.Err() != nil {
			if c != nil {
				_ = c.Close()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("vhost-user %s: accept on %s: %w", s.opts.Name, l.Addr(), err)
		}
		if err := s.serveConn(ctx, c); err != nil && ctx.Err() == nil {
			s.report(fmt.Errorf("vhost-user %s: connection closed: %w", s.opts.Name, err))
		}
	}
}

func (s *Server) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

func (s *Server) trace(format string, args ...any) {
	if s.opts.Trace != nil {
		s.opts.Trace(fmt.Sprintf(format, args...))
	}
}

// serveConn handles one front end's messages until it hangs up, breaks the
// protocol, or ctx ends. Whatever happens, the device is reset and every
// mapping and descriptor of the connection released.
func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) (err error) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	sess := newSession(s)
	defer func() {
		if cerr := sess.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	cn := newConn(c)
	for {
		m, fds, err := cn.read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s.trace("%v flags=%#x %s", m.Request, m.Flags, m.describe())
		reply, herr := sess.handle(m, fds)
		var soft *rejectedError
		if herr == nil || errors.As(herr, &soft) {
			// The device follows the rings before the front end hears
			// back, so an ack means the ring runs (or stopped).
			if err := sess.reconcile(); err != nil {
				herr = err
			}
		}
		if herr != nil && !errors.As(herr, &soft) {
			if m.needReply() && sess.protocol&ProtocolReplyAck != 0 && !hasReply(m.Request) {
				_ = cn.write(encodeReply(m.Request, encodeU64(1)))
			}
			return herr
		}
		if herr != nil {
			s.report(fmt.Errorf("vhost-user %s: %w", s.opts.Name, herr))
		}
		switch {
		case hasReply(m.Request):
			err = cn.write(encodeReply(m.Request, reply))
		case m.needReply() && sess.protocol&ProtocolReplyAck != 0:
			status := uint64(0)
			if herr != nil {
				status = 1
			}
			err = cn.write(encodeReply(m.Request, encodeU64(status)))
		}
		if err != nil {
			return fmt.Errorf("reply to %v: %w", m.Request, err)
		}
	}
}

// hasReply says whether a request is answered whatever REPLY_ACK says.
func hasReply(r request) bool {
	switch r {
	case reqGetFeatures, reqGetProtocolFeatures, reqGetQueueNum, reqGetVringBase, reqGetConfig:
		return true
	}
	return false
}

// rejectedError is a request the server refused while the connection
// stays usable (a config access outside the device's config space): the
// front end hears about it through REPLY_ACK or an empty reply.
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// describe renders a message's payload for tracing.
func (m *message) describe() string {
	switch m.Request {
	case reqSetFeatures, reqSetProtocolFeatures:
		return fmt.Sprintf("value=%#x", m.U64)
	case reqSetMemTable:
		s := fmt.Sprintf("%d regions", len(m.Regions))
		for _, r := range m.Regions {
			s += fmt.Sprintf(" [gpa %#x size %#x uva %#x off %#x]", r.GuestAddr, r.Size, r.UserAddr, r.MmapOffset)
		}
		return s
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		return fmt.Sprintf("ring=%d num=%d", m.State.Index, m.State.Num)
	case reqSetVringAddr:
		return fmt.Sprintf("ring=%d desc=%#x avail=%#x used=%#x", m.Addr.Index, m.Addr.Desc, m.Addr.Avail, m.Addr.Used)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		return fmt.Sprintf("ring=%d nofd=%v", m.File.Index, m.File.NoFD)
	case reqGetConfig, reqSetConfig:
		return fmt.Sprintf("offset=%d size=%d", m.Config.Offset, len(m.Config.Data))
	}
	return ""
}
