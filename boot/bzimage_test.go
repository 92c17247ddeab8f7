package boot_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/boot"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

// Zero page offsets the tests check (arch/x86/include/uapi/asm/bootparam.h).
const (
	zpACPIRSDP     = 0x070
	zpExtRamdisk   = 0x0c0
	zpExtRamdiskSz = 0x0c4
	zpExtCmdline   = 0x0c8
	zpE820Entries  = 0x1e8
	zpBootFlag     = 0x1fe
	zpHeader       = 0x202
	zpVersion      = 0x206
	zpTypeOfLoader = 0x210
	zpCode32Start  = 0x214
	zpRamdiskImage = 0x218
	zpRamdiskSize  = 0x21c
	zpCmdLinePtr   = 0x228
	zpCmdlineSize  = 0x238
	zpE820Table    = 0x2d0
)

// zeroPageE820 decodes the zero page's e820 table.
func zeroPageE820(zp []byte) []boot.E820Entry {
	le := binary.LittleEndian
	var out []boot.E820Entry
	for i := range int(zp[zpE820Entries]) {
		e := zp[zpE820Table+20*i:]
		out = append(out, boot.E820Entry{Addr: le.Uint64(e), Size: le.Uint64(e[8:]), Type: boot.E820Type(le.Uint32(e[16:]))})
	}
	return out
}

func TestDebianBzImage(t *testing.T) {
	kernel := readKernel(t)
	le := binary.LittleEndian
	setupSize := (uint64(kernel[0x1f1]) + 1) * 512
	protected := kernel[setupSize:]
	prefAddress := le.Uint64(kernel[0x258:])
	initSize := uint64(le.Uint32(kernel[0x260:]))
	initrdMax := uint64(le.Uint32(kernel[0x22c:]))
	require.Equal(t, "HdrS", string(kernel[0x202:0x206]), "test kernel is not a bzImage")

	tests := []struct {
		name       string
		ram        uint64
		initrd     uint64
		wantInitrd func(kernelEnd uint64) uint64 // expected initrd address
		wantE820   []boot.E820Entry
	}{
		{
			name:       "256 MiB, initrd at the top of RAM",
			ram:        256 * mib,
			initrd:     4*mib + 123,
			wantInitrd: func(uint64) uint64 { return (256*mib - (4*mib + 123)) &^ 0xfff },
			wantE820: []boot.E820Entry{
				{Addr: 0, Size: 0x9fc00, Type: boot.E820RAM},
				{Addr: 0x9fc00, Size: 0x100000 - 0x9fc00, Type: boot.E820Reserved},
				{Addr: mib, Size: 255 * mib, Type: boot.E820RAM},
				{Addr: 0xe8000000, Size: mib, Type: boot.E820Reserved},
			},
		},
		{
			name:       "5 GiB across the PCI hole, initrd below initrd_addr_max",
			ram:        5 * gib,
			initrd:     8 * mib,
			wantInitrd: func(uint64) uint64 { return (initrdMax + 1 - 8*mib) &^ 0xfff },
			wantE820: []boot.E820Entry{
				{Addr: 0, Size: 0x9fc00, Type: boot.E820RAM},
				{Addr: 0x9fc00, Size: 0x100000 - 0x9fc00, Type: boot.E820Reserved},
				{Addr: mib, Size: 3*gib - mib, Type: boot.E820RAM},
				{Addr: 0xe8000000, Size: mib, Type: boot.E820Reserved},
				{Addr: 4 * gib, Size: 2 * gib, Type: boot.E820RAM},
			},
		},
		{
			name:   "small guest: initrd below the kernel",
			ram:    prefAddress + initSize + 4*mib,
			initrd: 12 * mib,
			// Above the kernel there are only ~4 MiB, so it goes under it.
			wantInitrd: func(uint64) uint64 { return prefAddress - 12*mib },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, ram := guestRAM(t, tt.ram)
			initrd := bytes.Repeat([]byte("initrd!"), int(tt.initrd/7+1))[:tt.initrd]
			const cmdline = "console=ttyS0 root=/dev/vda rw"
			res, err := boot.Load(mem, boot.Config{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, RAM: ram, CPUs: 2})
			require.NoError(t, err)

			assert.Equal(t, boot.FormatBzImage, res.Format)
			// Relocatable Debian kernel: loaded at its preferred address,
			// owning init_size bytes from there.
			assert.Equal(t, boot.Region{GuestAddr: prefAddress, Size: initSize}, res.Kernel)
			assert.Equal(t, prefAddress+0x200, res.Entry, "64-bit entry = load address + 0x200")
			assert.True(t, bytes.Equal(protected, read(t, mem, prefAddress, uint64(len(protected)))), "protected-mode kernel not at its load address")

			zp := read(t, mem, boot.ZeroPageAddr, 4096)
			// The kernel's setup header comes back with only the
			// loader's fields changed.
			wantHdr := append([]byte(nil), kernel[:0x26c]...)
			wantHdr[zpTypeOfLoader] = 0xff
			le.PutUint32(wantHdr[zpCode32Start:], uint32(prefAddress))
			le.PutUint32(wantHdr[zpRamdiskImage:], uint32(res.Initrd.GuestAddr))
			le.PutUint32(wantHdr[zpRamdiskSize:], uint32(tt.initrd))
			le.PutUint32(wantHdr[zpCmdLinePtr:], uint32(boot.CmdlineAddr))
			assert.Equal(t, wantHdr[0x1f1:], zp[0x1f1:0x26c], "setup header in the zero page")
			assert.Equal(t, uint64(boot.ACPIAddr), le.Uint64(zp[zpACPIRSDP:]), "acpi_rsdp_addr")
			assert.Equal(t, res.RSDP, uint64(boot.ACPIAddr))
			assert.Zero(t, le.Uint32(zp[zpExtRamdisk:]), "ext_ramdisk_image")
			assert.Zero(t, le.Uint32(zp[zpExtCmdline:]), "ext_cmd_line_ptr")
			assert.Equal(t, cmdline+"\x00", string(read(t, mem, boot.CmdlineAddr, uint64(len(cmdline)+1))))

			// The initrd: where expected, intact, page aligned, clear of
			// the kernel, below initrd_addr_max.
			assert.Equal(t, tt.wantInitrd(res.Kernel.End()), res.Initrd.GuestAddr)
			assert.Equal(t, tt.initrd, res.Initrd.Size)
			assert.Zero(t, res.Initrd.GuestAddr%4096)
			assert.LessOrEqual(t, res.Initrd.End()-1, initrdMax)
			assert.True(t, res.Initrd.End() <= res.Kernel.GuestAddr || res.Initrd.GuestAddr >= res.Kernel.End(), "initrd %+v overlaps kernel %+v", res.Initrd, res.Kernel)
			assert.True(t, bytes.Equal(initrd, read(t, mem, res.Initrd.GuestAddr, tt.initrd)), "initrd contents")

			if tt.wantE820 != nil {
				assert.Equal(t, tt.wantE820, res.E820)
			}
			assert.Equal(t, res.E820, zeroPageE820(zp), "zero page e820 table")

			assertLong64(t, mem, res, boot.ZeroPageAddr)
			assertTables(t, mem, res, 2)
		})
	}
}

func TestDebianBzImageDoesNotFit(t *testing.T) {
	kernel := readKernel(t)
	le := binary.LittleEndian
	need := le.Uint64(kernel[0x258:]) + uint64(le.Uint32(kernel[0x260:]))

	mem, ram := guestRAM(t, need-8*mib)
	_, err := boot.Load(mem, boot.Config{Kernel: kernel, RAM: ram, CPUs: 1})
	assert.ErrorIs(t, err, boot.ErrNoRoom, "kernel needs %#x bytes of RAM", need)

	// Room for the kernel, but not for a 64 MiB initrd on either side of it.
	mem, ram = guestRAM(t, need+8*mib)
	_, err = boot.Load(mem, boot.Config{Kernel: kernel, Initrd: make([]byte, 64*mib), RAM: ram, CPUs: 1})
	assert.ErrorIs(t, err, boot.ErrInitrdTooLarge)
}

func TestDebianBzImageTruncated(t *testing.T) {
	kernel := readKernel(t)
	mem, ram := guestRAM(t, 256*mib)
	setupSize := (uint64(kernel[0x1f1]) + 1) * 512
	for _, n := range []uint64{0, 1, 0x1f1, 0x205, 0x263, 0x264, 0x400, setupSize, setupSize + 1, uint64(len(kernel)) / 2, uint64(len(kernel)) - 4096} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			_, err := boot.Load(mem, boot.Config{Kernel: kernel[:n], RAM: ram, CPUs: 1})
			require.Error(t, err)
			if n >= 0x206 {
				assert.ErrorIs(t, err, boot.ErrCorruptKernel)
			} else {
				assert.ErrorIs(t, err, boot.ErrNotKernel)
			}
		})
	}
}

func TestSyntheticBzImage(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name    string
		edit    func(*bzOptions)
		raw     func([]byte) []byte
		cmdline string
		initrd  uint64
		ram     uint64
		wantErr error
		wantMsg string
		check   func(t *testing.T, mem boot.Memory, res *boot.Result)
	}{
		{name: "loads at pref_address", check: func(t *testing.T, mem boot.Memory, res *boot.Result) {
			assert.Equal(t, 16*mib, res.Kernel.GuestAddr)
			assert.Equal(t, 16*mib+0x200, res.CPU.RIP)
		}},
		{name: "not relocatable: loads at 1 MiB, runs at pref_address", edit: func(o *bzOptions) { o.relocatable = false }, check: func(t *testing.T, mem boot.Memory, res *boot.Result) {
			assert.Equal(t, boot.Region{GuestAddr: mib, Size: 16*mib + 4*mib - mib}, res.Kernel)
			assert.Equal(t, mib+0x200, res.Entry)
			assert.Equal(t, uint32(mib), le.Uint32(read(t, mem, boot.ZeroPageAddr+zpCode32Start, 4)))
		}},
		{name: "misaligned pref_address: loads at 1 MiB", edit: func(o *bzOptions) { o.prefAddress = 16*mib + 4096 }, check: func(t *testing.T, mem boot.Memory, res *boot.Result) {
			assert.Equal(t, mib, res.Kernel.GuestAddr)
			assert.Equal(t, mib+0x200, res.Entry)
		}},
		{name: "setup_sects 0 means 4", edit: func(o *bzOptions) { o.setupSects = 0 }, check: func(t *testing.T, mem boot.Memory, res *boot.Result) {
			want := makeBzImage(func() bzOptions { o := defaultBz(); o.setupSects = 0; return o }())[5*512:]
			assert.Equal(t, want, read(t, mem, res.Kernel.GuestAddr, uint64(len(want))))
		}},
		{name: "initrd above 4 GiB when the low limit is too tight", edit: func(o *bzOptions) { o.initrdMax = uint32(32*mib - 1) }, initrd: 40 * mib, ram: 4*gib + 512*mib,
			check: func(t *testing.T, mem boot.Memory, res *boot.Result) {
				// memory.Layout puts the RAM past 3 GiB at 4 GiB.
				assert.GreaterOrEqual(t, res.Initrd.GuestAddr, 4*gib)
				zp := read(t, mem, boot.ZeroPageAddr, 4096)
				assert.Equal(t, uint32(res.Initrd.GuestAddr), le.Uint32(zp[zpRamdiskImage:]))
				assert.Equal(t, uint32(res.Initrd.GuestAddr>>32), le.Uint32(zp[zpExtRamdisk:]))
				assert.Equal(t, uint32(40*mib), le.Uint32(zp[zpRamdiskSize:]))
				assert.Zero(t, le.Uint32(zp[zpExtRamdiskSz:]))
			}},
		{name: "initrd too large for a kernel that stays below 4 GiB", edit: func(o *bzOptions) { o.initrdMax = uint32(32*mib - 1); o.xloadflags = 1 }, initrd: 40 * mib, ram: 4*gib + 512*mib, wantErr: boot.ErrInitrdTooLarge},
		{name: "command line at cmdline_size", edit: func(o *bzOptions) { o.cmdlineSize = 16 }, cmdline: "0123456789abcdef"},
		{name: "command line over cmdline_size", edit: func(o *bzOptions) { o.cmdlineSize = 16 }, cmdline: "0123456789abcdefg", wantErr: boot.ErrCmdlineTooLong},
		{name: "protocol 2.05", edit: func(o *bzOptions) { o.version = 0x0205 }, wantErr: boot.ErrUnsupportedKernel, wantMsg: "boot protocol 2.05 is older than 2.06"},
		{name: "protocol 2.11", edit: func(o *bzOptions) { o.version = 0x020b }, wantErr: boot.ErrUnsupportedKernel, wantMsg: "no xloadflags"},
		{name: "zImage", edit: func(o *bzOptions) { o.loadflags = 0 }, wantErr: boot.ErrUnsupportedKernel, wantMsg: "LOADED_HIGH"},
		{name: "no 64-bit entry", edit: func(o *bzOptions) { o.xloadflags = 0 }, wantErr: boot.ErrUnsupportedKernel, wantMsg: "XLF_KERNEL_64"},
		{name: "bad boot_flag", raw: func(b []byte) []byte { b[0x1fe] = 0; return b }, wantErr: boot.ErrCorruptKernel},
		{name: "setup larger than file", edit: func(o *bzOptions) { o.setupSects = 40 }, raw: func(b []byte) []byte { return b[:4096] }, wantErr: boot.ErrCorruptKernel},
		{name: "short header", edit: func(o *bzOptions) { o.headerJump = 0x20 }, wantErr: boot.ErrCorruptKernel},
		{name: "kernel_alignment not a power of two", edit: func(o *bzOptions) { o.kernelAlign = 3 << 20 }, wantErr: boot.ErrCorruptKernel},
		{name: "syssize beyond the file", raw: func(b []byte) []byte { le.PutUint32(b[0x1f4:], 1<<20); return b }, wantErr: boot.ErrCorruptKernel, wantMsg: "truncated"},
		{name: "init_size beyond RAM", edit: func(o *bzOptions) { o.initSize = 1 << 31 }, wantErr: boot.ErrNoRoom},
		{name: "pref_address below 1 MiB, not relocatable", edit: func(o *bzOptions) { o.relocatable = false; o.prefAddress = 0x10000 }, wantErr: boot.ErrNoRoom},
		{name: "pref_address + init_size overflows", edit: func(o *bzOptions) { o.relocatable = false; o.prefAddress = ^uint64(0) - 4096 }, wantErr: boot.ErrCorruptKernel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultBz()
			if tt.edit != nil {
				tt.edit(&o)
			}
			kernel := makeBzImage(o)
			if tt.raw != nil {
				kernel = tt.raw(kernel)
			}
			ram := tt.ram
			if ram == 0 {
				ram = 64 * mib
			}
			mem, regions := guestRAM(t, ram)
			res, err := boot.Load(mem, boot.Config{Kernel: kernel, Initrd: make([]byte, tt.initrd), Cmdline: tt.cmdline, RAM: regions, CPUs: 1})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Contains(t, err.Error(), tt.wantMsg)
				return
			}
			require.NoError(t, err)
			assertLong64(t, mem, res, boot.ZeroPageAddr)
			if tt.check != nil {
				tt.check(t, mem, res)
			}
		})
	}
}
