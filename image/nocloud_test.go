package image

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
