package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// The wire format of vhost-user (QEMU docs/interop/vhost-user.rst): every
// message is a 12-byte header (request, flags, payload size; little
// endian) followed by the payload, with file descriptors riding along as
// SCM_RIGHTS ancillary data.

// request is a front-end message type.
type request uint32

// Front-end requests (vhost-user.rst, "Front-end message types").
const (
	reqGetFeatures         request = 1
	reqSetFeatures         request = 2
	reqSetOwner            request = 3
	reqResetOwner          request = 4
	reqSetMemTable         request = 5
	reqSetLogBase          request = 6
	reqSetLogFD            request = 7
	reqSetVringNum         request = 8
	reqSetVringAddr        request = 9
	reqSetVringBase        request = 10
	reqGetVringBase        request = 11
	reqSetVringKick        request = 12
	reqSetVringCall        request = 13
	reqSetVringErr         request = 14
	reqGetProtocolFeatures request = 15
	reqSetProtocolFeatures request = 16
	reqGetQueueNum         request = 17
	reqSetVringEnable      request = 18
	reqGetConfig           request = 24
	reqSetConfig           request = 25
	reqResetDevice         request = 34
)

var requestNames = map[request]string{
	reqGetFeatures:         "GET_FEATURES",
	reqSetFeatures:         "SET_FEATURES",
	reqSetOwner:            "SET_OWNER",
	reqResetOwner:          "RESET_OWNER",
	reqSetMemTable:         "SET_MEM_TABLE",
	reqSetLogBase:          "SET_LOG_BASE",
	reqSetLogFD:            "SET_LOG_FD",
	reqSetVringNum:         "SET_VRING_NUM",
	reqSetVringAddr:        "SET_VRING_ADDR",
	reqSetVringBase:        "SET_VRING_BASE",
	reqGetVringBase:        "GET_VRING_BASE",
	reqSetVringKick:        "SET_VRING_KICK",
	reqSetVringCall:        "SET_VRING_CALL",
	reqSetVringErr:         "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum:         "GET_QUEUE_NUM",
	reqSetVringEnable:      "SET_VRING_ENABLE",
	reqGetConfig:           "GET_CONFIG",
	reqSetConfig:           "SET_CONFIG",
	reqResetDevice:         "RESET_DEVICE",
}

func (r request) String() string {
	if n, ok := requestNames[r]; ok {
		return n
	}
	return fmt.Sprintf("request %d", uint32(r))
}

// Header flags.
const (
	flagVersionMask = 0x3
	version         = 0x1
	flagReply       = 1 << 2
	flagNeedReply   = 1 << 3
)

// FeatureProtocolFeatures is the virtio feature bit (unused by virtio
// itself) through which a back-end announces GET_PROTOCOL_FEATURES.
const FeatureProtocolFeatures uint64 = 1 << 30

// Protocol feature bits (vhost-user.rst, "Protocol features").
const (
	ProtocolMQ          uint64 = 1 << 0
	ProtocolReplyAck    uint64 = 1 << 3
	ProtocolConfig      uint64 = 1 << 9
	ProtocolResetDevice uint64 = 1 << 13
)

// supportedProtocol is every protocol feature the server implements.
const supportedProtocol = ProtocolMQ | ProtocolReplyAck | ProtocolConfig | ProtocolResetDevice

// offeredProtocol is what the server offers for a device type: CONFIG only
// where QEMU's front end reads config space over vhost-user (block and
// vsock); the others warn about a back end offering it.
func offeredProtocol(t virtio.DeviceType) uint64 {
	const typeVsock virtio.DeviceType = 19
	if t == virtio.TypeBlock || t == typeVsock {
		return supportedProtocol
	}
	return supportedProtocol &^ ProtocolConfig
}

// Limits of the message layouts.
const (
	headerSize = 12
	// maxRegions is the front-end's memory table limit without
	// CONFIGURE_MEM_SLOTS (QEMU's VHOST_MEMORY_BASELINE_NREGIONS).
	maxRegions = 8
	regionSize = 32
	// maxConfigSize is VHOST_USER_MAX_CONFIG_SIZE.
	maxConfigSize    = 256
	configHeaderSize = 12
	// maxPayload is the largest payload any request the server knows can
	// have: a config access of maxConfigSize bytes.
	maxPayload = configHeaderSize + maxConfigSize
	// maxFDs is the most descriptors one message may carry (a full memory
	// table).
	maxFDs = maxRegions
	// maxRings bounds ring indexes: the index field of kick/call/err is 8
	// bits wide.
	maxRings = 256
	// vringNoFD in a kick/call/err payload says no descriptor came.
	vringNoFD  = 1 << 8
	vringIndex = 0xff
	// vringFLog is SET_VRING_ADDR's "log used ring writes" flag, which
	// needs VHOST_F_LOG_ALL (never offered).
	vringFLog = 1
)

// ErrProtocol: the front end sent a message that breaks the protocol (bad
// size, unknown request, descriptor count that does not match ...). The
// connection is closed.
var ErrProtocol = errors.New("vhost-user: protocol violation")

// header is a message header.
type header struct {
	Request request
	Flags   uint32
	Size    uint32
}

func (h header) needReply() bool { return h.Flags&flagNeedReply != 0 }

// decodeHeader checks a header as it comes off the socket.
func decodeHeader(b []byte) (header, error) {
	if len(b) != headerSize {
		return header{}, fmt.Errorf("header of %d bytes, want %d: %w", len(b), headerSize, ErrProtocol)
	}
	h := header{
		Request: request(binary.LittleEndian.Uint32(b)),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
	if v := h.Flags & flagVersionMask; v != version {
		return header{}, fmt.Errorf("%v: protocol version %d, want %d: %w", h.Request, v, version, ErrProtocol)
	}
	if extra := h.Flags &^ (flagVersionMask | flagNeedReply); extra != 0 {
		return header{}, fmt.Errorf("%v: unknown flags %#x: %w", h.Request, extra, ErrProtocol)
	}
	if h.Size > maxPayload {
		return header{}, fmt.Errorf("%v: payload of %d bytes, at most %d: %w", h.Request, h.Size, maxPayload, ErrProtocol)
	}
	return h, nil
}

func encodeHeader(h header) []byte {
	b := make([]byte, headerSize, headerSize+int(h.Size))
	binary.LittleEndian.PutUint32(b, uint32(h.Request))
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Size)
	return b
}

// encodeReply renders the reply to a request with payload p.
func encodeReply(req request, p []byte) []byte {
	b := encodeHeader(header{Request: req, Flags: version | flagReply, Size: uint32(len(p))})
	return append(b, p...)
}

// memRegion is one entry of a memory table: a stretch of guest-physical
// memory, where the front end has it mapped (userspace address), and
// where it starts in the descriptor that came with it.
type memRegion struct {
	GuestAddr  uint64
	Size       uint64
	UserAddr   uint64
	MmapOffset uint64
}

// vringState is the payload of SET_VRING_NUM/BASE/ENABLE and
// GET_VRING_BASE.
type vringState struct {
	Index uint32
	Num   uint32
}

// vringAddr is the payload of SET_VRING_ADDR: the ring's parts as the
// front end's userspace addresses.
type vringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// vringFile is the payload of SET_VRING_KICK/CALL/ERR.
type vringFile struct {
	Index uint32
	NoFD  bool
}

// configAccess is the payload of GET_CONFIG/SET_CONFIG.
type configAccess struct {
	Offset uint32
	Flags  uint32
	Data   []byte // the bytes to write (SET_CONFIG), or room for the read
}

// message is one decoded front-end message. Exactly the field its request
// uses is set.
type message struct {
	header
	U64     uint64
	Regions []memRegion
	State   vringState
	Addr    vringAddr
	File    vringFile
	Config  configAccess
}

// wantFDs says how many descriptors m must come with.
func (m *message) wantFDs() int {
	switch m.Request {
	case reqSetMemTable:
		return len(m.Regions)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		if m.File.NoFD {
			return 0
		}
		return 1
	}
	return 0
}

// decodeMessage decodes and checks the payload of a request whose header
// has been checked, given how many descriptors came with it. Requests the
// server does not implement are protocol errors: it never offered the
// features that would make a front end send them.
func decodeMessage(h header, p []byte, nfds int) (*message, error) {
	m := &message{header: h}
	if uint32(len(p)) != h.Size {
		return nil, fmt.Errorf("%v: payload of %d bytes, header says %d: %w", h.Request, len(p), h.Size, ErrProtocol)
	}
	wantSize := func(n int) error {
		if len(p) != n {
			return fmt.Errorf("%v: payload of %d bytes, want %d: %w", h.Request, len(p), n, ErrProtocol)
		}
		return nil
	}
	le := binary.LittleEndian
	var err error
	switch h.Request {
	case reqGetFeatures, reqGetProtocolFeatures, reqGetQueueNum, reqSetOwner, reqResetOwner, reqResetDevice:
		// QEMU sends these without a payload; a u64 of zero is tolerated
		// (older front ends send one for GET_* and RESET_OWNER).
		if len(p) != 0 {
			err = wantSize(8)
		}
	case reqSetFeatures, reqSetProtocolFeatures:
		if err = wantSize(8); err == nil {
			m.U64 = le.Uint64(p)
		}
	case reqSetMemTable:
		m.Regions, err = decodeMemTable(p)
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		if err = wantSize(8); err == nil {
			m.State = vringState{Index: le.Uint32(p), Num: le.Uint32(p[4:])}
			if m.State.Index >= maxRings {
				err = fmt.Errorf("%v: ring %d out of range: %w", h.Request, m.State.Index, ErrProtocol)
			}
		}
	case reqSetVringAddr:
		if err = wantSize(40); err == nil {
			m.Addr = vringAddr{
				Index: le.Uint32(p), Flags: le.Uint32(p[4:]),
				Desc: le.Uint64(p[8:]), Used: le.Uint64(p[16:]), Avail: le.Uint64(p[24:]), Log: le.Uint64(p[32:]),
			}
			switch {
			case m.Addr.Index >= maxRings:
				err = fmt.Errorf("%v: ring %d out of range: %w", h.Request, m.Addr.Index, ErrProtocol)
			case m.Addr.Flags != 0:
				err = fmt.Errorf("%v: ring %d: flags %#x (logging was never offered): %w", h.Request, m.Addr.Index, m.Addr.Flags, ErrProtocol)
			}
		}
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		if err = wantSize(8); err == nil {
			v := le.Uint64(p)
			if v&^uint64(vringIndex|vringNoFD) != 0 {
				err = fmt.Errorf("%v: payload %#x has unknown bits: %w", h.Request, v, ErrProtocol)
				break
			}
			m.File = vringFile{Index: uint32(v & vringIndex), NoFD: v&vringNoFD != 0}
		}
	case reqGetConfig, reqSetConfig:
		m.Config, err = decodeConfig(h.Request, p)
	default:
		err = fmt.Errorf("%v: not implemented: %w", h.Request, ErrProtocol)
	}
	if err != nil {
		return nil, err
	}
	if want := m.wantFDs(); nfds != want {
		return nil, fmt.Errorf("%v: %d file descriptors, want %d: %w", h.Request, nfds, want, ErrProtocol)
	}
	return m, nil
}

// decodeMemTable decodes SET_MEM_TABLE's payload: a count, padding, then
// the regions. Each region must be non-empty and not wrap around in either
// address space, and no two may overlap in guest-physical space.
func decodeMemTable(p []byte) ([]memRegion, error) {
	le := binary.LittleEndian
	if len(p) < 8 {
		return nil, fmt.Errorf("%v: payload of %d bytes, want at least 8: %w", reqSetMemTable, len(p), ErrProtocol)
	}
	n := le.Uint32(p)
	if n == 0 || n > maxRegions {
		return nil, fmt.Errorf("%v: %d regions, want 1..%d: %w", reqSetMemTable, n, maxRegions, ErrProtocol)
	}
	if want := 8 + int(n)*regionSize; len(p) != want {
		return nil, fmt.Errorf("%v: payload of %d bytes for %d regions, want %d: %w", reqSetMemTable, len(p), n, want, ErrProtocol)
	}
	regions := make([]memRegion, n)
	for i := range regions {
		b := p[8+i*regionSize:]
		r := memRegion{GuestAddr: le.Uint64(b), Size: le.Uint64(b[8:]), UserAddr: le.Uint64(b[16:]), MmapOffset: le.Uint64(b[24:])}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("%v: region %d: %w", reqSetMemTable, i, err)
		}
		for j, o := range regions[:i] {
			if r.GuestAddr < o.GuestAddr+o.Size && o.GuestAddr < r.GuestAddr+r.Size {
				return nil, fmt.Errorf("%v: region %d [%#x, +%#x) overlaps region %d [%#x, +%#x): %w",
					reqSetMemTable, i, r.GuestAddr, r.Size, j, o.GuestAddr, o.Size, ErrProtocol)
			}
		}
		regions[i] = r
	}
	return regions, nil
}

// maxRegionBytes bounds one region (and its offset into the file) so the
// sums below and the mmap length fit comfortably: 1 TiB of guest RAM.
const maxRegionBytes = 1 << 40

func (r memRegion) check() error {
	switch {
	case r.Size == 0:
		return fmt.Errorf("empty: %w", ErrProtocol)
	case r.Size > maxRegionBytes || r.MmapOffset > maxRegionBytes:
		return fmt.Errorf("size %#x at offset %#x: larger than %#x: %w", r.Size, r.MmapOffset, uint64(maxRegionBytes), ErrProtocol)
	case r.GuestAddr+r.Size < r.GuestAddr:
		return fmt.Errorf("guest range [%#x, +%#x) wraps: %w", r.GuestAddr, r.Size, ErrProtocol)
	case r.UserAddr+r.Size < r.UserAddr:
		return fmt.Errorf("user range [%#x, +%#x) wraps: %w", r.UserAddr, r.Size, ErrProtocol)
	}
	return nil
}

func decodeConfig(req request, p []byte) (configAccess, error) {
	le := binary.LittleEndian
	if len(p) < configHeaderSize {
		return configAccess{}, fmt.Errorf("%v: payload of %d bytes, want at least %d: %w", req, len(p), configHeaderSize, ErrProtocol)
	}
	c := configAccess{Offset: le.Uint32(p), Flags: le.Uint32(p[8:])}
	size := le.Uint32(p[4:])
	switch {
	case size == 0 || size > maxConfigSize:
		return configAccess{}, fmt.Errorf("%v: %d bytes, want 1..%d: %w", req, size, maxConfigSize, ErrProtocol)
	case uint64(c.Offset)+uint64(size) > maxConfigSize:
		return configAccess{}, fmt.Errorf("%v: [%d, +%d) beyond %d bytes of config space: %w", req, c.Offset, size, maxConfigSize, ErrProtocol)
	case len(p) != configHeaderSize+int(size):
		return configAccess{}, fmt.Errorf("%v: payload of %d bytes for %d config bytes: %w", req, len(p), size, ErrProtocol)
	case c.Flags > 1: // 0: from the driver; 1: live migration
		return configAccess{}, fmt.Errorf("%v: flags %#x: %w", req, c.Flags, ErrProtocol)
	}
	c.Data = p[configHeaderSize:]
	return c, nil
}

// encodeU64 is the payload of replies that carry a number.
func encodeU64(v uint64) []byte {
	return binary.LittleEndian.AppendUint64(nil, v)
}

func encodeVringState(s vringState) []byte {
	b := binary.LittleEndian.AppendUint32(nil, s.Index)
	return binary.LittleEndian.AppendUint32(b, s.Num)
}

func encodeConfig(c configAccess) []byte {
	b := binary.LittleEndian.AppendUint32(nil, c.Offset)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Data)))
	b = binary.LittleEndian.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}
