package boot_test

import (
	"debug/elf"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
)

// FuzzLoad feeds arbitrary kernel files to Load. Whatever the bytes, Load
// must return a result or one of its documented errors, never panic, and a
// result must respect the layout. Run with
//
//	go test ./boot -run '^$' -fuzz FuzzLoad -fuzztime 60s
//
// Without -fuzz, the seeds below run as an ordinary test.
func FuzzLoad(f *testing.F) {
	code := make([]byte, 256)
	bz := defaultBz()
	bz.protected = 512
	f.Add(makeBzImage(bz))
	bz.relocatable = false
	f.Add(makeBzImage(bz))
	bz.version = 0x0205
	f.Add(makeBzImage(bz))
	f.Add(makeBzImage(bz)[:0x264])
	f.Add(makeELF(0x200000, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, data: code}, elfSegment{typ: elf.PT_NOTE, data: xenNote(0x200010, 4), align: 4}))
	f.Add(makeELF(0x200000, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, data: code}, elfSegment{typ: elf.PT_NOTE, data: xenNote(0x200010, 8), align: 8}))
	f.Add(makeELF(0xffffffff80200000, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, vaddr: 0xffffffff80200000, data: code, memsz: 1 << 20}))
	f.Add(makeELF(0x200000, elfSegment{typ: elf.PT_LOAD, paddr: 0x200000, data: code}, elfSegment{typ: elf.PT_LOAD, paddr: 0x300000, data: code}))
	f.Add([]byte(elf.ELFMAG))
	f.Add([]byte("MZ"))
	f.Add([]byte{})

	ram := []boot.Region{{Size: 64 << 20}}
	f.Fuzz(func(t *testing.T, kernel []byte) {
		mem := newSparseMemory(ram...)
		res, err := boot.Load(mem, boot.Config{Kernel: kernel, Initrd: []byte("initrd"), Cmdline: "console=ttyS0", RAM: ram, CPUs: 2})
		if err != nil {
			known := []error{boot.ErrNotKernel, boot.ErrUnsupportedKernel, boot.ErrCorruptKernel, boot.ErrNoRoom, boot.ErrInitrdTooLarge, boot.ErrCmdlineTooLong}
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("undocumented error: %v", err)
		}
		require.NotNil(t, res)
		assert.GreaterOrEqual(t, res.Kernel.GuestAddr, boot.HighMemStart, "kernel below 1 MiB")
		assert.LessOrEqual(t, res.Kernel.End(), ram[0].End(), "kernel past RAM")
		assert.True(t, res.Entry >= res.Kernel.GuestAddr && res.Entry < res.Kernel.End(), "entry %#x outside kernel %+v", res.Entry, res.Kernel)
		assert.True(t, res.Initrd.End() <= res.Kernel.GuestAddr || res.Initrd.GuestAddr >= res.Kernel.End(), "initrd %+v overlaps kernel %+v", res.Initrd, res.Kernel)
		assert.Equal(t, res.Entry, res.CPU.RIP)
	})
}
