package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/test/fixtures"
)

// hostileQcow2Header is what a guest writes into its raw disk to make the
// host read backing as that disk: a valid qcow2 v3 header (64 KiB
// clusters, an empty L1 table at 64 KiB, which the sparse disk reads as
// zeros) naming backing and declaring it raw, so only wisp's format rule
// and backing-file policy stand in the way.
func hostileQcow2Header(backing string, size uint64) []byte {
	h := make([]byte, 4096)
	be := binary.BigEndian
	be.PutUint32(h[0:], 0x514649fb) // "QFI\xfb"
	be.PutUint32(h[4:], 3)          // version
	be.PutUint64(h[8:], 1024)       // backing_file_offset
	be.PutUint32(h[16:], uint32(len(backing)))
	be.PutUint32(h[20:], 16) // cluster_bits
	be.PutUint64(h[24:], size)
	be.PutUint32(h[36:], uint32((size+(512<<20)-1)/(512<<20))) // l1_size
	be.PutUint64(h[40:], 1<<16)                                // l1_table_offset
	be.PutUint64(h[48:], 2<<16)                                // refcount_table_offset
	be.PutUint32(h[56:], 1)                                    // refcount_table_clusters
	be.PutUint32(h[96:], 4)                                    // refcount_order
	be.PutUint32(h[100:], 104)                                 // header_length
	be.PutUint32(h[104:], 0xe2792aca)                          // backing format extension
	be.PutUint32(h[108:], 3)
	copy(h[112:], "raw")
	copy(h[1024:], backing)
	return h
}

// hostSecret makes a file only the host should read, in a directory of its
// own, and returns its path and contents.
func hostSecret(t *testing.T) (path, secret string) {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	secret = "wisp-host-secret-" + hex.EncodeToString(b)
	path = filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(path, []byte(strings.Repeat(secret+"\n", 1<<12)), 0o600))
	return path, secret
}

// readBack prints the text in the guest's view of its disk's first MiB:
// the header the guest wrote holds the backing file's name ("shadow").
const readBack = "head -c 1048576 /dev/vda | strings; echo read-back-done"

// A guest writes a qcow2 header naming a host file into its raw disk. On
// every later boot (--disk, --image, --vm) wisp either reads the disk as
// the raw bytes the guest wrote or refuses it in one line; the host file's
// contents never reach the guest.
func TestGuestWrittenQcow2HeaderNeverReadsHostFile(t *testing.T) {
	requireQEMU(t)
	secretPath, secret := hostSecret(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.img")
	require.NoError(t, os.WriteFile(disk, nil, 0o644))
	require.NoError(t, os.Truncate(disk, 64<<20))
	// The header travels to the guest on a second, read-only disk; it
	// starts with the qcow2 magic, so it is declared raw.
	hdrDisk := filepath.Join(dir, "header.img")
	require.NoError(t, os.WriteFile(hdrDisk, hostileQcow2Header(secretPath, 64<<20), 0o644))
	require.NoError(t, os.Truncate(hdrDisk, 1<<20))

	r := wisp(t, "", args("--disk", disk, "--disk", hdrDisk+",ro,format=raw", "--",
		"sh", "-c", "dd if=/dev/vdb of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null && echo header-written")...)
	require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	require.Contains(t, r.stdout, "header-written")
	got, err := os.ReadFile(disk)
	require.NoError(t, err)
	require.Equal(t, "QFI\xfb", string(got[:4]), "the guest could write the header")

	// The same attack with a relative name that climbs out of the disk's
	// directory, written on the host to stand for the guest's write.
	relDisk := filepath.Join(t.TempDir(), "r.img")
	rel, err := filepath.Rel(filepath.Dir(relDisk), secretPath)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rel, "../"), rel)
	require.NoError(t, os.WriteFile(relDisk, hostileQcow2Header(rel, 64<<20), 0o644))
	require.NoError(t, os.Truncate(relDisk, 64<<20))

	refused := func(t *testing.T, r result, want string) {
		t.Helper()
		assert.Equal(t, 2, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
		assert.Contains(t, r.stderr, want)
		assert.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
	}
	for _, d := range []string{disk, relDisk} {
		t.Run(filepath.Base(d), func(t *testing.T) {
			t.Run("disk by name", func(t *testing.T) {
				r := wisp(t, "", args("--disk", d, "--", "sh", "-c", readBack)...)
				refused(t, r, "starts with a qcow2 header but is used as raw")
				assert.NotContains(t, r.stdout+r.stderr, secret)
			})
			t.Run("disk declared raw", func(t *testing.T) {
				r := wisp(t, "", args("--disk", d+",format=raw", "--", "sh", "-c", readBack)...)
				require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
				assert.Contains(t, r.stdout, "shadow", "the guest reads its own bytes: the name it wrote")
				assert.Contains(t, r.stdout, "read-back-done")
				assert.NotContains(t, r.stdout+r.stderr, secret)
			})
			t.Run("disk declared qcow2", func(t *testing.T) {
				r := wisp(t, "", args("--disk", d+",format=qcow2", "--", "sh", "-c", readBack)...)
				refused(t, r, "backing files are off")
				assert.NotContains(t, r.stdout+r.stderr, secret)
			})
			t.Run("disk declared qcow2 with backing=on", func(t *testing.T) {
				r := wisp(t, "", args("--disk", d+",format=qcow2,backing=on", "--", "sh", "-c", readBack)...)
				refused(t, r, "is outside")
				assert.NotContains(t, r.stdout+r.stderr, secret)
			})
			t.Run("image", func(t *testing.T) {
				r := wisp(t, "", args("--image", d)...)
				refused(t, r, "starts with a qcow2 header but is used as raw")
				assert.NotContains(t, r.stdout+r.stderr, secret)
			})
		})
	}

	// A machine directory whose vm.json declares the disk raw boots it as
	// raw: the guest (the default guest's shell) reads its own bytes.
	t.Run("vm", func(t *testing.T) {
		k := fixtures.DebianKernel(t)
		initrd := fixtures.DefaultInitramfs(t, k)
		vm := filepath.Join(dir, "vm")
		require.NoError(t, os.Mkdir(vm, 0o755))
		for src, name := range map[string]string{k.Image: "vmlinuz", initrd: "initrd.img"} {
			b, err := os.ReadFile(src)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(vm, name), b, 0o644))
		}
		require.NoError(t, os.Rename(disk, filepath.Join(vm, "d.img")))
		desc, err := json.Marshal(map[string]any{
			"cpus": 1, "memory": "256M", "kernel": "vmlinuz", "initrd": "initrd.img",
			"cmdline": "console=ttyS0 reboot=k panic=-1",
			"disks":   []map[string]string{{"path": "d.img", "format": "raw"}},
		})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(vm, "vm.json"), desc, 0o644))
		// The first line may lose characters typed before the shell is up.
		r := wisp(t, "true; true; true\n"+readBack+"; poweroff -f\n", "run", "--accel", "tcg", "--vm", vm)
		require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
		assert.Contains(t, r.stdout, "shadow", "the guest reads its own bytes: the name it wrote")
		assert.Contains(t, r.stdout, "read-back-done")
		assert.NotContains(t, r.stdout+r.stderr, secret)
	})
}
