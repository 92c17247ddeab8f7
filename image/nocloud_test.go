package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/internal/stale"
)

// A real ed25519 public key (the private half was thrown away).
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFS8xxXhhxLTNyLZeHrlI2P4mXY8QdUOlGkGoirlda/1 wisp-test"

// readISO opens an ISO image with the library and returns its files.
func readISO(t *testing.T, path string) (*iso9660.FileSystem, map[string]string) {
	t.Helper()
	store, err := file.OpenFromPath(path, true)
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	st, err := os.Stat(path)
	require.NoError(t, err)
	fs, err := iso9660.Read(store, st.Size(), 0, 2048)
	require.NoError(t, err)
	entries, err := fs.ReadDir(".")
	require.NoError(t, err)
	files := map[string]string{}
	for _, e := range entries {
		b, err := fs.ReadFile(e.Name())
		require.NoError(t, err)
		files[e.Name()] = string(b)
	}
	return fs, files
}

func TestNoCloudSeed(t *testing.T) {
	dir := t.TempDir()
	userData := "#cloud-config\npackages: [htop]\n"
	path, err := NoCloudSeed(dir, SeedOptions{
		Hostname:   "box-1",
		InstanceID: "i-123",
		SSHKeys:    []string{testKey},
		UserData:   []byte(userData),
	})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, SeedFileName), path)

	fs, files := readISO(t, path)
	assert.Equal(t, SeedVolumeID, strings.TrimRight(fs.Label(), "\x00 "))
	require.Contains(t, files, "user-data", "Rock Ridge keeps the lowercase, hyphenated names cloud-init looks for")
	require.Contains(t, files, "meta-data")
	assert.Equal(t, userData, files["user-data"])

	var meta map[string]any
	require.NoError(t, json.Unmarshal([]byte(files["meta-data"]), &meta), "meta-data is JSON, which is YAML")
	assert.Equal(t, "i-123", meta["instance-id"])
	assert.Equal(t, "box-1", meta["local-hostname"])
	assert.Equal(t, []any{testKey}, meta["public-keys"])

	// No scratch files are left next to the seed.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// blkid, which cloud-init's ds-identify uses, sees the label too.
	if blkid, err := exec.LookPath("blkid"); err == nil {
		out, err := exec.Command(blkid, "-o", "value", "-s", "LABEL", path).Output()
		require.NoError(t, err)
		assert.Equal(t, SeedVolumeID, strings.TrimSpace(string(out)))
	} else {
		t.Log("blkid not installed: label checked with go-diskfs only")
	}
}

func TestNoCloudSeedDefaults(t *testing.T) {
	dir := t.TempDir()
	path, err := NoCloudSeed(dir, SeedOptions{})
	require.NoError(t, err)
	_, files := readISO(t, path)
	assert.True(t, strings.HasPrefix(files["user-data"], "#cloud-config\n"))
	var meta map[string]any
	require.NoError(t, json.Unmarshal([]byte(files["meta-data"]), &meta))
	id1, _ := meta["instance-id"].(string)
	assert.True(t, strings.HasPrefix(id1, "wisp-"), id1)
	assert.NotContains(t, meta, "local-hostname")

	// A different seed is a different instance; the same seed is the same.
	_, err = NoCloudSeed(dir, SeedOptions{Hostname: "other"})
	require.NoError(t, err)
	_, files = readISO(t, path)
	require.NoError(t, json.Unmarshal([]byte(files["meta-data"]), &meta))
	assert.NotEqual(t, id1, meta["instance-id"])
	_, err = NoCloudSeed(dir, SeedOptions{})
	require.NoError(t, err)
	_, files = readISO(t, path)
	require.NoError(t, json.Unmarshal([]byte(files["meta-data"]), &meta))
	assert.Equal(t, id1, meta["instance-id"])
}

func TestNoCloudSeedBad(t *testing.T) {
	tests := []struct {
		name string
		o    SeedOptions
		want string
	}{
		{"bad hostname", SeedOptions{Hostname: "under_score"}, "hostname"},
		{"bad key", SeedOptions{SSHKeys: []string{"ssh-ed25519 notbase64!"}}, "not base64"},
		{"private key", SeedOptions{SSHKeys: []string{"-----BEGIN OPENSSH PRIVATE KEY----- x"}}, "private key"},
		{"multi-line id", SeedOptions{InstanceID: "a\nb"}, "single line"},
		{"plain text user-data", SeedOptions{UserData: []byte("packages: [htop]\n")}, "#cloud-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := NoCloudSeed(dir, tt.o)
			require.ErrorIs(t, err, ErrBadSeed)
			assert.Contains(t, err.Error(), tt.want)
			entries, _ := os.ReadDir(dir)
			assert.Empty(t, entries, "nothing written")
		})
	}
}

func TestCheckAuthorizedKey(t *testing.T) {
	require.NoError(t, CheckAuthorizedKey(testKey))
	require.NoError(t, CheckAuthorizedKey(strings.TrimSuffix(testKey, " wisp-test")))
	for _, bad := range []string{
		"",
		"ssh-ed25519",
		"ssh-foo AAAA",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIFS8xxXhhxLTNyLZeHrlI2P4mXY8QdUOlGkGoirlda/1", // blob says ed25519
		testKey + "\nssh-rsa x",
	} {
		assert.Error(t, CheckAuthorizedKey(bad), bad)
	}
}

func TestReadAuthorizedKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(p, []byte("# mine\n\n"+testKey+"\n"), 0o644))
	keys, err := ReadAuthorizedKeys(p)
	require.NoError(t, err)
	assert.Equal(t, []string{testKey}, keys)

	require.NoError(t, os.WriteFile(p, []byte("# nothing\n"), 0o644))
	_, err = ReadAuthorizedKeys(p)
	assert.ErrorContains(t, err, "holds no public key")

	require.NoError(t, os.WriteFile(p, []byte(testKey+"\nbogus\n"), 0o644))
	_, err = ReadAuthorizedKeys(p)
	assert.ErrorContains(t, err, "line 2")
}

func TestCheckHostname(t *testing.T) {
	for _, good := range []string{"wisp", "a", "web-1.example.com", strings.Repeat("a", 63)} {
		assert.NoError(t, CheckHostname(good), good)
	}
	for _, bad := range []string{"", "-a", "a-", "a_b", "a..b", strings.Repeat("a", 64), "a b"} {
		assert.Error(t, CheckHostname(bad), bad)
	}
}

func TestNoCloudSeedMemory(t *testing.T) {
	userData := "#cloud-config\npackages: [htop]\n"
	f, err := NoCloudSeedMemory(SeedOptions{Hostname: "box-1", InstanceID: "i-123", SSHKeys: []string{testKey}, UserData: []byte(userData)})
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())

	fs, files := readISO(t, path)
	assert.Equal(t, SeedVolumeID, strings.TrimRight(fs.Label(), "\x00 "))
	assert.Equal(t, userData, files["user-data"])
	var meta map[string]any
	require.NoError(t, json.Unmarshal([]byte(files["meta-data"]), &meta))
	assert.Equal(t, []any{testKey}, meta["public-keys"])
	assert.Equal(t, "box-1", meta["local-hostname"])

	// The contents are written once, into the extents both directory
	// trees name: isoinfo reads the Rock Ridge and the Joliet names.
	img, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, 1, bytes.Count(img, []byte(userData)))
	if isoinfo, err := exec.LookPath("isoinfo"); err == nil {
		// isoinfo's own /proc/self is not ours.
		path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
		for _, tree := range []struct{ flag, name string }{{"-R", "/user-data"}, {"-J", "/user-data"}, {"-R", "/meta-data"}, {"-J", "/meta-data"}} {
			out, err := exec.Command(isoinfo, "-i", path, tree.flag, "-x", tree.name).Output()
			require.NoError(t, err, "isoinfo %s -x %s", tree.flag, tree.name)
			assert.Equal(t, files[strings.TrimPrefix(tree.name, "/")], string(out), "isoinfo %s -x %s", tree.flag, tree.name)
		}
	} else {
		t.Log("isoinfo not installed (apt-get install genisoimage): the Joliet tree is not checked")
	}

	// Sealed: nobody changes the seed under the VM.
	_, err = f.WriteAt([]byte("x"), 0)
	assert.ErrorIs(t, err, unix.EPERM)
	assert.Error(t, f.Truncate(0))
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	require.NoError(t, err)
	assert.NotZero(t, flags&unix.FD_CLOEXEC, "QEMU and other children do not inherit it")

	// The disk layer opens it as wisp's virtio-blk does for a seed.
	format, err := blk.ResolveFormat(path, "raw")
	require.NoError(t, err)
	d, err := blk.Open(blk.Options{Path: path, Format: format, ReadOnly: true})
	require.NoError(t, err)
	assert.Equal(t, uint64(len(img))/blk.SectorSize, d.Capacity())
	require.NoError(t, d.Close())

	// Nothing of this process's is left in the temporary directory.
	entries, err := os.ReadDir(os.TempDir())
	require.NoError(t, err)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), stale.PrefixSeed) {
			continue
		}
		o, err := stale.ReadOwner(filepath.Join(os.TempDir(), e.Name()))
		if err == nil {
			assert.NotEqual(t, os.Getpid(), o.PID, "scratch directory %s left behind", e.Name())
		}
	}
}

func TestNoCloudSeedMemoryBad(t *testing.T) {
	_, err := NoCloudSeedMemory(SeedOptions{Hostname: "under_score"})
	require.ErrorIs(t, err, ErrBadSeed)
}
