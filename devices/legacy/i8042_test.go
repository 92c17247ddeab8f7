package legacy

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wisp-vmm/wisp/devices"
)

func TestI8042ResetCommands(t *testing.T) {
	tests := []struct {
		name      string
		cmd       byte
		wantReset bool
	}{
		{"0xfe pulses the reset line (Linux reboot=k)", 0xfe, true},
		{"0xf0 pulses all four lines, reset included", 0xf0, true},
		{"0xfc pulses reset and A20", 0xfc, true},
		{"0xff pulses nothing", 0xff, false},
		{"0xfd pulses A20 only", 0xfd, false},
		{"self test is not a reset", i8042SelfTest, false},
		{"unknown command", 0xc0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resets counter
			k := NewI8042(resets.inc)
			writeByte(t, k, I8042CommandOffset, tt.cmd)
			want := int64(0)
			if tt.wantReset {
				want = 1
			}
			assert.Equal(t, want, resets.count())
		})
	}
}

func TestI8042OutputPortWrite(t *testing.T) {
	tests := []struct {
		name      string
		value     byte
		wantReset bool
	}{
		{"reset line held high, A20 on", 0x03, false},
		{"A20 off keeps running", 0x01, false},
		{"reset line low resets", 0x02, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resets counter
			k := NewI8042(resets.inc)
			writeByte(t, k, I8042CommandOffset, i8042WriteOutPort)
			writeByte(t, k, I8042DataOffset, tt.value)
			assert.Equal(t, tt.wantReset, resets.count() == 1)
			writeByte(t, k, I8042CommandOffset, i8042ReadOutPort)
			assert.Equal(t, tt.value, readByte(t, k, I8042DataOffset))
		})
	}
}

func TestI8042Responses(t *testing.T) {
	tests := []struct {
		name string
		cmd  byte
		want byte
	}{
		{"read configuration byte", i8042ReadCTR, i8042CTRSys},
		{"controller self test", i8042SelfTest, 0x55},
		{"keyboard interface test", i8042KbdTest, 0x00},
		{"read output port", i8042ReadOutPort, 0x03},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewI8042(nil)
			assert.Zero(t, readByte(t, k, I8042CommandOffset)&i8042StatusOBF)
			writeByte(t, k, I8042CommandOffset, tt.cmd)
			assert.Equal(t, byte(i8042StatusOBF), readByte(t, k, I8042CommandOffset)&i8042StatusOBF)
			assert.Equal(t, tt.want, readByte(t, k, I8042DataOffset))
			assert.Zero(t, readByte(t, k, I8042CommandOffset)&i8042StatusOBF, "reading the data port empties the buffer")
		})
	}
}

func TestI8042ConfigurationByte(t *testing.T) {
	k := NewI8042(nil)
	steps := []struct {
		cmd     byte
		data    int // -1: no data byte
		wantCTR byte
	}{
		{i8042WriteCTR, 0x47, 0x47},
		{i8042DisableKbd, -1, 0x57},
		{i8042DisableAux, -1, 0x77},
		{i8042EnableKbd, -1, 0x67},
		{i8042EnableAux, -1, 0x47},
		{i8042WriteCTR, 0x00, 0x00},
	}
	for _, st := range steps {
		writeByte(t, k, I8042CommandOffset, st.cmd)
		if st.data >= 0 {
			writeByte(t, k, I8042DataOffset, byte(st.data))
		}
		writeByte(t, k, I8042CommandOffset, i8042ReadCTR)
		assert.Equal(t, st.wantCTR, readByte(t, k, I8042DataOffset), "after command %#x", st.cmd)
	}
	assert.Zero(t, readByte(t, k, I8042CommandOffset)&i8042StatusSys, "SYS flag follows the CTR")
}

func TestI8042Status(t *testing.T) {
	k := NewI8042(nil)
	assert.Equal(t, byte(i8042StatusSys|i8042StatusUnlocked), readByte(t, k, I8042CommandOffset),
		"input buffer empty (Linux's kb_wait), system flag set, not inhibited")
	writeByte(t, k, I8042CommandOffset, i8042EnableKbd)
	assert.Equal(t, byte(i8042StatusCommand), readByte(t, k, I8042CommandOffset)&i8042StatusCommand)
	writeByte(t, k, I8042DataOffset, 0xf4) // keyboard command: nobody is there
	assert.Zero(t, readByte(t, k, I8042CommandOffset)&(i8042StatusCommand|i8042StatusOBF))
}

func TestI8042OnTheBus(t *testing.T) {
	var resets counter
	k := NewI8042(resets.inc)
	bus := devices.NewBus()
	require.NoError(t, bus.Insert(k.DataPort(), I8042DataPort, 1))
	require.NoError(t, bus.Insert(k.CommandPort(), I8042CmdPort, 1))

	require.NoError(t, bus.Write(I8042CmdPort, []byte{i8042SelfTest}))
	var b [1]byte
	require.NoError(t, bus.Read(I8042DataPort, b[:]))
	assert.Equal(t, byte(0x55), b[0])

	require.NoError(t, bus.Write(I8042CmdPort, []byte{0xfe}))
	assert.Equal(t, int64(1), resets.count())

	assert.ErrorIs(t, bus.Read(0x61, b[:]), devices.ErrNoDevice, "port 0x61 stays free")
}

func TestI8042UnsupportedAccesses(t *testing.T) {
	tests := []struct {
		name   string
		dev    func(*I8042) devices.Device
		offset uint64
		width  int
	}{
		{"undecoded port in the window", func(k *I8042) devices.Device { return k }, 2, 1},
		{"word access", func(k *I8042) devices.Device { return k }, I8042CommandOffset, 2},
		{"past the window", func(k *I8042) devices.Device { return k }, I8042Size, 1},
		{"view: offset 1", (*I8042).CommandPort, 1, 1},
		{"view: word", (*I8042).DataPort, 0, 2},
		{"view: huge offset", (*I8042).CommandPort, ^uint64(0), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resets counter
			k := NewI8042(resets.inc)
			d := tt.dev(k)
			data := make([]byte, tt.width)
			require.NoError(t, d.Read(tt.offset, data))
			for _, b := range data {
				assert.Equal(t, byte(0xff), b)
			}
			fill := make([]byte, tt.width)
			for i := range fill {
				fill[i] = 0xfe
			}
			require.NoError(t, d.Write(tt.offset, fill))
			assert.Zero(t, resets.count())
		})
	}
}
