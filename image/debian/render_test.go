package debian

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/internal/command"
	"github.com/wisp-vmm/wisp/vmm"
)

func filesByPath(o Options) map[string]treeFile {
	m := map[string]treeFile{}
	for _, f := range configFiles(o.WithDefaults()) {
		m[f.Path] = f
	}
	return m
}

func TestConfigFiles(t *testing.T) {
	files := filesByPath(Options{Hostname: "box"})

	assert.Equal(t, "box\n", files["/etc/hostname"].Data)
	assert.Contains(t, files["/etc/hosts"].Data, "127.0.1.1\tbox\n")
	assert.Contains(t, files["/etc/fstab"].Data, "LABEL=wisp-root\t/\text4\terrors=remount-ro\t0\t1\n")
	assert.Equal(t, "", files["/etc/machine-id"].Data, "empty: systemd makes one on first boot")

	net := files["/etc/systemd/network/80-wisp-dhcp.network"].Data
	assert.Contains(t, net, "[Match]\nName=en* eth*\n")
	assert.Contains(t, net, "[Network]\nDHCP=yes\n")

	assert.Contains(t, files["/etc/kernel-img.conf"].Data, "link_in_boot = yes")
	assert.Contains(t, files["/etc/systemd/system/systemd-networkd-wait-online.service.d/50-wisp.conf"].Data, "--any --timeout=30")

	keygen := files["/etc/systemd/system/wisp-ssh-keygen.service"].Data
	assert.Contains(t, keygen, "Before=ssh.service")
	assert.Contains(t, keygen, "WantedBy=ssh.service")
	assert.Contains(t, keygen, "$${t}", "systemd would expand a single $")
	assert.Contains(t, files["/etc/ssh/sshd_config.d/50-wisp-hostkeys.conf"].Data, "HostKey /etc/ssh/ssh_host_ed25519_key")

	cloud := files["/etc/cloud/cloud.cfg.d/90_wisp.cfg"].Data
	assert.Contains(t, cloud, "fs_label: cidata")
	assert.NotContains(t, cloud, "datasource_list", "Debian's list stays, for other clouds")

	for p := range files {
		assert.NotContains(t, p, "authorized_keys", "no keys, no authorized_keys")
		assert.NotContains(t, p, "sudoers", "no user, no sudoers")
	}
}

func TestConfigFilesUserAndKeys(t *testing.T) {
	files := filesByPath(Options{User: "alice", SSHKeys: []string{testKey, testKey + "2"}})
	keys := files["/home/alice/.ssh/authorized_keys"]
	assert.Equal(t, testKey+"\n"+testKey+"2\n", keys.Data)
	assert.Equal(t, os.FileMode(0o600), keys.Mode)
	sudo := files["/etc/sudoers.d/90-wisp-alice"]
	assert.Contains(t, sudo.Data, "alice ALL=(ALL) NOPASSWD:ALL\n")
	assert.Equal(t, os.FileMode(0o440), sudo.Mode)

	root := filesByPath(Options{SSHKeys: []string{testKey}})
	assert.Equal(t, testKey+"\n", root["/root/.ssh/authorized_keys"].Data, "without --user the keys are root's")
}

func TestUnitsToEnable(t *testing.T) {
	units := unitsToEnable(Options{}.WithDefaults())
	assert.Contains(t, units, "serial-getty@ttyS0.service")
	assert.Contains(t, units, "systemd-networkd.service")
	assert.Contains(t, units, sshKeygenUnit)
	assert.NotContains(t, units, "systemd-resolved.service", "bookworm's package enables it")
	assert.Contains(t, unitsToEnable(Options{Release: "bullseye"}.WithDefaults()), "systemd-resolved.service")
}

func TestCmdline(t *testing.T) {
	assert.Equal(t, "root=LABEL=wisp-root ro console=ttyS0 reboot=k panic=-1", Cmdline())
}

func TestSourcesLines(t *testing.T) {
	lines := sourcesLines(Options{Release: "trixie"}.WithDefaults())
	assert.Equal(t, []string{
		"deb http://deb.debian.org/debian trixie main",
		"deb http://deb.debian.org/debian trixie-updates main",
		"deb http://deb.debian.org/debian-security trixie-security main",
	}, lines)
}

func TestShellQuote(t *testing.T) {
	assert.Equal(t, `'/a b'`, shellQuote("/a b"))
	assert.Equal(t, `'it'\''s'`, shellQuote("it's"))
}

func TestJournalBytes(t *testing.T) {
	assert.Equal(t, uint64(16<<20), journalBytes(512<<20))
	assert.Equal(t, uint64(32<<20), journalBytes(1<<30))
	assert.Equal(t, uint64(64<<20), journalBytes(4<<30))
	assert.Equal(t, uint64(1<<30), journalBytes(1<<40))
}

func TestFits(t *testing.T) {
	debianish := usage{Bytes: 500 << 20, Inodes: 20000}
	assert.True(t, fits(debianish, 4<<30))
	assert.False(t, fits(debianish, 400<<20))
	s := suggestSize(debianish)
	assert.True(t, fits(debianish, s))
	assert.False(t, fits(debianish, s-suggestStep))
	assert.Zero(t, s%suggestStep)

	err := tooSmall(debianish, 400<<20)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Equal(t, "--size 400M is too small: the installed system takes 500M and needs a disk of at least "+
		vmm.FormatSize(s)+"; use --size "+vmm.FormatSize(s)+" or more", err.Error())

	// Many small files: inodes, not bytes, decide.
	many := usage{Bytes: 100 << 20, Inodes: 200000}
	assert.Greater(t, inodesFor(many, 1<<30), uint64(1<<30)/inodeRatio)
}

func TestCheckOutputDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, checkOutputDir(filepath.Join(dir, "new")))
	require.NoError(t, checkOutputDir(dir), "empty is fine")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o644))
	err := checkOutputDir(dir)
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "is not empty (it holds x)")

	err = checkOutputDir(filepath.Join(dir, "x"))
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "is a file")

	err = checkOutputDir(filepath.Join(dir, "no", "such"))
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "create it first")

	err = checkOutputDir("")
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
}

func TestExplainMmdebstrap(t *testing.T) {
	tmp := t.TempDir()
	o := Options{}.WithDefaults()
	write := func(log string) error {
		require.NoError(t, os.WriteFile(filepath.Join(tmp, "mmdebstrap.log"), []byte(log), 0o644))
		return explainMmdebstrap(&command.Error{Name: "unshare", Err: errors.New("exit status 1")}, o, tmp)
	}
	err := write("I: running apt-get update...\nE: Unable to locate package nosuchpkg\nE: apt-get --yes install failed\n")
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Equal(t, `--packages: Debian bookworm has no package "nosuchpkg": check the name at https://packages.debian.org/bookworm/`, err.Error())

	err = write("E: Package 'oldpkg' has no installation candidate\n")
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
	assert.Contains(t, err.Error(), `no package "oldpkg"`)

	err = write("dpkg: error: No space left on device\n")
	assert.Contains(t, err.Error(), "no space left")

	err = write("I: one\nE: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease\nE: apt-get update failed\n")
	assert.Equal(t, "mmdebstrap failed: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease; apt-get update failed", err.Error())
	assert.False(t, errors.Is(err, vmm.ErrInvalidConfig))
}

func TestTreeWritesStayInside(t *testing.T) {
	root := t.TempDir()
	host := t.TempDir()
	hostFile := filepath.Join(host, "victim")
	require.NoError(t, os.WriteFile(hostFile, []byte("host"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	// An absolute symlink in the tree means the tree's path, not the host's.
	require.NoError(t, os.Symlink(hostFile, filepath.Join(root, "etc", "link")))
	require.NoError(t, os.Symlink(host, filepath.Join(root, "dirlink")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, host), 0o755))

	tr, err := openTree(root)
	require.NoError(t, err)
	defer tr.close()
	require.NoError(t, tr.writeFile("/etc/link", []byte("tree"), 0o640))
	require.NoError(t, tr.writeFile("/dirlink/victim", []byte("tree"), 0o644))
	require.NoError(t, tr.writeFile("/a/b/c", []byte("deep"), 0o600))

	b, err := os.ReadFile(hostFile)
	require.NoError(t, err)
	assert.Equal(t, "host", string(b), "the host's file is untouched")
	b, err = os.ReadFile(filepath.Join(root, hostFile))
	require.NoError(t, err)
	assert.Equal(t, "tree", string(b), "written where the link points inside the tree")
	st, err := os.Stat(filepath.Join(root, "a/b/c"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	require.NoError(t, tr.symlink("../run/x", "/etc/resolv.conf"))
	target, err := os.Readlink(filepath.Join(root, "etc/resolv.conf"))
	require.NoError(t, err)
	assert.Equal(t, "../run/x", target)

	// copyOut follows the tree's links the tree's way.
	require.NoError(t, os.MkdirAll(filepath.Join(root, "boot"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot/vmlinuz-1.2.3"), []byte("k"), 0o644))
	require.NoError(t, os.Symlink("/boot/vmlinuz-1.2.3", filepath.Join(root, "boot/vmlinuz")))
	out := filepath.Join(t.TempDir(), "k")
	require.NoError(t, tr.copyOut("/boot/vmlinuz", out))
	b, err = os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, "k", string(b))
	real, err := tr.linkTarget("/boot/vmlinuz")
	require.NoError(t, err)
	assert.Equal(t, "/boot/vmlinuz-1.2.3", real)
}

func TestMeasureCountsHardLinksOnce(t *testing.T) {
	root := t.TempDir()
	data := strings.Repeat("x", 64<<10)
	require.NoError(t, os.WriteFile(filepath.Join(root, "a"), []byte(data), 0o644))
	require.NoError(t, os.Link(filepath.Join(root, "a"), filepath.Join(root, "b")))
	u, err := measure(root)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), u.Inodes, "the directory and one file")
	assert.GreaterOrEqual(t, u.Bytes, uint64(64<<10))
	assert.Less(t, u.Bytes, uint64(2*64<<10), "the hard link is not counted twice")
}
