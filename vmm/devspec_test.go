package vmm

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio/blk"
)

func TestParseDisk(t *testing.T) {
	tests := []struct {
		in      string
		want    Disk
		wantErr string
	}{
		{in: "root.img", want: Disk{Path: "root.img"}},
		{in: "root.img,ro", want: Disk{Path: "root.img", ReadOnly: true}},
		{in: "d.img,serial=data1,ro", want: Disk{Path: "d.img", ReadOnly: true, Serial: "data1"}},
		{in: "d.img,ro,rw", want: Disk{Path: "d.img"}},
		{in: "d.qcow2,format=qcow2", want: Disk{Path: "d.qcow2", Format: "qcow2"}},
		{in: "d.vmdk,format=vmdk", wantErr: `format "vmdk": want raw or qcow2`},
		{in: "", wantErr: "give the image path first"},
		{in: ",ro", wantErr: "give the image path first"},
		{in: "d.img,readonly", wantErr: `unknown option "readonly"`},
		{in: "d.img,serial=", wantErr: "want 1 to 20 characters"},
		{in: "d.img,serial=123456789012345678901", wantErr: "want 1 to 20 characters"},
		{in: "d.img,serial=a b", wantErr: "printable ASCII"},
		{in: "d.img,ro=1", wantErr: `unknown option "ro=1"`},
		{in: "d.qcow2,backing=on", want: Disk{Path: "d.qcow2", Backing: true}},
		{in: "d.qcow2,backing=on,backing=off", want: Disk{Path: "d.qcow2"}},
		{in: "d.qcow2,backing-dir=/srv/base", want: Disk{Path: "d.qcow2", Backing: true, BackingDir: "/srv/base"}},
		{in: "d.qcow2,backing=yes", wantErr: "want backing=on or backing=off"},
		{in: "d.qcow2,backing-dir=", wantErr: `unknown option "backing-dir="`},
		{in: "d.qcow2,backing=off,backing-dir=/srv", wantErr: "drop one"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDisk(tc.in)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.True(t, errors.Is(err, ErrInvalidConfig))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseNet(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	tests := []struct {
		in      string
		want    Net
		wantErr string
	}{
		{in: "tap", want: Net{Mode: NetTap}},
		{in: "tap:wisp0", want: Net{Mode: NetTap, Tap: "wisp0"}},
		{in: "tap:wisp0,mac=52:54:00:12:34:56,bridge=br0", want: Net{Mode: NetTap, Tap: "wisp0", MAC: mac, Bridge: "br0"}},
		{in: "user", want: Net{Mode: NetUser}},
		{in: "user,hostfwd=tcp:2222-:22", want: Net{Mode: NetUser, Forwards: []Forward{{Proto: "tcp", HostPort: 2222, GuestPort: 22}}}},
		{in: "user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5353-:53", want: Net{Mode: NetUser, Forwards: []Forward{
			{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80},
			{Proto: "udp", HostPort: 5353, GuestPort: 53},
		}}},
		{in: "bridge", wantErr: `unknown mode "bridge"`},
		{in: "tap:", wantErr: "want 1 to 15 characters"},
		{in: "tap:averyveryverylongname", wantErr: "want 1 to 15 characters"},
		{in: "user:x", wantErr: "user takes no name"},
		{in: "tap,mac=zz", wantErr: "six hex bytes"},
		{in: "tap,mac=01:00:5e:00:00:01", wantErr: "multicast"},
		{in: "tap,hostfwd=tcp:1-:2", wantErr: "unknown option"},
		{in: "user,bridge=br0", wantErr: "unknown option"},
		{in: "user,hostfwd=tcp:2222", wantErr: "want PROTO"},
		{in: "user,hostfwd=sctp:1-:2", wantErr: "want tcp or udp"},
		{in: "user,hostfwd=tcp:0-:22", wantErr: "host port"},
		{in: "user,hostfwd=tcp:70000-:22", wantErr: "host port"},
		{in: "user,hostfwd=tcp:host:1-:22", wantErr: "not an IP address"},
		{in: "user,hostfwd=tcp:2222-10.0.2.15:22", wantErr: "guest port"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseNet(tc.in)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.True(t, errors.Is(err, ErrInvalidConfig))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestRandomMACIsLocalUnicast(t *testing.T) {
	mac, err := RandomMAC()
	require.NoError(t, err)
	require.Len(t, mac, 6)
	assert.Zero(t, mac[0]&1, "unicast")
	assert.NotZero(t, mac[0]&2, "locally administered")
}

func TestValidateDevices(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))
	link := filepath.Join(dir, "link.img")
	require.NoError(t, os.Symlink(img, link))
	hostile := filepath.Join(dir, "guest.img")
	require.NoError(t, os.WriteFile(hostile, append([]byte("QFI\xfb"), make([]byte, 4092)...), 0o644))
	base := Config{CPUs: 1, MemoryBytes: DefaultMemory}.WithDefaults()
	tests := []struct {
		name      string
		disks     []Disk
		nets      []Net
		boot      BootMode
		kernel    string
		accel     Accel
		wantField string
		wantErr   string
		wantCause error
	}{
		{name: "one disk", disks: []Disk{{Path: img}}},
		{name: "missing", disks: []Disk{{Path: img}, {Path: filepath.Join(dir, "nope")}}, wantField: "Disks[1]", wantErr: "no such file", wantCause: os.ErrNotExist},
		{name: "directory", disks: []Disk{{Path: dir}}, wantField: "Disks[0]", wantErr: "not a regular file"},
		{name: "twice via symlink", disks: []Disk{{Path: img}, {Path: link, ReadOnly: true}}, wantField: "Disks[1]", wantErr: "given twice (also as " + img + ")"},
		{name: "tap twice", nets: []Net{{Mode: NetTap, Tap: "t0"}, {Mode: NetTap, Tap: "t0"}}, wantField: "Nets[1]", wantErr: "tap t0 is given twice"},
		{name: "two unnamed taps", nets: []Net{{Mode: NetTap}, {Mode: NetTap}}},
		{name: "unknown net mode", nets: []Net{{Mode: NetUser}, {Mode: "bridge"}}, wantField: "Nets[1]", wantErr: `unknown mode "bridge"`},
		{name: "firmware boot with a disk", boot: BootFirmware, disks: []Disk{{Path: img}}},
		{name: "firmware boot without a disk", boot: BootFirmware, wantField: "Boot", wantErr: "needs a disk with a bootloader"},
		{name: "firmware boot with a kernel", boot: BootFirmware, kernel: "k", disks: []Disk{{Path: img}}, wantField: "Boot", wantErr: "drop the kernel and initrd"},
		{name: "firmware boot on KVM", boot: BootFirmware, accel: AccelKVM, disks: []Disk{{Path: img}}, wantField: "Accel", wantErr: "use tcg or auto"},
		{name: "unknown boot mode", boot: "pxe", wantField: "Boot", wantErr: "use kernel or firmware"},
		{name: "raw name with a qcow2 header", disks: []Disk{{Path: hostile}}, wantField: "Disks[0]", wantErr: "starts with a qcow2 header but is used as raw", wantCause: blk.ErrFormatMismatch},
		{name: "declared raw with a qcow2 header", disks: []Disk{{Path: hostile, Format: FormatRaw}}},
		{name: "declared qcow2 without the header", disks: []Disk{{Path: img, Format: FormatQcow2}}, wantField: "Disks[0]", wantErr: "has no qcow2 header", wantCause: blk.ErrFormatMismatch},
		{name: "backing-dir not a directory", disks: []Disk{{Path: img, Backing: true, BackingDir: img}}, wantField: "Disks[0]", wantErr: "is not a directory"},
		{name: "bad serial", disks: []Disk{{Path: img, Serial: "has space"}}, wantField: "Disks[0]", wantErr: "printable ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Disks, c.Nets, c.Boot, c.Kernel = tc.disks, tc.nets, tc.boot, tc.kernel
			if tc.accel != "" {
				c.Accel = tc.accel
			}
			c = c.WithDefaults()
			err := c.ValidateMachine(0)
			if tc.wantErr == "" {
				require.NoError(t, err)
				for _, n := range c.Nets {
					assert.Len(t, n.MAC, 6)
				}
				return
			}
			require.ErrorIs(t, err, ErrInvalidConfig)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.wantField, fe.Field)
			assert.Contains(t, fe.Msg, tc.wantErr)
			assert.NotContains(t, err.Error(), "--", "a library error names fields, not flags")
			if tc.wantCause != nil {
				assert.ErrorIs(t, err, tc.wantCause)
			}
		})
	}

	t.Run("no MAC without WithDefaults", func(t *testing.T) {
		c := base
		c.Nets = []Net{{Mode: NetUser}}
		var fe *FieldError
		require.ErrorAs(t, c.ValidateMachine(0), &fe)
		assert.Equal(t, "Nets[0]", fe.Field)
		assert.Contains(t, fe.Msg, "no MAC address")
	})
}

func TestDiskFormat(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, append(data, make([]byte, 4096)...), 0o644))
		return p
	}
	magic := []byte("QFI\xfb")
	rawImg, qcowImg := write("r.img", nil), write("q.qcow2", magic)
	hostile, plainQcow := write("h.img", magic), write("p.qcow2", nil)
	tests := []struct {
		name, path, declared, want string
		err                        error
	}{
		{"raw by name", rawImg, "", FormatRaw, nil},
		{"qcow2 by name", qcowImg, "", FormatQcow2, nil},
		{"raw name, qcow2 header", hostile, "", "", blk.ErrFormatMismatch},
		{"declared raw wins", hostile, FormatRaw, FormatRaw, nil},
		{"declared qcow2", hostile, FormatQcow2, FormatQcow2, nil},
		{".qcow2 without header", plainQcow, "", "", blk.ErrFormatMismatch},
		{"declared qcow2 without header", rawImg, FormatQcow2, "", blk.ErrFormatMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DiskFormat(tt.path, tt.declared)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				require.ErrorIs(t, err, ErrInvalidConfig)
				assert.Contains(t, err.Error(), tt.path)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
