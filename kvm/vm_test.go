package kvm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIOEventFDArg(t *testing.T) {
	match := uint64(0x42)
	tests := []struct {
		name      string
		fd        int
		addr      uint64
		length    uint32
		pio       bool
		datamatch *uint64
		deassign  bool
		want      kvmIOEventFD
		wantErr   bool
	}{
		{name: "mmio any value", fd: 5, addr: 0xd0000000, length: 4,
			want: kvmIOEventFD{Addr: 0xd0000000, Len: 4, FD: 5}},
		{name: "pio with datamatch", fd: 6, addr: 0x3f8, length: 2, pio: true, datamatch: &match,
			want: kvmIOEventFD{Addr: 0x3f8, Len: 2, FD: 6, Datamatch: 0x42, Flags: ioeventfdFlagPIO | ioeventfdFlagDatamatch}},
		{name: "deassign", fd: 6, addr: 0x3f8, length: 1, pio: true, deassign: true,
			want: kvmIOEventFD{Addr: 0x3f8, Len: 1, FD: 6, Flags: ioeventfdFlagPIO | ioeventfdFlagDeassign}},
		{name: "any length", fd: 1, addr: 0x1000, length: 0,
			want: kvmIOEventFD{Addr: 0x1000, FD: 1}},
		{name: "length 3", fd: 1, length: 3, wantErr: true},
		{name: "length 16", fd: 1, length: 16, wantErr: true},
		{name: "negative fd", fd: -1, length: 4, wantErr: true},
		{name: "datamatch without length", fd: 1, length: 0, datamatch: &match, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ioeventfdArg(tt.fd, tt.addr, tt.length, tt.pio, tt.datamatch, tt.deassign)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestRoutingEntryEncode(t *testing.T) {
	e, err := IRQChipRoute(4, IRQChipIOAPIC, 4).encode()
	require.NoError(t, err)
	assert.Equal(t, kvmIRQRoutingEntry{GSI: 4, Type: uint32(RoutingIRQChip), U: [8]uint32{IRQChipIOAPIC, 4}}, e)

	e, err = MSIRoute(24, 0x1_fee0_1000, 0x4041).encode()
	require.NoError(t, err)
	assert.Equal(t, kvmIRQRoutingEntry{GSI: 24, Type: uint32(RoutingMSI), U: [8]uint32{0xfee01000, 0x1, 0x4041}}, e)

	_, err = RoutingEntry{GSI: 1, Kind: 5}.encode()
	assert.ErrorIs(t, err, ErrInvalidArgument)
}
