package kvm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLAPICRegister(t *testing.T) {
	var s LAPICState
	require.NoError(t, s.SetRegister(0x350, 0x700))
	v, err := s.Register(0x350)
	require.NoError(t, err)
	assert.Equal(t, uint32(0x700), v)
	assert.Equal(t, []byte{0, 7, 0, 0}, s.Regs[0x350:0x354], "little endian, as the APIC page")

	require.NoError(t, s.SetRegister(LAPICRegsSize-4, 1))
	for _, off := range []uint32{LAPICRegsSize, LAPICRegsSize - 2, 0x351, 0xffffffff} {
		_, err := s.Register(off)
		assert.ErrorIs(t, err, ErrInvalidArgument, "offset %#x", off)
		assert.ErrorIs(t, s.SetRegister(off, 1), ErrInvalidArgument, "offset %#x", off)
	}
}
