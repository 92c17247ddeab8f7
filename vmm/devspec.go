package vmm

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio/blk"
)

// Disk is one virtio-blk disk (--disk). The first disk is /dev/vda.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial is what the guest reads as the disk's ID (GET_ID): it shows
	// up as /dev/disk/by-id/virtio-SERIAL. At most MaxSerial bytes.
	Serial string
	// Format is "raw" or "qcow2"; empty means by the file name (.qcow2 is
	// qcow2, anything else raw). It is never guessed from the file's
	// contents: a guest could write a qcow2 header into a raw disk (see
	// DiskFormat). A writable qcow2 disk keeps the guest's writes in a
	// throw-away overlay; the image itself is never written.
	Format string
	// Backing allows a qcow2 disk's backing files (backing=on): regular
	// files in the image's directory, or under BackingDir when set.
	Backing bool
	// BackingDir is where backing files may live (backing-dir=DIR); it
	// implies Backing.
	BackingDir string
}

// Disk formats.
const (
	FormatRaw   = blk.FormatRaw
	FormatQcow2 = blk.FormatQcow2
)

// DiskFormat says how the disk at path is read: declared when the user
// gave a format ("" when not), else by its name (.qcow2 → qcow2, anything
// else → raw). The file's first bytes only check that decision: a file
// that starts with the qcow2 magic but is raw by its name, or is qcow2 by
// name or declaration without the magic, is refused in one line naming the
// file and the fix. A declared raw disk is raw whatever it holds, so a
// raw disk whose guest wrote a qcow2 header still boots, as raw. Errors
// match ErrInvalidConfig and blk.ErrFormatMismatch or blk.ErrFormat.
func DiskFormat(path, declared string) (string, error) {
	f, err := blk.ResolveFormat(path, declared)
	if err != nil {
		return "", &diskError{err: err}
	}
	return f, nil
}

// diskError is a disk's configuration error that keeps its cause for
// errors.Is.
type diskError struct{ err error }

func (e *diskError) Error() string        { return e.err.Error() }
func (e *diskError) Unwrap() error        { return e.err }
func (e *diskError) Is(target error) bool { return target == ErrInvalidConfig }

// MaxSerial is the length of virtio-blk's ID field.
const MaxSerial = 20

// NetMode says how a virtio-net device reaches the world.
type NetMode string

// Network modes.
const (
	// NetTap is a tap device on the host (needs root or CAP_NET_ADMIN).
	NetTap NetMode = "tap"
	// NetUser is a user-mode network stack inside wisp: DHCP, DNS and
	// outbound connections through the host's sockets, no privileges.
	NetUser NetMode = "user"
)

// Net is one virtio-net device (--net).
type Net struct {
	Mode NetMode
	// Tap is the tap's name (NetTap); empty lets the kernel pick one.
	Tap string
	// Bridge, if set, is the host bridge the tap joins (NetTap).
	Bridge string
	// MAC is the guest's address; WithDefaults fills a random locally
	// administered one.
	MAC net.HardwareAddr
	// Forwards are host ports forwarded to the guest (NetUser).
	Forwards []Forward
}

// Forward is a user-mode network port forward: connections to
// HostAddr:HostPort on the host reach GuestPort in the guest.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostAddr  string // empty means 127.0.0.1
	HostPort  uint16
	GuestPort uint16
}

func (f Forward) String() string {
	addr := f.HostAddr
	if addr == "" {
		addr = "127.0.0.1"
	}
	return fmt.Sprintf("%s:%s:%d-:%d", f.Proto, addr, f.HostPort, f.GuestPort)
}

// ParseDisk reads --disk PATH[,ro][,serial=ID][,format=raw|qcow2][,backing=on|off][,backing-dir=DIR].
// A path containing a comma cannot be given (rename it or use a symlink).
func ParseDisk(s string) (Disk, error) {
	parts := strings.Split(s, ",")
	d := Disk{Path: parts[0]}
	backingOff := false
	if d.Path == "" {
		return Disk{}, invalid("--disk %q: give the image path first, e.g. --disk root.img,ro", s)
	}
	for _, opt := range parts[1:] {
		key, val, hasVal := strings.Cut(opt, "=")
		switch {
		case key == "ro" && !hasVal:
			d.ReadOnly = true
		case key == "rw" && !hasVal:
			d.ReadOnly = false
		case key == "format" && (val == FormatRaw || val == FormatQcow2):
			d.Format = val
		case key == "format":
			return Disk{}, invalid("--disk %s: format %q: want raw or qcow2", s, val)
		case key == "backing" && (val == "on" || val == "off"):
			d.Backing, backingOff = val == "on", val == "off"
		case key == "backing":
			return Disk{}, invalid("--disk %s: backing %q: want backing=on or backing=off", s, val)
		case key == "backing-dir" && val != "":
			d.BackingDir = val
		case key == "serial" && hasVal:
			if err := checkSerial(val); err != nil {
				return Disk{}, invalid("--disk %s: %v", s, err)
			}
			d.Serial = val
		default:
			return Disk{}, invalid("--disk %s: unknown option %q (want ro, serial=ID, format=raw|qcow2, backing=on or backing-dir=DIR)", s, opt)
		}
	}
	if d.BackingDir != "" && backingOff {
		return Disk{}, invalid("--disk %s: backing-dir= allows backing files, backing=off forbids them: drop one", s)
	}
	if d.BackingDir != "" {
		d.Backing = true
	}
	return d, nil
}

func checkSerial(v string) error {
	if v == "" || len(v) > MaxSerial {
		return fmt.Errorf("serial %q: want 1 to %d characters", v, MaxSerial)
	}
	for _, r := range v {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("serial %q: use printable ASCII without spaces", v)
		}
	}
	return nil
}

// ParseNet reads --net tap[:NAME][,mac=MAC][,bridge=BR] or
// --net user[,mac=MAC][,hostfwd=tcp:[ADDR:]HOSTPORT-:GUESTPORT]...
func ParseNet(s string) (Net, error) {
	parts := strings.Split(s, ",")
	mode, name, hasName := strings.Cut(parts[0], ":")
	var n Net
	switch NetMode(mode) {
	case NetTap:
		n.Mode = NetTap
		if hasName {
			if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
				return Net{}, invalid("--net %s: tap name %q: want 1 to 15 characters without / or spaces", s, name)
			}
			n.Tap = name
		}
	case NetUser:
		if hasName {
			return Net{}, invalid("--net %s: user takes no name; did you mean tap:%s?", s, name)
		}
		n.Mode = NetUser
	default:
		return Net{}, invalid("--net %s: unknown mode %q (want tap[:NAME] or user)", s, mode)
	}
	for _, opt := range parts[1:] {
		key, val, _ := strings.Cut(opt, "=")
		switch {
		case key == "mac":
			mac, err := net.ParseMAC(val)
			if err != nil || len(mac) != 6 {
				return Net{}, invalid("--net %s: mac %q: want six hex bytes like 52:54:00:12:34:56", s, val)
			}
			if mac[0]&1 != 0 {
				return Net{}, invalid("--net %s: mac %s is a multicast address; use one whose first byte is even", s, val)
			}
			n.MAC = mac
		case key == "bridge" && n.Mode == NetTap:
			if val == "" || len(val) > 15 {
				return Net{}, invalid("--net %s: bridge %q: want 1 to 15 characters", s, val)
			}
			n.Bridge = val
		case key == "hostfwd" && n.Mode == NetUser:
			f, err := ParseForward(val)
			if err != nil {
				return Net{}, invalid("--net %s: %v", s, err)
			}
			n.Forwards = append(n.Forwards, f)
		default:
			return Net{}, invalid("--net %s: unknown option %q (tap takes mac= and bridge=, user takes mac= and hostfwd=)", s, opt)
		}
	}
	return n, nil
}

// ParseForward reads QEMU's hostfwd syntax: tcp:8080-:80,
// tcp:127.0.0.1:8080-:80 or udp::5353-:53.
func ParseForward(s string) (Forward, error) {
	hostPart, guestPart, ok := strings.Cut(s, "-")
	if !ok {
		return Forward{}, fmt.Errorf("hostfwd %q: want PROTO:[ADDR:]HOSTPORT-:GUESTPORT, e.g. tcp:8080-:80", s)
	}
	fields := strings.Split(hostPart, ":")
	var f Forward
	switch len(fields) {
	case 2:
		f.Proto = fields[0]
		fields = []string{fields[0], "", fields[1]}
	case 3:
		f.Proto = fields[0]
	default:
		return Forward{}, fmt.Errorf("hostfwd %q: want PROTO:[ADDR:]HOSTPORT-:GUESTPORT, e.g. tcp:8080-:80", s)
	}
	if f.Proto == "" {
		f.Proto = "tcp"
	}
	if f.Proto != "tcp" && f.Proto != "udp" {
		return Forward{}, fmt.Errorf("hostfwd %q: protocol %q: want tcp or udp", s, f.Proto)
	}
	if fields[1] != "" && net.ParseIP(fields[1]) == nil {
		return Forward{}, fmt.Errorf("hostfwd %q: host address %q is not an IP address", s, fields[1])
	}
	f.HostAddr = fields[1]
	hp, err := parsePort(fields[2])
	if err != nil {
		return Forward{}, fmt.Errorf("hostfwd %q: host port: %w", s, err)
	}
	gp, err := parsePort(strings.TrimPrefix(guestPart, ":"))
	if err != nil || !strings.HasPrefix(guestPart, ":") && strings.Contains(guestPart, ":") {
		return Forward{}, fmt.Errorf("hostfwd %q: guest port: want :PORT after the dash", s)
	}
	if strings.Count(guestPart, ":") > 1 {
		return Forward{}, fmt.Errorf("hostfwd %q: the guest address is fixed; give only :PORT after the dash", s)
	}
	f.HostPort, f.GuestPort = hp, gp
	return f, nil
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(p), nil
}

// RandomMAC returns a random locally administered unicast address.
func RandomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = mac[0]&^1 | 2
	return mac, nil
}

// validateDevices checks the disks and nets of c.
func (c Config) validateDevices() error {
	seen := map[string]string{}
	for i, d := range c.Disks {
		field := fmt.Sprintf("Disks[%d]", i)
		if err := readableFile(field, d.Path); err != nil {
			return err
		}
		if !d.ReadOnly && unix.Access(d.Path, unix.W_OK) != nil {
			return fieldError(field, d.Path, "not writable: fix its permissions or make the disk read-only (ro)")
		}
		abs, err := filepath.Abs(d.Path)
		if err != nil {
			return &FieldError{Field: field, Value: d.Path, Msg: err.Error(), Err: err}
		}
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		if first, ok := seen[abs]; ok {
			return fieldError(field, d.Path, "given twice (also as %s): a VM must not open one image twice", first)
		}
		seen[abs] = d.Path
		if _, err := DiskFormat(d.Path, d.Format); err != nil {
			// The cause names the file already.
			return &FieldError{Field: field, Msg: err.Error(), Err: err}
		}
		if d.BackingDir != "" {
			if st, err := os.Stat(d.BackingDir); err != nil || !st.IsDir() {
				return fieldError(field, d.Path, "backing-dir %s is not a directory: name the directory that holds the backing files", d.BackingDir)
			}
		}
		if d.Serial != "" {
			if err := checkSerial(d.Serial); err != nil {
				return &FieldError{Field: field, Value: d.Path, Msg: err.Error(), Err: err}
			}
		}
	}
	taps := map[string]bool{}
	for i, n := range c.Nets {
		field := fmt.Sprintf("Nets[%d]", i)
		switch n.Mode {
		case NetTap:
			if n.Tap != "" && taps[n.Tap] {
				return fieldError(field, "", "tap %s is given twice: give each NIC its own tap, or leave the name empty", n.Tap)
			}
			taps[n.Tap] = n.Tap != ""
		case NetUser:
		default:
			return fieldError(field, "", "unknown mode %q: want tap or user", n.Mode)
		}
		if len(n.MAC) != 6 {
			return fieldError(field, "", "no MAC address of 6 bytes: give one, or let WithDefaults pick a random one")
		}
	}
	return nil
}
