package debian

import (
	"fmt"
	"os"
	"path"
	"strings"
)

// treeFile is a file Build writes into the installed tree.
type treeFile struct {
	Path string // absolute inside the tree
	Mode os.FileMode
	Data string
}

// sshKeygenUnit is the unit that gives each VM its own ssh host keys. The
// build deletes the keys openssh-server's postinst made, since every VM
// built from the image would share them; cloud-init makes new ones when
// it runs, but it does not run without a datasource.
const sshKeygenUnit = "wisp-ssh-keygen.service"

// kernelImgConf makes the kernel's postinst keep /boot/vmlinuz and
// /boot/initrd.img pointing at the newest kernel, where `wisp run --image`
// looks (Debian's default puts the links in / instead).
const kernelImgConf = "# Written by wisp image build: keep /boot/vmlinuz and /boot/initrd.img\n" +
	"# pointing at the newest kernel.\n" +
	"do_symlinks = yes\nlink_in_boot = yes\n"

// configFiles renders the files that make the tree a VM image. They are
// pure functions of o, so they are unit-tested as text.
func configFiles(o Options) []treeFile {
	files := []treeFile{
		{"/etc/hostname", 0o644, o.Hostname + "\n"},
		{"/etc/hosts", 0o644, hostsFile(o.Hostname)},
		{"/etc/fstab", 0o644, fstab()},
		{"/etc/machine-id", 0o444, ""},
		{"/etc/kernel-img.conf", 0o644, kernelImgConf},
		{"/etc/systemd/network/80-wisp-dhcp.network", 0o644, dhcpNetwork},
		{"/etc/systemd/system/systemd-networkd-wait-online.service.d/50-wisp.conf", 0o644, waitOnlineDropIn},
		{"/etc/systemd/system/" + sshKeygenUnit, 0o644, sshKeygenService},
		{"/etc/ssh/sshd_config.d/50-wisp-hostkeys.conf", 0o644, sshdHostKeys},
		{"/etc/cloud/cloud.cfg.d/90_wisp.cfg", 0o644, cloudConfig},
	}
	if o.User != "" {
		files = append(files, treeFile{"/etc/sudoers.d/90-wisp-" + o.User, 0o440,
			fmt.Sprintf("# Written by wisp image build.\n%s ALL=(ALL) NOPASSWD:ALL\n", o.User)})
	}
	if len(o.SSHKeys) > 0 {
		files = append(files, treeFile{path.Join(homeDir(o.User), ".ssh", "authorized_keys"), 0o600,
			strings.Join(o.SSHKeys, "\n") + "\n"})
	}
	return files
}

// homeDir is the home of the user that gets the ssh keys.
func homeDir(user string) string {
	if user == "" {
		return "/root"
	}
	return "/home/" + user
}

// unitsToEnable are enabled with systemctl in the tree.
func unitsToEnable(o Options) []string {
	units := []string{"systemd-networkd.service", "serial-getty@ttyS0.service", sshKeygenUnit}
	if releases[o.Release].ResolvedInSystemd {
		units = append(units, "systemd-resolved.service")
	}
	return units
}

func hostsFile(hostname string) string {
	return "127.0.0.1\tlocalhost\n" +
		"127.0.1.1\t" + hostname + "\n" +
		"::1\t\tlocalhost ip6-localhost ip6-loopback\n" +
		"ff02::1\t\tip6-allnodes\n" +
		"ff02::2\t\tip6-allrouters\n"
}

func fstab() string {
	return "# Written by wisp image build: the root filesystem is found by its label,\n" +
		"# whichever disk it is on.\n" +
		"LABEL=" + RootLabel + "\t/\text4\terrors=remount-ro\t0\t1\n"
}

const dhcpNetwork = `# Written by wisp image build: DHCP on wired NICs, whatever they are
# called (en* with predictable names, eth* without). When a cloud-init
# datasource gives a network config, cloud-init writes
# 10-cloud-init-*.network, which sorts first and wins.
[Match]
Name=en* eth*

[Network]
DHCP=yes
`

// waitOnlineDropIn stops systemd-networkd-wait-online from holding up
// boots for two minutes when a VM has a NIC but no DHCP server, or only
// some NICs get leases.
const waitOnlineDropIn = `# Written by wisp image build: one NIC online is enough, and give up
# after 30 seconds rather than two minutes.
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
`

// sshKeygenService makes ed25519 and ECDSA host keys only: RSA key
// generation takes most of a minute under TCG, and sshd is told (by
// sshdHostKeys) to use just these two.
const sshKeygenService = `# Written by wisp image build: the image ships without ssh host keys (every
# VM made from it would share them), so make them on first boot.
[Unit]
Description=Generate SSH host keys
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for t in ed25519 ecdsa; do f=/etc/ssh/ssh_host_$${t}_key; [ -e $$f ] || /usr/bin/ssh-keygen -q -t $$t -N "" -f $$f; done'

[Install]
WantedBy=ssh.service
`

const sshdHostKeys = `# Written by wisp image build: the host keys wisp-ssh-keygen.service makes
# on first boot (no RSA: generating one takes most of a minute under TCG).
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
`

// cloudConfig keeps Debian's datasource list (so the image works on other
// clouds) and relies on ds-identify, which cloud-init's systemd generator
// runs at boot: on x86 it enables cloud-init only when it finds a
// datasource (policy "search,found=all,maybe=none,notfound=disabled"), so
// booting without one does not wait for metadata servers.
const cloudConfig = `# Written by wisp image build.
#
# cloud-init runs only when ds-identify finds a datasource at boot: a NoCloud
# seed (a disk labelled "cidata", e.g. from wisp run --ssh-key/--user-data) or
# a cloud's metadata service. Without one, cloud-init is disabled for that
# boot, so it does not wait for metadata servers that are not there.
#
# Networking: wisp's /etc/systemd/network/80-wisp-dhcp.network does DHCP on
# every wired NIC; a datasource's network config, when given, is written to
# 10-cloud-init-*.network and takes precedence.
#
# Keys given in a seed's meta-data (public-keys) go to the default user,
# "debian", as on Debian's cloud images.
datasource:
  NoCloud:
    fs_label: cidata
`
