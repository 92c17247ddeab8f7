package kvm

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFlexBufferLayout(t *testing.T) {
	hdr, entries := flexBuffer[kvmMSRsHeader, MSR](3)
	require.Len(t, entries, 3)
	base := uintptr(unsafe.Pointer(hdr))
	assert.Zero(t, base%8, "8-byte aligned like the C struct")
	assert.Equal(t, base+unsafe.Sizeof(*hdr), uintptr(unsafe.Pointer(&entries[0])), "entries follow the header")
	entries[2] = MSR{Index: 0x10, Data: 7}
	last := (*MSR)(unsafe.Add(unsafe.Pointer(hdr), 8+2*16))
	assert.Equal(t, MSR{Index: 0x10, Data: 7}, *last)

	// kvm_msr_list: a 4-byte header with u32 entries right after it.
	lh, idx := flexBuffer[kvmMSRListHeader, uint32](2)
	assert.Equal(t, uintptr(unsafe.Pointer(lh))+4, uintptr(unsafe.Pointer(&idx[0])))

	hdr, entries = flexBuffer[kvmMSRsHeader, MSR](0)
	assert.NotNil(t, hdr)
	assert.Empty(t, entries)
}

func TestSliceAddr(t *testing.T) {
	b := make([]byte, 16)
	assert.Equal(t, uint64(uintptr(unsafe.Pointer(&b[0]))), sliceAddr(b))
	assert.Equal(t, uint64(uintptr(unsafe.Pointer(&b[4]))), sliceAddr(b[4:]))
	assert.Zero(t, sliceAddr(nil))
}
