package kvm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampleCPUID is a small list in the shape KVM returns: leaf 1 without a
// significant index, leaf 7 and 0xd with subleaves.
func sampleCPUID() *CPUID {
	return &CPUID{Entries: []CPUIDEntry{
		{Function: 0, EAX: 0xd, EBX: 0x68747541},
		{Function: 1, EAX: 0x00a00f11, ECX: 0x0, EDX: 0x178bfbff},
		{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x219c97a9},
		{Function: 7, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0x10},
		{Function: 0xd, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0x7},
		{Function: 0xd, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0xf},
	}}
}

func TestCPUIDFind(t *testing.T) {
	tests := []struct {
		name            string
		function, index uint32
		wantOK          bool
		wantEAX         uint32
	}{
		{"leaf without significant index ignores index", 1, 5, true, 0x00a00f11},
		{"subleaf 0", 7, 0, true, 0},
		{"subleaf 1", 7, 1, true, 0x10},
		{"missing subleaf", 7, 2, false, 0},
		{"missing leaf", 0x80000000, 0, false, 0},
		{"xsave subleaf 1", 0xd, 1, true, 0xf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := sampleCPUID().Find(tt.function, tt.index)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				assert.Equal(t, tt.wantEAX, e.EAX)
			}
		})
	}
}

func TestCPUIDFindReturnsPointerIntoList(t *testing.T) {
	c := sampleCPUID()
	e, ok := c.Find(1, 0)
	require.True(t, ok)
	e.ECX = 42
	assert.Equal(t, uint32(42), c.Entries[1].ECX)
}

func TestCPUIDBits(t *testing.T) {
	const hypervisor = 1 << 31
	tests := []struct {
		name            string
		edit            func(c *CPUID) error
		function, index uint32
		reg             CPUIDRegister
		want            uint32
		wantErr         error
	}{
		{"set bit", func(c *CPUID) error { return c.SetBits(1, 0, ECX, hypervisor) }, 1, 0, ECX, hypervisor, nil},
		{"set keeps other bits", func(c *CPUID) error { return c.SetBits(1, 0, EDX, 1) }, 1, 0, EDX, 0x178bfbff, nil},
		{"clear bits", func(c *CPUID) error { return c.ClearBits(1, 0, EDX, 0xff) }, 1, 0, EDX, 0x178bfb00, nil},
		{"clear only the given subleaf", func(c *CPUID) error { return c.ClearBits(7, 1, EAX, 0x10) }, 7, 1, EAX, 0, nil},
		{"other subleaf untouched", func(c *CPUID) error { return c.ClearBits(7, 1, EAX, 0x10) }, 7, 0, EBX, 0x219c97a9, nil},
		{"set register", func(c *CPUID) error { return c.SetRegister(0, 0, EBX, 0x1234) }, 0, 0, EBX, 0x1234, nil},
		{"missing leaf", func(c *CPUID) error { return c.SetBits(0x40000000, 0, EAX, 1) }, 0, 0, EAX, 0xd, ErrNotFound},
		{"missing subleaf", func(c *CPUID) error { return c.ClearBits(7, 9, EBX, 1) }, 7, 0, EBX, 0x219c97a9, ErrNotFound},
		{"bad register", func(c *CPUID) error { return c.SetBits(1, 0, CPUIDRegister(7), 1) }, 1, 0, EAX, 0x00a00f11, ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sampleCPUID()
			err := tt.edit(c)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			e, ok := c.Find(tt.function, tt.index)
			require.True(t, ok)
			assert.Equal(t, tt.want, e.Register(tt.reg))
		})
	}
}

func TestCPUIDHas(t *testing.T) {
	c := sampleCPUID()
	assert.True(t, c.Has(1, 0, EDX, 0x3))
	assert.False(t, c.Has(1, 0, EDX, 0x3|1<<10), "bit 10 is clear")
	assert.False(t, c.Has(0x80000001, 0, EDX, 1))
}

func TestCPUIDSet(t *testing.T) {
	c := sampleCPUID()
	n := len(c.Entries)

	c.Set(CPUIDEntry{Function: 1, EAX: 0x1111})
	assert.Len(t, c.Entries, n, "replaces leaf 1")
	assert.Equal(t, uint32(0x1111), c.Entries[1].EAX)

	c.Set(CPUIDEntry{Function: 7, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0x2222})
	assert.Len(t, c.Entries, n, "replaces subleaf 7.1")
	e, _ := c.Find(7, 1)
	assert.Equal(t, uint32(0x2222), e.EAX)
	e, _ = c.Find(7, 0)
	assert.Equal(t, uint32(0x219c97a9), e.EBX, "7.0 untouched")

	c.Set(CPUIDEntry{Function: 7, Index: 2, Flags: CPUIDFlagSignificantIndex, EAX: 3})
	assert.Len(t, c.Entries, n+1, "appends new subleaf 7.2")

	c.Set(CPUIDEntry{Function: 0x40000000, EAX: 0x40000001})
	assert.Len(t, c.Entries, n+2, "appends new leaf")
	assert.True(t, c.Has(0x40000000, 0, EAX, 0x40000001))
}

func TestCPUIDFilterAndRemove(t *testing.T) {
	c := sampleCPUID()
	// Keep only basic leaves up to 7 and zero leaf 1's ECX on the way.
	c.Filter(func(e *CPUIDEntry) bool {
		if e.Function == 1 {
			e.ECX = 0xffff
		}
		return e.Function <= 7
	})
	require.Len(t, c.Entries, 4)
	assert.Equal(t, []uint32{0, 1, 7, 7}, functions(c))
	assert.True(t, c.Has(1, 0, ECX, 0xffff))

	assert.Equal(t, 2, c.Remove(7))
	assert.Equal(t, []uint32{0, 1}, functions(c))
	assert.Equal(t, 0, c.Remove(7))
}

func TestCPUIDClone(t *testing.T) {
	c := sampleCPUID()
	d := c.Clone()
	require.NoError(t, d.SetBits(1, 0, ECX, 1))
	assert.False(t, c.Has(1, 0, ECX, 1), "clone shares no entries")
	assert.True(t, d.Has(1, 0, ECX, 1))
}

func TestCPUIDRegisterString(t *testing.T) {
	assert.Equal(t, "ECX", ECX.String())
	assert.Equal(t, "CPUIDRegister(9)", CPUIDRegister(9).String())
}

func functions(c *CPUID) []uint32 {
	var fs []uint32
	for _, e := range c.Entries {
		fs = append(fs, e.Function)
	}
	return fs
}
