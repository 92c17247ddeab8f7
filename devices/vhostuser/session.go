package vhostuser

import (
	"errors"
	"fmt"
	"sync"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// session is the state of one front-end connection. It is used only by the
// goroutine reading that connection; the device's workers touch nothing of
// it but the call eventfds (through callFD) and the rings' kick eventfds
// and memory, which the session replaces only while the device is reset.
type session struct {
	srv        *Server
	dev        virtio.Device
	queueSizes []uint16

	features uint64 // acked by SET_FEATURES, with FeatureProtocolFeatures
	protocol uint64 // acked by SET_PROTOCOL_FEATURES
	mem      *guestMemory
	rings    []*ring
	active   bool // dev is activated with the rings that have a queue
}

// ring is one virtqueue as the front end configured it.
type ring struct {
	size    uint16 // SET_VRING_NUM; 0 until set
	addr    vringAddr
	addrSet bool
	// base is the next available index: set by SET_VRING_BASE, kept from
	// the queue whenever the device is reset, reported by GET_VRING_BASE.
	base    uint16
	enabled bool
	kick    *virtio.EventFD // nil: the ring is stopped
	call    callFD
	errFD   *virtio.EventFD
	// queue is the ring's virtio.Queue while the device runs it.
	queue *virtio.Queue
	// broken says why the ring could not start; it is cleared when the
	// front end configures the ring again.
	broken error
}

// callFD is a ring's interrupt: the call eventfd QEMU gave, which it may
// replace while the ring runs (it switches between its own and the
// guest's notifier when the guest masks the vector).
type callFD struct {
	mu sync.Mutex
	fd *virtio.EventFD
}

// Trigger implements virtio.Interrupt.
func (c *callFD) Trigger() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd == nil {
		return nil
	}
	return c.fd.Signal()
}

// set replaces the eventfd (nil: no interrupts) and closes the old one,
// which no Trigger can be using any more.
func (c *callFD) set(fd *virtio.EventFD) {
	c.mu.Lock()
	old := c.fd
	c.fd = fd
	c.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

func newSession(s *Server) *session {
	sizes := s.dev.QueueSizes()
	n := min(len(sizes), maxRings)
	sess := &session{srv: s, dev: s.dev, queueSizes: sizes[:n:n], rings: make([]*ring, n)}
	for i := range sess.rings {
		sess.rings[i] = &ring{}
	}
	return sess
}

// handle carries out one message and returns the payload of its reply, if
// the request has one. It owns fds: each is adopted or closed. An error is
// fatal to the connection unless it is a *rejectedError.
func (s *session) handle(m *message, fds []int) (reply []byte, err error) {
	defer func() { closeFDs(fds) }()
	take := func() int { fd := fds[0]; fds = fds[1:]; return fd }

	switch m.Request {
	case reqGetFeatures:
		return encodeU64(s.dev.Features() | FeatureProtocolFeatures), nil

	case reqSetFeatures:
		offered := s.dev.Features() | FeatureProtocolFeatures
		if extra := m.U64 &^ offered; extra != 0 {
			return nil, fmt.Errorf("%v: features %#x were never offered: %w", m.Request, extra, ErrProtocol)
		}
		if m.U64 != s.features {
			// The queues the device runs were built for the old features.
			if err := s.deactivate(); err != nil {
				return nil, err
			}
			s.features = m.U64
		}
		return nil, nil

	case reqGetProtocolFeatures:
		return encodeU64(offeredProtocol(s.dev.Type())), nil

	case reqSetProtocolFeatures:
		if extra := m.U64 &^ offeredProtocol(s.dev.Type()); extra != 0 {
			return nil, fmt.Errorf("%v: protocol features %#x were never offered: %w", m.Request, extra, ErrProtocol)
		}
		s.protocol = m.U64
		return nil, nil

	case reqGetQueueNum:
		return encodeU64(s.queueNum()), nil

	case reqSetOwner:
		return nil, nil

	case reqResetOwner, reqResetDevice:
		// QEMU sends RESET_DEVICE (or, without that protocol feature, the
		// deprecated RESET_OWNER) when the guest resets the device: every
		// ring goes back to its initial state. The memory table stays.
		return nil, s.resetRings()

	case reqSetMemTable:
		if err := s.deactivate(); err != nil {
			return nil, err
		}
		mem, err := mapMemory(m.Regions, fds)
		fds = nil // mapMemory closed them
		if err != nil {
			return nil, fmt.Errorf("%v: %w", m.Request, err)
		}
		old := s.mem
		s.mem = mem
		if old != nil {
			if err := old.unmap(); err != nil {
				return nil, fmt.Errorf("%v: old table: %w", m.Request, err)
			}
		}
		return nil, nil

	case reqGetConfig:
		data := make([]byte, len(m.Config.Data))
		if err := s.dev.ReadConfig(uint64(m.Config.Offset), data); err != nil {
			// An empty reply tells QEMU the read failed.
			return nil, &rejectedError{fmt.Errorf("%v: %w", m.Request, err)}
		}
		return encodeConfig(configAccess{Offset: m.Config.Offset, Flags: m.Config.Flags, Data: data}), nil

	case reqSetConfig:
		if err := s.dev.WriteConfig(uint64(m.Config.Offset), m.Config.Data); err != nil {
			return nil, &rejectedError{fmt.Errorf("%v: %w", m.Request, err)}
		}
		return nil, nil

	}

	// Everything else addresses one ring.
	idx := m.ringIndex()
	if idx >= len(s.rings) {
		return nil, fmt.Errorf("%v: ring %d, but the device has %d: %w", m.Request, idx, len(s.rings), ErrProtocol)
	}
	r := s.rings[idx]

	switch m.Request {
	case reqSetVringNum:
		n := m.State.Num
		if n == 0 || n&(n-1) != 0 || n > uint32(s.queueSizes[idx]) || n > virtio.MaxQueueSize {
			return nil, fmt.Errorf("%v: ring %d: size %d, want a power of two up to %d: %w", m.Request, idx, n, s.queueSizes[idx], ErrProtocol)
		}
		if err := s.reconfigure(r); err != nil {
			return nil, err
		}
		r.size = uint16(n)

	case reqSetVringAddr:
		if err := s.reconfigure(r); err != nil {
			return nil, err
		}
		r.addr, r.addrSet = m.Addr, true

	case reqSetVringBase:
		// A split ring's index is 16 bits; packed rings were never offered.
		if m.State.Num > 0xffff {
			return nil, fmt.Errorf("%v: ring %d: base %d: %w", m.Request, idx, m.State.Num, ErrProtocol)
		}
		if err := s.reconfigure(r); err != nil {
			return nil, err
		}
		r.base = uint16(m.State.Num)

	case reqGetVringBase:
		// Stop the ring: the device stops serving it (it is re-activated
		// with the rings still running once the reply is out) and the
		// front end learns where to resume.
		if err := s.reconfigure(r); err != nil {
			return nil, err
		}
		if r.kick != nil {
			_ = r.kick.Close()
			r.kick = nil
		}
		return encodeVringState(vringState{Index: uint32(idx), Num: uint32(r.base)}), nil

	case reqSetVringKick:
		if err := s.reconfigure(r); err != nil {
			return nil, err
		}
		if r.kick != nil {
			_ = r.kick.Close()
			r.kick = nil
		}
		if m.File.NoFD {
			// Polling the ring instead (no kick eventfd) is not supported:
			// the ring stays stopped.
			return nil, &rejectedError{fmt.Errorf("%v: ring %d: no eventfd; polled rings are not supported", m.Request, idx)}
		}
		raw := take()
		kick, err := virtio.AdoptEventFD(raw)
		if err != nil {
			closeFDs([]int{raw})
			return nil, fmt.Errorf("%v: ring %d: %w", m.Request, idx, err)
		}
		r.kick = kick

	case reqSetVringCall, reqSetVringErr:
		var fd *virtio.EventFD
		if !m.File.NoFD {
			raw := take()
			if fd, err = virtio.AdoptEventFD(raw); err != nil {
				closeFDs([]int{raw})
				return nil, fmt.Errorf("%v: ring %d: %w", m.Request, idx, err)
			}
		}
		if m.Request == reqSetVringCall {
			r.call.set(fd)
			break
		}
		// The error eventfd is kept (and closed) but not used: a broken
		// ring is reported through Options.OnError.
		if r.errFD != nil {
			_ = r.errFD.Close()
		}
		r.errFD = fd

	case reqSetVringEnable:
		if m.State.Num > 1 {
			return nil, fmt.Errorf("%v: ring %d: value %d, want 0 or 1: %w", m.Request, idx, m.State.Num, ErrProtocol)
		}
		on := m.State.Num == 1
		if !on && r.queue != nil {
			if err := s.deactivate(); err != nil {
				return nil, err
			}
		}
		r.enabled = on

	default:
		// decodeMessage lets through only the requests handled here.
		return nil, fmt.Errorf("%v: unexpected: %w", m.Request, ErrProtocol)
	}
	return nil, nil
}

// ringIndex is the ring a per-ring request names.
func (m *message) ringIndex() int {
	switch m.Request {
	case reqSetVringAddr:
		return int(m.Addr.Index)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		return int(m.File.Index)
	}
	return int(m.State.Index)
}

// queueNum answers GET_QUEUE_NUM. QEMU compares it with vhost-user-blk's
// num-queues, and for a net device with the number of queue pairs it
// asks for (the control queue is QEMU's own).
func (s *session) queueNum() uint64 {
	n := uint64(len(s.queueSizes))
	if s.dev.Type() == virtio.TypeNet {
		n /= 2
	}
	return max(n, 1)
}

// reconfigure prepares ring r for a change: the device stops running it
// (keeping its position) and a past failure to start it is forgotten.
func (s *session) reconfigure(r *ring) error {
	r.broken = nil
	if r.queue == nil {
		return nil
	}
	return s.deactivate()
}

// runnable says whether ring r can be served: started (it has a kick
// eventfd), fully configured, and enabled. Without protocol features
// every ring counts as enabled (vhost-user.rst, "Ring states").
func (s *session) runnable(r *ring) bool {
	enabled := r.enabled || s.features&FeatureProtocolFeatures == 0
	return r.kick != nil && r.size != 0 && r.addrSet && s.mem != nil && enabled && r.broken == nil
}

// reconcile (re-)activates the device with the runnable rings when they
// differ from the ones it runs. It is called after every message, so the
// device follows each ring as the front end starts and stops it.
//
// What QEMU 7.2 sends when the guest sets DRIVER_OK (traced by the
// booted tests of vmm/qemu/vhostdevs):
//
//   - vhost-user-blk and -rng: SET_FEATURES, SET_MEM_TABLE, then per
//     ring the guest set up NUM, BASE, ADDR, KICK, and last
//     SET_VRING_ENABLE 1 for every ring of the device, set up or not.
//     The device starts once, at the enable of the first ring; a ring the
//     guest left alone (a second blk queue of a one-CPU guest) never gets
//     a kick and stays out. On stop: SET_VRING_ENABLE 0 for every ring,
//     then GET_VRING_BASE per started ring.
//   - vhost-user netdev: SET_VRING_ENABLE 1 for receive and transmit
//     arrives long before the start (when the guest picks its queue
//     pairs); the start is then NUM, BASE, ADDR, KICK, CALL per ring, so
//     the device starts with the receive ring at its kick and again with
//     both at the transmit ring's. On stop: GET_VRING_BASE per ring.
func (s *session) reconcile() error {
	changed := false
	anyRunnable := false
	for _, r := range s.rings {
		run := s.runnable(r)
		anyRunnable = anyRunnable || run
		if run != (r.queue != nil) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := s.deactivate(); err != nil {
		return err
	}
	if !anyRunnable {
		return nil
	}
	features := s.features &^ FeatureProtocolFeatures
	a := virtio.Activation{Memory: s.mem, Features: features, Queues: make([]virtio.ActiveQueue, len(s.rings))}
	started := false
	for i, r := range s.rings {
		if !s.runnable(r) {
			continue
		}
		q, err := s.newQueue(r, features)
		if err != nil {
			// The guest's ring is unusable; the other rings still run.
			r.broken = fmt.Errorf("ring %d: %w", i, err)
			s.srv.report(fmt.Errorf("vhost-user %s: %w", s.srv.opts.Name, r.broken))
			continue
		}
		a.Queues[i] = virtio.ActiveQueue{Queue: q, Kick: r.kick, Interrupt: &r.call}
		r.queue = q
		started = true
	}
	if !started {
		return nil
	}
	if err := s.dev.Activate(a); err != nil {
		for _, r := range s.rings {
			r.queue = nil
		}
		// Not fatal: the front end may still change what makes the
		// device refuse (a ring it has yet to start); reconcile tries
		// again after the next change.
		s.srv.report(fmt.Errorf("vhost-user %s: activate %v device: %w", s.srv.opts.Name, s.dev.Type(), err))
		return nil
	}
	s.active = true
	return nil
}

// newQueue builds ring r's queue, translating its front-end addresses to
// guest-physical ones through the current memory table.
func (s *session) newQueue(r *ring, features uint64) (*virtio.Queue, error) {
	var cfg virtio.QueueConfig
	cfg.Size = r.size
	for _, t := range []struct {
		name string
		uva  uint64
		gpa  *uint64
	}{{"descriptor table", r.addr.Desc, &cfg.DescAddr}, {"available ring", r.addr.Avail, &cfg.AvailAddr}, {"used ring", r.addr.Used, &cfg.UsedAddr}} {
		gpa, err := s.mem.guestAddr(t.uva)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		*t.gpa = gpa
	}
	return virtio.NewQueue(s.mem, cfg, features, r.base)
}

// deactivate resets the device if it runs, keeping each running queue's
// position in its ring's base.
func (s *session) deactivate() error {
	if !s.active {
		return nil
	}
	s.active = false
	err := s.dev.Reset()
	for _, r := range s.rings {
		if r.queue != nil {
			r.base = r.queue.NextAvail()
			r.queue = nil
		}
	}
	if err != nil {
		return fmt.Errorf("reset %v device: %w", s.dev.Type(), err)
	}
	return nil
}

// resetRings stops the device and returns every ring to its initial
// state, closing its eventfds.
func (s *session) resetRings() error {
	err := s.deactivate()
	for i, r := range s.rings {
		if r.kick != nil {
			_ = r.kick.Close()
		}
		if r.errFD != nil {
			_ = r.errFD.Close()
		}
		r.call.set(nil)
		s.rings[i] = &ring{}
	}
	s.features = 0
	return err
}

// close ends the session: the device is reset and everything the front
// end sent is released.
func (s *session) close() error {
	err := s.resetRings()
	if s.mem != nil {
		err = errors.Join(err, s.mem.unmap())
		s.mem = nil
	}
	return err
}
