package vhostuser

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrOutOfRange: a guest-physical or front-end address lies outside every
// region of the memory table.
var ErrOutOfRange = errors.New("vhost-user: address outside guest memory")

// mappedRegion is one region of the memory table mapped into wisp.
type mappedRegion struct {
	memRegion
	mapping []byte // the whole mmap, from offset 0 of the descriptor
	data    []byte // the region itself: mapping[MmapOffset:][:Size]
}

// guestMemory is guest RAM as QEMU described it in SET_MEM_TABLE: up to
// maxRegions mappings of the descriptors it sent. It implements
// virtio.GuestMemory. Its mappings stay valid until unmap, which the
// session calls only after the device is reset, so no worker can touch
// them afterwards.
type guestMemory struct {
	regions []mappedRegion
}

// mapMemory maps every region's descriptor shared and read-write. It
// takes ownership of fds (one per region) and closes them: the mappings
// keep the memory alive. On error nothing stays mapped.
func mapMemory(regions []memRegion, fds []int) (_ *guestMemory, err error) {
	defer closeFDs(fds)
	if len(regions) != len(fds) {
		return nil, fmt.Errorf("%d regions with %d file descriptors: %w", len(regions), len(fds), ErrProtocol)
	}
	m := &guestMemory{}
	defer func() {
		if err != nil {
			m.unmap()
		}
	}()
	for i, r := range regions {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("region %d: %w", i, err)
		}
		length := r.MmapOffset + r.Size
		// A mapping beyond the end of the file would fault (SIGBUS) when
		// a device touches it: check the file is big enough.
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			return nil, fmt.Errorf("region %d: fstat fd %d: %w", i, fds[i], err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < length {
			return nil, fmt.Errorf("region %d: needs %#x bytes of its file, which has %#x: %w", i, length, st.Size, ErrProtocol)
		}
		mapping, err := unix.Mmap(fds[i], 0, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
		if err != nil {
			return nil, fmt.Errorf("region %d: mmap %#x bytes of fd %d: %w", i, length, fds[i], err)
		}
		// Guest RAM is useless in wisp's core dumps and would bloat them.
		_ = unix.Madvise(mapping, unix.MADV_DONTDUMP)
		m.regions = append(m.regions, mappedRegion{memRegion: r, mapping: mapping, data: mapping[r.MmapOffset:length:length]})
	}
	return m, nil
}

// Slice implements virtio.GuestMemory: [gpa, gpa+n) must lie inside one
// region.
func (m *guestMemory) Slice(gpa, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if gpa < r.GuestAddr || gpa-r.GuestAddr >= r.Size {
			continue
		}
		off := gpa - r.GuestAddr
		if n > r.Size-off {
			break
		}
		return r.data[off : off+n : off+n], nil
	}
	return nil, fmt.Errorf("guest range [%#x, +%#x): %w", gpa, n, ErrOutOfRange)
}

// guestAddr translates an address in the front end's address space (what
// SET_VRING_ADDR carries) to a guest-physical one.
func (m *guestMemory) guestAddr(uva uint64) (uint64, error) {
	for _, r := range m.regions {
		if uva >= r.UserAddr && uva-r.UserAddr < r.Size {
			return r.GuestAddr + (uva - r.UserAddr), nil
		}
	}
	return 0, fmt.Errorf("front-end address %#x: %w", uva, ErrOutOfRange)
}

// unmap releases every mapping; m must not be used afterwards.
func (m *guestMemory) unmap() error {
	var errs []error
	for _, r := range m.regions {
		if err := unix.Munmap(r.mapping); err != nil {
			errs = append(errs, fmt.Errorf("munmap region at %#x: %w", r.GuestAddr, err))
		}
	}
	m.regions = nil
	return errors.Join(errs...)
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}
