// Package memory is guest RAM: one shared memfd mapping split into regions
// around the PCI hole below 4 GiB, with bounds-checked accessors. Everything
// that reads or writes guest memory on the host (loaders, virtqueues, device
// back ends) goes through these accessors, so an address or length a guest
// hands over is checked in one place.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Layout constants for x86-64 guests.
const (
	// HoleStart is where the 32-bit PCI/MMIO hole begins; RAM beyond it
	// continues at HighStart. 3 GiB leaves room for ECAM, the IOAPIC,
	// the LAPIC and 32-bit BARs.
	HoleStart uint64 = 3 << 30
	HighStart uint64 = 4 << 30
	// MinSize is the smallest guest wisp builds: room for the boot data,
	// a kernel and a stack.
	MinSize uint64 = 2 << 20
	// MaxSize bounds a guest to what a 48-bit host address space can map
	// comfortably next to wisp itself.
	MaxSize uint64 = 1 << 40
)

// Errors; test with errors.Is.
var (
	ErrOutOfRange = errors.New("guest address range outside guest memory")
	ErrBadSize    = errors.New("invalid guest memory size")
)

// Region is one contiguous stretch of guest-physical RAM and where it sits
// inside the backing mapping.
type Region struct {
	GuestAddr uint64 // guest-physical start
	Size      uint64
	Offset    uint64 // offset in the memfd and in Host()
}

// End is the first guest address past the region.
func (r Region) End() uint64 { return r.GuestAddr + r.Size }

// Memory is a guest's RAM.
type Memory struct {
	fd      int
	host    []byte
	regions []Region
}

// New creates size bytes of guest RAM backed by a memfd. Pages are neither
// prefaulted nor zeroed by hand: the kernel hands out zero pages on first
// touch, so RSS grows only with what the guest uses. The memfd can be passed
// to another process (QEMU, a vhost-user back end) to share the same RAM.
func New(size uint64) (*Memory, error) {
	if size < MinSize || size > MaxSize || size%uint64(unix.Getpagesize()) != 0 {
		return nil, fmt.Errorf("guest memory of %d bytes (want %d..%d, page aligned): %w", size, MinSize, MaxSize, ErrBadSize)
	}
	fd, err := unix.MemfdCreate("wisp-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("size guest memory memfd to %d bytes: %w", size, err)
	}
	host, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap %d bytes of guest memory: %w", size, err)
	}
	// Guest RAM would bloat core dumps and is never useful in them.
	_ = unix.Madvise(host, unix.MADV_DONTDUMP)
	return &Memory{fd: fd, host: host, regions: Layout(size)}, nil
}

// Layout splits size bytes of RAM around the PCI hole.
func Layout(size uint64) []Region {
	if size <= HoleStart {
		return []Region{{GuestAddr: 0, Size: size, Offset: 0}}
	}
	return []Region{
		{GuestAddr: 0, Size: HoleStart, Offset: 0},
		{GuestAddr: HighStart, Size: size - HoleStart, Offset: HoleStart},
	}
}

// Close unmaps the memory and closes the memfd.
func (m *Memory) Close() error {
	var errs []error
	if m.host != nil {
		errs = append(errs, unix.Munmap(m.host))
		m.host = nil
	}
	if m.fd >= 0 {
		errs = append(errs, unix.Close(m.fd))
		m.fd = -1
	}
	return errors.Join(errs...)
}

// Fd is the memfd backing the RAM, for sharing with another process.
func (m *Memory) Fd() int { return m.fd }

// Size is the amount of RAM in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.host)) }

// Regions lists the guest-physical RAM regions in address order.
func (m *Memory) Regions() []Region { return append([]Region(nil), m.regions...) }

// Host is the whole backing mapping, for registering with KVM.
func (m *Memory) Host() []byte { return m.host }

// Slice returns the host view of [gpa, gpa+n). The range must lie inside one
// region; the returned slice aliases guest memory, so the guest can change it
// under the caller (copy before validating what you read).
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GuestAddr && gpa < r.End() {
			if n > r.End()-gpa {
				break
			}
			off := r.Offset + (gpa - r.GuestAddr)
			return m.host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("[%#x, +%#x): %w", gpa, n, ErrOutOfRange)
}

// ReadAt copies len(p) bytes at gpa into p.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at gpa.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Uint16 reads a little-endian uint16 at gpa.
func (m *Memory) Uint16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian uint32 at gpa.
func (m *Memory) Uint32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian uint64 at gpa.
func (m *Memory) Uint64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian uint16 at gpa.
func (m *Memory) PutUint16(gpa uint64, v uint16) error {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian uint32 at gpa.
func (m *Memory) PutUint32(gpa uint64, v uint32) error {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian uint64 at gpa.
func (m *Memory) PutUint64(gpa uint64, v uint64) error {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}
