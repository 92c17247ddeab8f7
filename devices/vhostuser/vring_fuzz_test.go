package vhostuser

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
)

// fuzzMemSize is the memfd the fuzzed front end shares as guest memory.
const fuzzMemSize = 64 << 10

// vringFuzzInput is what one FuzzVringSetup run sends, all fuzzed: a
// memory table over a real memfd (whose contents are fuzzed too), then
// the ring's size, base and addresses, a kick eventfd, features and the
// enable, as QEMU does when a guest sets DRIVER_OK.
type vringFuzzInput struct {
	regions  []memRegion
	num      uint32
	base     uint32
	desc     uint64
	used     uint64
	avail    uint64
	features uint64
	enable   uint32
}

// decodeVringFuzzInput reads the fixed fields and up to two regions (32
// bytes each) from in; what follows is the memory's contents.
func decodeVringFuzzInput(in []byte) (vringFuzzInput, []byte) {
	var v vringFuzzInput
	var b [76]byte
	in = in[copy(b[:], in):]
	le := binary.LittleEndian
	v.num, v.base = le.Uint32(b[0:]), le.Uint32(b[4:])
	v.desc, v.used, v.avail = le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:])
	v.features, v.enable = le.Uint64(b[32:]), le.Uint32(b[40:])
	nregions := int(b[44] % 3)
	for range nregions {
		var r [32]byte
		in = in[copy(r[:], in):]
		v.regions = append(v.regions, memRegion{GuestAddr: le.Uint64(r[0:]), Size: le.Uint64(r[8:]), UserAddr: le.Uint64(r[16:]), MmapOffset: le.Uint64(r[24:])})
	}
	return v, in
}

func (v vringFuzzInput) encode(mem []byte) []byte {
	b := make([]byte, 76)
	le := binary.LittleEndian
	le.PutUint32(b[0:], v.num)
	le.PutUint32(b[4:], v.base)
	le.PutUint64(b[8:], v.desc)
	le.PutUint64(b[16:], v.used)
	le.PutUint64(b[24:], v.avail)
	le.PutUint64(b[32:], v.features)
	le.PutUint32(b[40:], v.enable)
	b[44] = byte(len(v.regions))
	for _, r := range v.regions {
		for _, x := range []uint64{r.GuestAddr, r.Size, r.UserAddr, r.MmapOffset} {
			b = le.AppendUint64(b, x)
		}
	}
	return append(b, mem...)
}

// FuzzVringSetup drives a session the way a hostile front end could: a
// memory table of fuzzed regions over a real memfd, then SET_VRING_* with
// fuzzed values, through the real decoder and handler, with the device
// serving whatever ring that makes over fuzzed memory. Nothing may panic;
// errors must be the protocol's; a ring the device runs lies in mapped
// memory; and the session closes cleanly.
func FuzzVringSetup(f *testing.F) {
	ringMem := func() []byte {
		mem := make([]byte, 0x4000)
		le := binary.LittleEndian
		// Descriptor 0: 64 writable bytes at 0x3000; available: head 0.
		le.PutUint64(mem[0:], 0x3000)
		le.PutUint32(mem[8:], 64)
		le.PutUint16(mem[12:], 2)
		le.PutUint16(mem[0x1000+2:], 1)
		return mem
	}
	const uvaBase = 0x7f00_0000_0000
	good := vringFuzzInput{
		regions:  []memRegion{{GuestAddr: 0, Size: fuzzMemSize, UserAddr: uvaBase}},
		num:      8,
		desc:     uvaBase,
		avail:    uvaBase + 0x1000,
		used:     uvaBase + 0x2000,
		features: virtio.FeatureVersion1 | virtio.FeatureRingEventIdx,
		enable:   1,
	}
	f.Add(good.encode(ringMem()))
	two := good
	two.regions = []memRegion{
		{GuestAddr: 0, Size: 0x2000, UserAddr: uvaBase, MmapOffset: 0},
		{GuestAddr: 1 << 32, Size: 0x2000, UserAddr: uvaBase + 0x2000, MmapOffset: 0x2000},
	}
	f.Add(two.encode(ringMem()))
	odd := good
	odd.regions = []memRegion{{GuestAddr: 0, Size: 0x8000, UserAddr: uvaBase, MmapOffset: 2}}
	f.Add(odd.encode(ringMem()))
	wild := good
	wild.num, wild.base, wild.avail, wild.used = 0x8000, 0xffff, uvaBase+0xfffe, uvaBase+fuzzMemSize-4
	f.Add(wild.encode(nil))
	big := good
	big.regions = []memRegion{{GuestAddr: ^uint64(0) - 0xfff, Size: 0x1000, UserAddr: uvaBase, MmapOffset: fuzzMemSize - 0x1000}}
	f.Add(big.encode(nil))

	f.Fuzz(func(t *testing.T, in []byte) {
		v, contents := decodeVringFuzzInput(in)
		dev := newPatternDevice("wisp")
		s := newSession(NewServer(dev, Options{}))
		defer func() { require.NoError(t, s.close()) }()

		memfd, err := unix.MemfdCreate("vhostuser-fuzz", unix.MFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(memfd)
		require.NoError(t, unix.Ftruncate(memfd, fuzzMemSize))
		_, err = unix.Pwrite(memfd, contents[:min(len(contents), fuzzMemSize)], 0)
		require.NoError(t, err)

		// send goes through the decoder and the handler as Serve does; a
		// message the decoder refuses is where a real front end's
		// connection would end.
		send := func(req request, p []byte, fds []int) bool {
			t.Helper()
			h := header{Request: req, Flags: version, Size: uint32(len(p))}
			m, err := decodeMessage(h, p, len(fds))
			if err != nil {
				closeFDs(fds)
				require.ErrorIs(t, err, ErrProtocol)
				return false
			}
			_, err = s.handle(m, fds)
			if err == nil {
				err = s.reconcile()
			}
			var rejected *rejectedError
			if err != nil && !errors.As(err, &rejected) && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("%v: unexpected error %v", req, err)
			}
			return err == nil
		}

		fds := make([]int, len(v.regions))
		for i := range fds {
			fds[i], err = unix.Dup(memfd)
			require.NoError(t, err)
		}
		if !send(reqSetMemTable, memTablePayload(v.regions...), fds) {
			return
		}
		for _, r := range v.regions {
			b, err := s.mem.Slice(r.GuestAddr, r.Size)
			require.NoError(t, err, "a mapped region is all guest memory")
			require.Len(t, b, int(r.Size))
		}
		send(reqSetFeatures, u64(v.features&(dev.Features()|FeatureProtocolFeatures)), nil)
		send(reqSetVringNum, state(0, v.num), nil)
		send(reqSetVringBase, state(0, v.base), nil)
		send(reqSetVringAddr, addrPayload(0, v.desc, v.used, v.avail), nil)
		kick, err := virtio.NewEventFD()
		require.NoError(t, err)
		kickFD, err := unix.Dup(kick.Fd())
		require.NoError(t, err)
		defer kick.Close()
		send(reqSetVringKick, u64(0), []int{kickFD})
		send(reqSetVringEnable, state(0, v.enable), nil)

		if q := s.rings[0].queue; q != nil {
			require.True(t, s.active)
			// Let the device serve whatever the fuzzed memory holds; the
			// stop below waits for it.
			require.NoError(t, kick.Signal())
		}
		send(reqGetVringBase, state(0, 0), nil)
		require.Nil(t, s.rings[0].queue, "GET_VRING_BASE stops the ring")
	})
}
