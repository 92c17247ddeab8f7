package vhostuser

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func rawMessage(req request, flags uint32, p []byte) []byte {
	return append(encodeHeader(header{Request: req, Flags: flags, Size: uint32(len(p))}), p...)
}

func TestDecodeMessage(t *testing.T) {
	regions := fakeRegions()
	for _, tc := range []struct {
		name string
		req  request
		p    []byte
		nfds int
		want *message // nil: must fail with ErrProtocol
	}{
		{"get features", reqGetFeatures, nil, 0, &message{}},
		{"get features with zero u64", reqGetFeatures, u64(0), 0, &message{}},
		{"get features with 4 bytes", reqGetFeatures, []byte{0, 0, 0, 0}, 0, nil},
		{"set features", reqSetFeatures, u64(0x1_4000_0000), 0, &message{U64: 0x1_4000_0000}},
		{"mem table", reqSetMemTable, memTablePayload(regions...), 2, &message{Regions: regions}},
		{"mem table, fds short", reqSetMemTable, memTablePayload(regions...), 1, nil},
		{"mem table, 9 regions", reqSetMemTable, memTablePayload(make([]memRegion, 9)...), 9, nil},
		{"vring num", reqSetVringNum, state(3, 256), 0, &message{State: vringState{3, 256}}},
		{"vring num index 256", reqSetVringNum, state(256, 1), 0, nil},
		{"vring addr", reqSetVringAddr, addrPayload(1, 0x10, 0x20, 0x30), 0,
			&message{Addr: vringAddr{Index: 1, Desc: 0x10, Used: 0x20, Avail: 0x30}}},
		{"kick", reqSetVringKick, u64(2), 1, &message{File: vringFile{Index: 2}}},
		{"kick nofd", reqSetVringKick, u64(2 | vringNoFD), 0, &message{File: vringFile{Index: 2, NoFD: true}}},
		{"call, fd missing", reqSetVringCall, u64(0), 0, nil},
		{"err, extra fd", reqSetVringErr, u64(vringNoFD), 1, nil},
		{"config", reqGetConfig, configPayload(4, make([]byte, 8)), 0,
			&message{Config: configAccess{Offset: 4, Data: make([]byte, 8)}}},
		{"config past 256", reqGetConfig, configPayload(250, make([]byte, 8)), 0, nil},
		{"config empty", reqGetConfig, configPayload(0, nil), 0, nil},
		{"config migration flag", reqSetConfig, encodeConfig(configAccess{Flags: 1, Data: []byte{1}}), 0,
			&message{Config: configAccess{Flags: 1, Data: []byte{1}}}},
		{"config bad flag", reqSetConfig, encodeConfig(configAccess{Flags: 2, Data: []byte{1}}), 0, nil},
		{"reset device", reqResetDevice, nil, 0, &message{}},
		{"postcopy never offered", 28, nil, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := header{Request: tc.req, Flags: version, Size: uint32(len(tc.p))}
			m, err := decodeMessage(h, tc.p, tc.nfds)
			if tc.want == nil {
				require.ErrorIs(t, err, ErrProtocol)
				return
			}
			require.NoError(t, err)
			tc.want.header = h
			assert.Equal(t, tc.want, m)
		})
	}
}

func TestDecodeHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want header
		ok   bool
	}{
		{"plain", rawMessage(reqGetFeatures, version, nil), header{reqGetFeatures, version, 0}, true},
		{"need reply", rawMessage(reqSetOwner, version|flagNeedReply, nil), header{reqSetOwner, version | flagNeedReply, 0}, true},
		{"version 0", rawMessage(reqSetOwner, 0, nil), header{}, false},
		{"reply", rawMessage(reqSetOwner, version|flagReply, nil), header{}, false},
		{"max payload", rawMessage(reqGetConfig, version, make([]byte, maxPayload))[:headerSize], header{reqGetConfig, version, maxPayload}, true},
		{"over max payload", rawMessage(reqGetConfig, version, make([]byte, maxPayload+1))[:headerSize], header{}, false},
		{"short", []byte{1, 0, 0, 0}, header{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := decodeHeader(tc.b[:min(len(tc.b), headerSize)])
			if !tc.ok {
				require.ErrorIs(t, err, ErrProtocol)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, h)
		})
	}
}

// FuzzMessage feeds arbitrary bytes through the decoder and, for what it
// accepts, through a session's handler (on a device with one queue and no
// memory table): nothing may panic, and what is accepted must hold the
// invariants the handlers rely on.
func FuzzMessage(f *testing.F) {
	seeds := [][]byte{
		rawMessage(reqGetFeatures, version, nil),
		rawMessage(reqSetFeatures, version, u64(0x1_4000_0000)),
		rawMessage(reqGetProtocolFeatures, version, nil),
		rawMessage(reqSetProtocolFeatures, version|flagNeedReply, u64(supportedProtocol)),
		rawMessage(reqGetQueueNum, version, nil),
		rawMessage(reqSetOwner, version, nil),
		rawMessage(reqResetOwner, version, nil),
		rawMessage(reqResetDevice, version, nil),
		rawMessage(reqSetMemTable, version|flagNeedReply, memTablePayload(fakeRegions()...)),
		rawMessage(reqSetVringNum, version, state(0, 8)),
		rawMessage(reqSetVringBase, version, state(0, 5)),
		rawMessage(reqGetVringBase, version, state(0, 0)),
		rawMessage(reqSetVringAddr, version, addrPayload(0, fakeLowUVA, fakeLowUVA+0x2000, fakeLowUVA+0x1000)),
		rawMessage(reqSetVringKick, version, u64(0)),
		rawMessage(reqSetVringCall, version, u64(vringNoFD)),
		rawMessage(reqSetVringErr, version, u64(vringNoFD)),
		rawMessage(reqSetVringEnable, version|flagNeedReply, state(0, 1)),
		rawMessage(reqGetConfig, version, configPayload(0, make([]byte, 4))),
		rawMessage(reqSetConfig, version, configPayload(1, []byte{7})),
	}
	for _, s := range seeds {
		nfds := uint8(0)
		if h, err := decodeHeader(s[:headerSize]); err == nil {
			m := &message{header: h}
			switch h.Request {
			case reqSetMemTable:
				m.Regions = fakeRegions()
			case reqSetVringKick:
				m.File = vringFile{}
			case reqSetVringCall, reqSetVringErr:
				m.File = vringFile{NoFD: true}
			}
			nfds = uint8(m.wantFDs())
		}
		f.Add(s, nfds)
	}
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8) {
		if len(data) < headerSize {
			_, err := decodeHeader(data)
			require.ErrorIs(t, err, ErrProtocol)
			return
		}
		h, err := decodeHeader(data[:headerSize])
		if err != nil {
			return
		}
		p := data[headerSize:]
		if len(p) > int(h.Size) {
			p = p[:h.Size]
		}
		m, err := decodeMessage(h, p, int(nfds))
		if err != nil {
			require.ErrorIs(t, err, ErrProtocol)
			return
		}
		require.Equal(t, int(nfds), m.wantFDs())
		for i, r := range m.Regions {
			require.NoError(t, r.check())
			for _, o := range m.Regions[:i] {
				require.False(t, r.GuestAddr < o.GuestAddr+o.Size && o.GuestAddr < r.GuestAddr+r.Size, "overlap")
			}
		}
		require.LessOrEqual(t, int(m.Config.Offset)+len(m.Config.Data), maxConfigSize)
		require.Less(t, m.ringIndex(), maxRings)
		if nfds > 0 {
			return // the handler would take descriptors the fuzzer has not got
		}
		s := newSession(NewServer(newPatternDevice("x"), Options{}))
		defer s.close()
		reply, err := s.handle(m, nil)
		if err == nil {
			err = s.reconcile()
		}
		if err == nil && hasReply(m.Request) {
			require.NotNil(t, reply)
		}
		_, _, active := s.dev.(*patternDevice).state()
		require.False(t, active, "active without a memory table")
	})
}

func TestEncodeReply(t *testing.T) {
	b := encodeReply(reqGetVringBase, state(1, 9))
	le := binary.LittleEndian
	assert.Equal(t, uint32(reqGetVringBase), le.Uint32(b))
	assert.Equal(t, uint32(version|flagReply), le.Uint32(b[4:]))
	assert.Equal(t, uint32(8), le.Uint32(b[8:]))
	assert.Equal(t, []byte{1, 0, 0, 0, 9, 0, 0, 0}, b[12:])
}
