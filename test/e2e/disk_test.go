package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/testutil"
)

// sparseImage makes a sparse raw image of size bytes.
func sparseImage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return p
}

// A write the guest flushed is on the host's image once wisp has exited.
func TestDiskWriteFlushReadOnHost(t *testing.T) {
	requireQEMU(t)
	img := sparseImage(t, "data.img", 64<<20)
	r := wisp(t, "", args("--disk", img, "--", "sh", "-c",
		"printf wisp-was-here > /tmp/p && dd if=/tmp/p of=/dev/vda bs=512 seek=2048 conv=fsync,sync 2>/dev/null && cat /sys/block/vda/size")...)
	require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	assert.Equal(t, "131072", strings.TrimSpace(r.stdout), "the guest sees 64 MiB in 512-byte sectors")
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	assert.Equal(t, "wisp-was-here", string(data[2048*512:2048*512+13]))
}

// A read-only disk is read-only in the guest, and writes never reach it.
func TestReadOnlyDiskRejectsWrites(t *testing.T) {
	requireQEMU(t)
	img := sparseImage(t, "ro.img", 8<<20)
	require.NoError(t, os.WriteFile(img, []byte("original"), 0o644))
	require.NoError(t, os.Truncate(img, 8<<20))
	r := wisp(t, "", args("--disk", img+",ro", "--", "sh", "-c",
		"cat /sys/block/vda/ro; head -c 8 /dev/vda; echo; if echo x | dd of=/dev/vda conv=fsync 2>/dev/null; then echo write-ok; else echo write-refused; fi")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "1\noriginal\nwrite-refused\n", r.stdout)
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	assert.Equal(t, "original", string(data[:8]))
}

// Disks appear in the order given, with their serials.
func TestTwoDisksWithSerials(t *testing.T) {
	requireQEMU(t)
	a := sparseImage(t, "a.img", 4<<20)
	b := sparseImage(t, "b.img", 8<<20)
	r := wisp(t, "", args("--disk", a+",serial=alpha", "--disk", b+",serial=beta,ro", "--", "sh", "-c",
		"for d in vda vdb; do echo $d $(cat /sys/block/$d/serial) $(cat /sys/block/$d/size) $(cat /sys/block/$d/ro); done")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "vda alpha 8192 0\nvdb beta 16384 1\n", r.stdout)
}

// A second VM may not open an image another VM is writing.
func TestSecondRunOnSameImageRefused(t *testing.T) {
	requireQEMU(t)
	img := sparseImage(t, "shared.img", 4<<20)
	first := exec.Command(wispBin, args("--disk", img, "--", "sh", "-c", "echo ready; sleep 600")...)
	out := &testutil.SyncBuffer{}
	first.Stdout, first.Stderr = out, out
	require.NoError(t, first.Start())
	defer func() {
		_ = first.Process.Signal(syscall.SIGTERM)
		_ = first.Wait()
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "ready") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Contains(t, out.String(), "ready", "the first VM booted")

	r := wisp(t, "", args("--disk", img, "--", "true")...)
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "in use")
	assert.Contains(t, r.stderr, img)
	assert.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)

	// Read-only sharing is refused too while a writer holds the image.
	r = wisp(t, "", args("--disk", img+",ro", "--", "true")...)
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "in use")
}

// An ext4 disk becomes the root filesystem with root=/dev/vda.
func TestExt4RootFromDisk(t *testing.T) {
	requireQEMU(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("SKIP: no busybox (apt-get install busybox-static) to put in the root filesystem")
	}
	tree := t.TempDir()
	for _, d := range []string{"bin", "dev", "proc", "sys", "run", "etc", "tmp"} {
		require.NoError(t, os.MkdirAll(filepath.Join(tree, d), 0o755))
	}
	bb, err := os.ReadFile(busybox)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tree, "bin", "busybox"), bb, 0o755))
	for _, l := range []string{"sh", "cat", "mount", "echo"} {
		require.NoError(t, os.Symlink("busybox", filepath.Join(tree, "bin", l)))
	}
	require.NoError(t, os.WriteFile(filepath.Join(tree, "etc", "marker"), []byte("root-from-disk\n"), 0o644))
	img := filepath.Join(t.TempDir(), "root.ext4")
	out, err := exec.Command("mkfs.ext4", "-q", "-L", "wisproot", "-d", tree, img, "32M").CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, root := range []string{"/dev/vda", "LABEL=wisproot"} {
		t.Run(root, func(t *testing.T) {
			r := wisp(t, "", args("--disk", img, "--cmdline", "console=ttyS0 reboot=k panic=-1 quiet root="+root+" rw",
				"--", "sh", "-c", "cat /etc/marker; echo written > /etc/new; mount | grep ' / '")...)
			require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
			assert.Contains(t, r.stdout, "root-from-disk\n")
			assert.Contains(t, r.stdout, "/dev/vda on / type ext4 (rw")
		})
	}
	// What the guest wrote is in the image.
	dump, err := exec.Command("debugfs", "-R", "cat /etc/new", img).Output()
	require.NoError(t, err)
	assert.Equal(t, "written\n", string(dump))
}

// The guest's hardware RNG is wisp's virtio-rng.
func TestGuestReadsHWRNG(t *testing.T) {
	requireQEMU(t)
	r := wisp(t, "", args("--", "sh", "-c", "cat /sys/class/misc/hw_random/rng_current; head -c 64 /dev/hwrng | od -An -tx1 | wc -w")...)
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Fields(r.stdout)
	require.Len(t, lines, 2, r.stdout)
	assert.True(t, strings.HasPrefix(lines[0], "virtio_rng"), lines[0])
	assert.Equal(t, "64", lines[1])
}

// Bad --disk and --net values get one line and exit code 2, before
// anything starts.
func TestBadDeviceFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing image", []string{"--disk", filepath.Join(dir, "nope.img")}, "no such file"},
		{"directory", []string{"--disk", dir}, "not a regular file"},
		{"unknown disk option", []string{"--disk", "x.img,cache=none"}, "unknown option"},
		{"unknown net mode", []string{"--net", "bridge"}, "unknown mode"},
		{"bad mac", []string{"--net", "user,mac=zz"}, "six hex bytes"},
		{"bad forward", []string{"--net", "user,hostfwd=tcp:22"}, "want PROTO"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := wisp(t, "", args(append(tc.args, "--", "true")...)...)
			assert.Equal(t, 2, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			assert.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
		})
	}
}

// bootSector is a 16-bit MBR boot sector: it prints msg on COM1 and powers
// the machine off through ACPI PM1a_CNT (0x604 on QEMU's q35, S5 = type 0).
func bootSector(msg string) []byte {
	code := []byte{
		0x31, 0xc0, // xor ax, ax
		0x8e, 0xd8, // mov ds, ax
		0xbe, 0, 0, // mov si, msg (patched below)
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xac,       // loop: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz done
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp loop
		0xba, 0x04, 0x06, // done: mov dx, 0x604
		0xb8, 0x00, 0x20, // mov ax, SLP_EN
		0xef,             // out dx, ax
		0xf4, 0xeb, 0xfd, // hlt; jmp hlt
	}
	at := 0x7c00 + len(code)
	code[5], code[6] = byte(at), byte(at>>8)
	sector := make([]byte, 512)
	copy(sector, append(code, append([]byte(msg), 0)...))
	sector[510], sector[511] = 0x55, 0xaa
	return sector
}

// --boot firmware: SeaBIOS reads the boot sector from wisp's disk (over
// vhost-user) and runs it.
func TestBootFirmwareFromDisk(t *testing.T) {
	requireQEMU(t)
	img := sparseImage(t, "mbr.img", 1<<20)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(bootSector("wisp-mbr-ok\r\n"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	r := wisp(t, "", args("--boot", "firmware", "--disk", img)...)
	require.Equal(t, 0, r.code, "stdout: %q\nstderr: %s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "SeaBIOS")
	assert.Contains(t, r.stdout, "wisp-mbr-ok\r\n")

	r = wisp(t, "", "run", "--boot", "firmware", "--", "true")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--boot firmware: needs a disk with a bootloader")
	r = wisp(t, "", "run", "--boot", "firmware", "--accel", "kvm", "--disk", img)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--accel kvm: firmware boot runs on the TCG backend")
}
