package blk

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// Request types (virtio 1.2, section 5.2.6).
const (
	typeIn          = 0
	typeOut         = 1
	typeFlush       = 4
	typeGetID       = 8
	typeDiscard     = 11
	typeWriteZeroes = 13
)

// Status values, the last byte of every request.
const (
	statusOK     = 0
	statusIOErr  = 1
	statusUnsupp = 2
)

const (
	headerSize = 16 // le32 type, le32 reserved, le64 sector
	// A discard or write-zeroes segment: le64 sector, le32 num_sectors,
	// le32 flags.
	zeroSegSize  = 16
	flagUnmap    = 1
	unknownFlags = ^uint32(flagUnmap)
	statusLen    = 1
)

// handle serves one request chain: a header and data the device reads,
// then data and one status byte it writes. The chain's buffers live in
// guest memory that the guest can change at any time, so every field is
// copied out once before it is checked and used.
func (d *Device) handle(c *virtio.Chain) (uint32, error) {
	writable := c.WritableLen()
	if writable < statusLen {
		return 0, fmt.Errorf("virtio-blk: request without room for a status byte: %w", virtio.ErrBadRequest)
	}
	dataIn := writable - statusLen // bytes the device may write before the status
	r := c.Reader()
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		setStatus(c, statusIOErr)
		return statusLen, fmt.Errorf("virtio-blk: request header of %d bytes, want %d: %w", c.ReadableLen(), headerSize, virtio.ErrBadRequest)
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])

	var filled uint64 // data bytes written before the status
	var status byte = statusOK
	var err error
	switch typ {
	case typeIn:
		filled, err = d.read(c, sector, dataIn)
	case typeOut:
		err = d.write(r, sector)
	case typeFlush:
		err = d.backend.Flush()
	case typeGetID:
		filled = min(dataIn, serialLen)
		_, err = c.Writer().Write(d.serial[:filled])
	case typeDiscard, typeWriteZeroes:
		status, err = d.zero(r, typ == typeWriteZeroes)
	default:
		status = statusUnsupp
	}
	if err != nil && status == statusOK {
		status = statusIOErr
	}
	setStatus(c, status)
	if err != nil {
		return uint32(filled + statusLen), fmt.Errorf("virtio-blk: request type %d sector %d: %w", typ, sector, err)
	}
	return uint32(filled + statusLen), nil
}

// setStatus writes the last writable byte of the chain.
func setStatus(c *virtio.Chain, s byte) {
	for i := len(c.Writable) - 1; i >= 0; i-- {
		if b := c.Writable[i]; len(b) > 0 {
			b[len(b)-1] = s
			return
		}
	}
}

// byteRange checks n bytes at sector against the disk and returns the byte
// offset. It cannot overflow: sector is compared with the capacity before
// it is scaled.
func (d *Device) byteRange(sector, n uint64) (uint64, error) {
	capacity := d.Capacity()
	if n%SectorSize != 0 {
		return 0, fmt.Errorf("length %d is not a multiple of %d: %w", n, SectorSize, virtio.ErrBadRequest)
	}
	if sector > capacity || n > (capacity-sector)*SectorSize {
		return 0, fmt.Errorf("%d bytes at sector %d beyond the disk's %d sectors: %w", n, sector, capacity, virtio.ErrBadRequest)
	}
	return sector * SectorSize, nil
}

// read serves IN: data from the disk into all writable bytes but the
// status, with preadv into the guest's buffers.
func (d *Device) read(c *virtio.Chain, sector, n uint64) (uint64, error) {
	off, err := d.byteRange(sector, n)
	if err != nil {
		return 0, err
	}
	segs, _ := splitSegments(c.Writer().Segments(), n)
	if err := d.backend.ReadAt(segs, off); err != nil {
		return 0, err
	}
	return n, nil
}

// write serves OUT: every readable byte after the header goes to the disk,
// with pwritev from the guest's buffers.
func (d *Device) write(r *virtio.SegmentReader, sector uint64) error {
	if d.readOnly {
		return fmt.Errorf("write to a read-only disk: %w", virtio.ErrBadRequest)
	}
	n := r.Remaining()
	off, err := d.byteRange(sector, n)
	if err != nil {
		return err
	}
	return d.backend.WriteAt(r.Segments(), off)
}

type zeroSeg struct {
	off, n uint64
	unmap  bool
}

// zero serves DISCARD and WRITE_ZEROES: every segment is checked before
// any is applied, so a bad request changes nothing.
func (d *Device) zero(r *virtio.SegmentReader, writeZeroes bool) (byte, error) {
	if d.readOnly {
		return statusIOErr, fmt.Errorf("discard or write-zeroes on a read-only disk: %w", virtio.ErrBadRequest)
	}
	size := r.Remaining()
	if size == 0 || size%zeroSegSize != 0 || size/zeroSegSize > maxZeroSegs {
		return statusIOErr, fmt.Errorf("%d bytes of segments: want 1 to %d segments of %d bytes: %w",
			size, maxZeroSegs, zeroSegSize, virtio.ErrBadRequest)
	}
	var segs [maxZeroSegs]zeroSeg
	count := int(size / zeroSegSize)
	for i := range count {
		var b [zeroSegSize]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return statusIOErr, fmt.Errorf("segment %d: %w", i, err)
		}
		sector := binary.LittleEndian.Uint64(b[0:])
		sectors := binary.LittleEndian.Uint32(b[8:])
		flags := binary.LittleEndian.Uint32(b[12:])
		// The spec: unknown flags, or unmap on a discard, are UNSUPP.
		if flags&unknownFlags != 0 || (!writeZeroes && flags&flagUnmap != 0) {
			return statusUnsupp, fmt.Errorf("segment %d: flags %#x: %w", i, flags, virtio.ErrBadRequest)
		}
		if sectors > maxZeroSectors {
			return statusIOErr, fmt.Errorf("segment %d: %d sectors, more than %d: %w", i, sectors, maxZeroSectors, virtio.ErrBadRequest)
		}
		n := uint64(sectors) * SectorSize
		off, err := d.byteRange(sector, n)
		if err != nil {
			return statusIOErr, fmt.Errorf("segment %d: %w", i, err)
		}
		segs[i] = zeroSeg{off: off, n: n, unmap: flags&flagUnmap != 0}
	}
	for _, s := range segs[:count] {
		if s.n == 0 {
			continue
		}
		var err error
		if writeZeroes {
			err = d.backend.WriteZeroes(s.off, s.n, s.unmap)
		} else {
			err = d.backend.Discard(s.off, s.n)
		}
		if err != nil {
			return statusIOErr, err
		}
	}
	return statusOK, nil
}
