package vnet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/virtiotest"
)

// scriptBackend hands out fixed frames, then EAGAIN. Frames longer than
// the reader's buffer fail with EMSGSIZE, as a packet socket would say.
type scriptBackend struct {
	frames  [][]byte
	vnetHdr bool
}

func (b *scriptBackend) ReadFrame(bufs [][]byte) (int, error) {
	if len(b.frames) == 0 {
		return 0, unix.EAGAIN
	}
	f := b.frames[0]
	b.frames = b.frames[1:]
	if len(f) > len(bufs[0]) {
		return 0, unix.EMSGSIZE
	}
	return copy(bufs[0], f), nil
}

func (b *scriptBackend) WriteFrame([][]byte) error { return nil }
func (b *scriptBackend) Fd() int                   { return -1 }
func (b *scriptBackend) HasVnetHdr() bool          { return b.vnetHdr }
func (b *scriptBackend) SetOffload(uint) error     { return nil }
func (b *scriptBackend) Close() error              { return nil }

// rxFuzzFrames cuts frames out of in: each is a 16-bit length and up to
// that many bytes, zero-padded (so a short input can make a long frame).
func rxFuzzFrames(in []byte) [][]byte {
	var frames [][]byte
	for len(in) >= 2 && len(frames) < 64 {
		n := int(binary.LittleEndian.Uint16(in))
		in = in[2:]
		f := make([]byte, n)
		in = in[copy(f, in):]
		frames = append(frames, f)
	}
	return frames
}

// rxFuzzChains cuts the chains the fuzzed driver posts out of in: a count
// byte (1-3 buffers), then per buffer 16 bits: its length (12 bits) and, in
// the top bit, readable instead of writable.
func rxFuzzChains(in []byte) [][]virtiotest.Buffer {
	var chains [][]virtiotest.Buffer
	for len(in) >= 1 && len(chains) < 48 {
		k := 1 + int(in[0]%3)
		in = in[1:]
		var chain []virtiotest.Buffer
		for ; k > 0 && len(in) >= 2; k-- {
			v := binary.LittleEndian.Uint16(in)
			in = in[2:]
			chain = append(chain, virtiotest.Buffer{Len: int(v & 0xfff), Writable: v&0x8000 == 0})
		}
		if len(chain) > 0 {
			chains = append(chains, chain)
		}
	}
	return chains
}

// FuzzReceive runs the receive path (frames from the backend, buffers from
// the driver) with fuzzed frames, headers, features and receive buffers.
// It must never panic, and what reaches the driver must be sound: every
// used length within its chain, each frame split over exactly as many
// buffers as its header says (one without MRG_RXBUF), a header that
// claims only negotiated offloads, and frames that are the backend's, in
// order.
func FuzzReceive(f *testing.F) {
	frame := func(n int, hdr []byte) []byte {
		b := make([]byte, 2, 2+n)
		binary.LittleEndian.PutUint16(b, uint16(len(hdr)+n))
		b = append(b, hdr...)
		return append(b, ethFrame(n, 1)...)
	}
	buf := func(n int, writable bool) []byte {
		v := uint16(n)
		if !writable {
			v |= 0x8000
		}
		return binary.LittleEndian.AppendUint16(nil, v)
	}
	all := FeatureMrgRxbuf | FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN
	csum := hdrBytes(netHdr{flags: hdrFNeedsCsum, csumStart: 34, csumOffset: 6})
	tso := hdrBytes(netHdr{flags: hdrFNeedsCsum, gsoType: gsoTCPv4 | gsoECN, gsoSize: 1448, hdrLen: 54, csumStart: 34, csumOffset: 16})
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	f.Add(uint64(0), false, join(frame(60, nil), frame(1514, nil)),
		join([]byte{0}, buf(2048, true), []byte{0}, buf(2048, true)))
	f.Add(all, true, join(frame(60, csum), frame(3000, tso), frame(10, nil)),
		join([]byte{1}, buf(12, true), buf(1000, true), []byte{0}, buf(1000, true), []byte{2}, buf(4, false), buf(500, true), buf(4000, true)))
	f.Add(uint64(0), true, join(frame(60, tso), frame(60, csum)),
		join([]byte{0}, buf(0, true), []byte{0}, buf(100, false), []byte{0}, buf(2000, true)))
	f.Add(FeatureMrgRxbuf, false, join(frame(9000, nil), frame(64, nil)),
		join([]byte{0}, buf(11, true), []byte{0}, buf(600, true), []byte{0}, buf(600, true)))

	f.Fuzz(func(t *testing.T, features uint64, vnetHdr bool, frameSpec, bufSpec []byte) {
		frames := rxFuzzFrames(frameSpec)
		chains := rxFuzzChains(bufSpec)
		features &= all
		mrg := features&FeatureMrgRxbuf != 0
		off := offloadsFor(features)

		// The ring has room for every descriptor the chains need, so the
		// driver never reuses one and each head names one chain: the device
		// may complete chains out of order (a refused one before those it
		// holds), as the spec allows without IN_ORDER.
		const ringSize = 256
		mem := virtiotest.NewMemory(0x10000, 1<<20)
		drv := virtiotest.NewDriver(mem, ringSize, 0x10000)
		q, err := drv.Queue(virtio.FeatureVersion1 | virtio.FeatureRingEventIdx)
		require.NoError(t, err)
		backend := &scriptBackend{frames: append([][]byte(nil), frames...), vnetHdr: vnetHdr}
		r := &receiver{
			d:     &Device{backend: backend},
			aq:    virtio.ActiveQueue{Queue: q},
			off:   off,
			mrg:   mrg,
			buf:   make([]byte, rxBufSize),
			onErr: func(error) {},
		}

		posted := map[uint32]rxPosted{}
		var used []usedElem
		reap := func() {
			for {
				id, n, ok := drv.Used()
				if !ok {
					return
				}
				p, ok := posted[id]
				require.True(t, ok, "used element %d: not a chain the driver posted", id)
				delete(posted, id)
				used = append(used, usedElem{p, n})
			}
		}
		post := func() bool {
			reap()
			if len(chains) == 0 {
				return false
			}
			c := drv.Add(chains[0]...)
			posted[uint32(c.Head)] = rxPosted{c, chains[0]}
			chains = chains[1:]
			return true
		}
		for steps := 0; steps < 1000; steps++ {
			if r.n == 0 {
				more, err := r.readFrame()
				require.NoError(t, err)
				if !more && len(backend.frames) == 0 {
					break
				}
				continue
			}
			done, err := r.deliver()
			require.NoError(t, err, "the driver's ring is well formed")
			if !done && !post() {
				break // no buffers will come: the frame stays pending
			}
		}
		r.release()
		reap()

		// Read back what the driver got.
		var delivered int
		next := 0 // the backend frame the next delivery must match or follow
		for len(used) > 0 {
			e := used[0]
			require.LessOrEqual(t, uint64(e.n), e.p.writableLen(), "used length beyond the chain")
			if e.n == 0 {
				used = used[1:]
				continue // a refused buffer or one handed back empty
			}
			require.GreaterOrEqual(t, int(e.n), HdrLen, "a frame's first buffer holds its header")
			got := e.p.written(e.n)
			h := decodeHdr(got)
			k := int(h.numBuffers)
			if !mrg {
				require.Equal(t, 1, k)
			}
			require.GreaterOrEqual(t, len(used), k, "num_buffers beyond the buffers used")
			for _, more := range used[1:k] {
				require.NotZero(t, more.n, "an empty buffer inside a frame")
				got = append(got, more.p.written(more.n)...)
			}
			used = used[k:]
			fixed := h
			require.True(t, fixed.fixRx(off), "header %+v claims offloads not negotiated", h)
			require.Equal(t, h, fixed)
			payload := got[HdrLen:]
			for ; next < len(frames); next++ {
				want := frames[next]
				if vnetHdr {
					if len(want) < HdrLen {
						continue
					}
					want = want[HdrLen:]
				}
				if bytes.Equal(payload, want) {
					break
				}
			}
			require.Less(t, next, len(frames), "delivered a frame the backend never sent")
			next++
			delivered++
		}
		require.Equal(t, uint64(delivered), r.d.stats.rxFrames.Load())
	})
}

// rxPosted is a chain the fuzzed driver posted and what its buffers are.
type rxPosted struct {
	c    *virtiotest.Chain
	bufs []virtiotest.Buffer
}

type usedElem struct {
	p rxPosted
	n uint32
}

func (p rxPosted) writableLen() uint64 {
	var n uint64
	for _, b := range p.bufs {
		if b.Writable {
			n += uint64(b.Len)
		}
	}
	return n
}

// written gathers the first n bytes of the chain's writable buffers.
func (p rxPosted) written(n uint32) []byte {
	var out []byte
	for i, b := range p.bufs {
		if b.Writable {
			out = append(out, p.c.Buffer(i)...)
		}
	}
	return out[:n]
}
