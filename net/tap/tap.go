// Package tap creates Linux tap interfaces for guest network devices: a
// /dev/net/tun file descriptor that carries whole Ethernet frames (with a
// virtio-net header in front when asked), brought up and optionally
// enslaved to a bridge through netlink.
//
// Create opens the tap in the network namespace of the calling OS thread;
// callers that switch namespaces must lock the thread (runtime.LockOSThread)
// across the call. The returned Tap can then be used from any goroutine.
package tap

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VnetHdrLen is the size of the header in front of every frame of a tap
// created with VnetHdr: struct virtio_net_hdr_v1 (virtio 1.2, section
// 5.1.6), the layout a VERSION_1 virtio-net device uses, so a device can pass
// the header between guest memory and the tap unchanged.
const VnetHdrLen = 12

// DefaultNameTemplate is the name asked for when Options.Name is empty: the
// kernel replaces %d with the lowest free number.
const DefaultNameTemplate = "wisp%d"

const tunPath = "/dev/net/tun"

// Errors; test with errors.Is. Each error returned wraps one of these and
// says how to fix the problem.
var (
	// ErrNoTun: /dev/net/tun does not exist (tun module not loaded, or a
	// container without the device).
	ErrNoTun = errors.New("tap: /dev/net/tun unavailable")
	// ErrPermission: the caller may not create taps (needs root or
	// CAP_NET_ADMIN) or may not attach to a persistent tap owned by
	// someone else.
	ErrPermission = errors.New("tap: permission denied")
	// ErrBadName: the interface name is too long or has characters Linux
	// refuses.
	ErrBadName = errors.New("tap: invalid interface name")
	// ErrNameTaken: an interface of that name exists and is not a tap, or
	// is a tap another process has open.
	ErrNameTaken = errors.New("tap: interface name taken")
	// ErrNoBridge: Options.Bridge names no interface, or one that is not a
	// bridge.
	ErrNoBridge = errors.New("tap: no such bridge")
)

// Options says which tap to create.
type Options struct {
	// Name is the interface name. Empty picks a free "wisp%d". A name with
	// "%d" is a template the kernel completes. The name of an existing
	// persistent tap (made with "ip tuntap add mode tap") attaches to it.
	Name string
	// Bridge, if set, is the bridge the tap becomes a port of. It must
	// exist already.
	Bridge string
	// VnetHdr puts a VnetHdrLen-byte virtio_net_hdr_v1 in front of every
	// frame read and written, which carries checksum and segmentation
	// offload information (see SetOffload).
	VnetHdr bool
	// MTU, if non-zero, is set on the interface.
	MTU int
}

// Tap is an open tap interface. Its descriptor is non-blocking.
type Tap struct {
	fd      int
	name    string
	index   int
	vnetHdr bool
	// attached: the tap existed (a persistent tap the user made) and is
	// left in place on Close; otherwise wisp created it and deletes it.
	attached bool
	nl       *netlink.Handle // bound to the namespace the tap lives in

	closeOnce sync.Once
	closeErr  error
}

// Create opens (creating if needed) a tap interface, brings it up, sets its
// MTU and bridge as asked. A tap wisp creates is not persistent: it vanishes
// when Close deletes it or the process dies.
func Create(o Options) (*Tap, error) {
	name := o.Name
	if name == "" {
		name = DefaultNameTemplate
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	if o.Bridge != "" {
		if err := checkName(o.Bridge); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	if o.MTU < 0 {
		return nil, fmt.Errorf("tap %s: MTU %d is negative", name, o.MTU)
	}

	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tap %s: netlink socket: %w", name, err)
	}
	t := &Tap{fd: -1, name: name, vnetHdr: o.VnetHdr, nl: nl}
	if err := t.open(o); err != nil {
		t.abort()
		return nil, err
	}
	return t, nil
}

func (t *Tap) open(o Options) error {
	if !strings.Contains(t.name, "%") {
		existing, err := t.nl.LinkByName(t.name)
		switch {
		case err == nil:
			if tt, ok := existing.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
				return fmt.Errorf("tap %s: an interface of that name exists and is a %s, not a tap: pick another name: %w",
					t.name, existing.Type(), ErrNameTaken)
			}
			t.attached = true
		case !isNotFound(err):
			return fmt.Errorf("tap %s: look up interface: %w", t.name, err)
		}
	}

	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return openError(err)
	}
	t.fd = fd

	ifr, err := unix.NewIfreq(t.name)
	if err != nil {
		return fmt.Errorf("tap %s: %w: %w", t.name, ErrBadName, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if o.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return setIffError(t.name, t.attached, err)
	}
	t.name = ifr.Name()

	if o.VnetHdr {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
			return fmt.Errorf("tap %s: ioctl TUNSETVNETHDRSZ %d: %w", t.name, VnetHdrLen, err)
		}
		// No offloads until a guest negotiates them: a persistent tap may
		// keep flags from its previous user.
		if err := t.SetOffload(0); err != nil {
			return err
		}
	}

	link, err := t.nl.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("tap %s: look up the new interface: %w", t.name, err)
	}
	t.index = link.Attrs().Index

	if o.MTU != 0 {
		if err := t.nl.LinkSetMTU(link, o.MTU); err != nil {
			return fmt.Errorf("tap %s: set MTU %d: %w", t.name, o.MTU, err)
		}
	}
	if o.Bridge != "" {
		if err := t.attachBridge(link, o.Bridge); err != nil {
			return err
		}
	}
	if err := t.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("tap %s: set link up: %w", t.name, err)
	}
	return nil
}

func (t *Tap) attachBridge(link netlink.Link, bridge string) error {
	br, err := t.nl.LinkByName(bridge)
	if isNotFound(err) {
		return fmt.Errorf("tap %s: bridge %q does not exist: %w (create it: ip link add %s type bridge && ip link set %s up)",
			t.name, bridge, ErrNoBridge, bridge, bridge)
	}
	if err != nil {
		return fmt.Errorf("tap %s: look up bridge %q: %w", t.name, bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("tap %s: %q is a %s, not a bridge: %w", t.name, bridge, br.Type(), ErrNoBridge)
	}
	if err := t.nl.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("tap %s: attach to bridge %q: %w", t.name, bridge, err)
	}
	return nil
}

// abort undoes a partial Create.
func (t *Tap) abort() {
	_ = t.Close()
}

// Name is the interface name the kernel gave the tap.
func (t *Tap) Name() string { return t.name }

// Index is the interface index.
func (t *Tap) Index() int { return t.index }

// Fd is the non-blocking tap descriptor, for polling. Reads and writes
// should go through the Tap's methods.
func (t *Tap) Fd() int { return t.fd }

// HasVnetHdr reports whether frames carry a VnetHdrLen-byte virtio-net
// header.
func (t *Tap) HasVnetHdr() bool { return t.vnetHdr }

// Read reads one frame (header included when HasVnetHdr). It returns
// unix.EAGAIN when no frame is queued. A p shorter than the frame gets its
// beginning; the rest is lost.
func (t *Tap) Read(p []byte) (int, error) {
	return t.ReadFrame([][]byte{p})
}

// ReadFrame reads one frame scattered over bufs; like Read.
func (t *Tap) ReadFrame(bufs [][]byte) (int, error) {
	for {
		n, err := unix.Readv(t.fd, bufs)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, unix.EAGAIN
		}
		return 0, fmt.Errorf("tap %s: read: %w", t.name, err)
	}
}

// Write writes one frame (header included when HasVnetHdr).
func (t *Tap) Write(p []byte) (int, error) {
	if err := t.WriteFrame([][]byte{p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteFrame writes one frame gathered from bufs with a single writev, so
// guest memory goes to the kernel without a copy. The kernel takes or drops
// a tap frame whole; it returns unix.EAGAIN only if the tap's send buffer
// limit (TUNSETSNDBUF) is reached.
func (t *Tap) WriteFrame(bufs [][]byte) error {
	for {
		_, err := unix.Writev(t.fd, bufs)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return unix.EAGAIN
		}
		return fmt.Errorf("tap %s: write: %w", t.name, err)
	}
}

// SetOffload tells the kernel which offloads the reader of this tap handles
// (TUNSETOFFLOAD): flags are unix.TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
// TUN_F_TSO_ECN, TUN_F_UFO, ... Frames read then may carry partial
// checksums and be larger than the MTU (GSO) as the header describes;
// without a flag the kernel finishes that work before handing frames over.
// The segmentation flags need TUN_F_CSUM. Only meaningful with VnetHdr.
func (t *Tap) SetOffload(flags uint) error {
	if err := unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, int(flags)); err != nil {
		return fmt.Errorf("tap %s: ioctl TUNSETOFFLOAD %#x: %w", t.name, flags, err)
	}
	return nil
}

// Close closes the descriptor. A tap that Create made is deleted first
// (deleting by index, while the descriptor still pins the interface, so a
// newer interface that reused the name is never hit). A persistent tap the
// user named is left in place, as it was given, for them to reuse or
// delete.
func (t *Tap) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		if t.fd >= 0 && t.index > 0 && !t.attached {
			err := t.nl.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: t.index}})
			if err != nil && !errors.Is(err, unix.ENODEV) && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("tap %s: delete interface: %w", t.name, err))
			}
		}
		if t.fd >= 0 {
			if err := unix.Close(t.fd); err != nil {
				errs = append(errs, fmt.Errorf("tap %s: close: %w", t.name, err))
			}
		}
		t.nl.Close()
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// checkName applies the kernel's rules for interface names
// (dev_valid_name) so a bad name fails with a clear error, not EINVAL.
func checkName(name string) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q is %d bytes, Linux allows at most %d: %w",
			name, len(name), unix.IFNAMSIZ-1, ErrBadName)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("interface name %q: %w", name, ErrBadName)
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return fmt.Errorf("interface name %q: character %q not allowed: %w", name, r, ErrBadName)
		}
	}
	if n := strings.Count(name, "%"); n > 1 || (n == 1 && !strings.Contains(name, "%d")) {
		return fmt.Errorf("interface name %q: only one %%d may stand for a number: %w", name, ErrBadName)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// openError explains why /dev/net/tun could not be opened, with the fix.
func openError(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("open %s: %w: %w (load the tun module: modprobe tun; in a container, pass the device: --device /dev/net/tun)",
			tunPath, ErrNoTun, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("open %s: %w: %w (tap networking needs root or CAP_NET_ADMIN; without them use user-mode networking)",
			tunPath, ErrPermission, err)
	}
	return fmt.Errorf("open %s: %w", tunPath, err)
}

// setIffError explains a failed TUNSETIFF.
func setIffError(name string, attached bool, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		if attached {
			return fmt.Errorf("tap %s: ioctl TUNSETIFF: %w: %w (the persistent tap belongs to another user: recreate it with ip tuntap add %s mode tap user $USER)",
				name, ErrPermission, err, name)
		}
		return fmt.Errorf("tap %s: ioctl TUNSETIFF: %w: %w (tap networking needs root or CAP_NET_ADMIN; without them use user-mode networking)",
			name, ErrPermission, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("tap %s: ioctl TUNSETIFF: %w: %w (another process has this tap open: pick another name)",
			name, ErrNameTaken, err)
	case errors.Is(err, unix.EINVAL) && attached:
		return fmt.Errorf("tap %s: ioctl TUNSETIFF: %w: %w (the existing tap was made with incompatible flags, e.g. multi-queue: pick another name)",
			name, ErrNameTaken, err)
	}
	return fmt.Errorf("tap %s: ioctl TUNSETIFF: %w", name, err)
}
