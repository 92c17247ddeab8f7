// Package debian builds bootable Debian disk images with mmdebstrap,
// without loop devices or kernel modules: mmdebstrap installs a directory
// tree, wisp configures it (serial console, DHCP, fstab by label,
// cloud-init, users and keys), and mkfs.ext4 -d turns the tree into a
// whole-disk ext4 image. The kernel and initrd are copied out of the tree
// next to the image, with a vm.json that boots them (see image/vmdir).
//
// Builds are cached by their inputs, so an unchanged rebuild only copies
// the cached image; see Builder.
package debian

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/vmm"
)

// BuilderVersion is part of every cache key: bump it whenever a change
// here changes the images built from the same options.
const BuilderVersion = 1

// Defaults for options left empty.
const (
	DefaultRelease  = "bookworm"
	DefaultSize     = 4 << 30
	DefaultHostname = "wisp"
	DefaultFormat   = image.FormatRaw
	DefaultMirror   = "http://deb.debian.org/debian"
	DefaultSecurity = "http://deb.debian.org/debian-security"
	DefaultCPUs     = 1
	DefaultMemory   = 1 << 30
)

// MinSize is the smallest --size accepted before building: no Debian
// with a kernel fits in less. Whether a size above it is enough is known
// once the packages are installed (Build checks then, before mkfs).
const MinSize = 256 << 20

// RootLabel is the root filesystem's label: fstab and the kernel command
// line find the root by it.
const RootLabel = "wisp-root"

// release is what differs between Debian releases.
type release struct {
	Version string
	// Packages are added to the base set.
	Packages []string
	// ResolvedInSystemd: systemd-resolved is part of the systemd package
	// (bullseye), so it must be enabled and linked by hand.
	ResolvedInSystemd bool
}

// releases are the Debian releases wisp builds, by code name.
var releases = map[string]release{
	"bullseye": {Version: "11", ResolvedInSystemd: true},
	"bookworm": {Version: "12", Packages: []string{"systemd-resolved"}},
	"trixie":   {Version: "13", Packages: []string{"systemd-resolved"}},
}

// Releases lists the release code names Build accepts, oldest first.
func Releases() []string {
	names := make([]string, 0, len(releases))
	for n := range releases {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(releases[a].Version, releases[b].Version) })
	return names
}

// basePackages are in every image: an init, a kernel and its initramfs,
// networking, cloud-init and ssh.
var basePackages = []string{
	"systemd-sysv", "udev", "dbus", "systemd-timesyncd",
	"linux-image-cloud-amd64", "initramfs-tools", "e2fsprogs",
	"netbase", "iproute2", "ca-certificates",
	"cloud-init", "openssh-server", "sudo", "less",
}

// Options say what to build. Zero values take the defaults above.
type Options struct {
	// Release is a Debian code name (see Releases).
	Release string
	// Size is the disk's size in bytes (the image is sparse: it uses what
	// its files need).
	Size uint64
	// Packages are installed besides the base set.
	Packages []string
	// Hostname is the guest's /etc/hostname.
	Hostname string
	// User, if set, is created with SSHKeys as its authorized keys and
	// password-less sudo; it has no password.
	User string
	// SSHKeys are authorized_keys lines for User, or for root without one.
	SSHKeys []string
	// RootPassword, if set, lets root log in on the console with it.
	RootPassword string
	// Format is image.FormatRaw or image.FormatQCOW2.
	Format string
	// Mirror and SecurityMirror are the Debian archives to install from;
	// they also end up in the image's sources.list.
	Mirror, SecurityMirror string
	// CPUs and MemoryBytes go into vm.json only (not the cache key).
	CPUs        int
	MemoryBytes uint64
}

// WithDefaults fills in empty fields.
func (o Options) WithDefaults() Options {
	if o.Release == "" {
		o.Release = DefaultRelease
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	if o.Format == "" {
		o.Format = DefaultFormat
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	if o.SecurityMirror == "" {
		o.SecurityMirror = DefaultSecurity
	}
	if o.CPUs == 0 {
		o.CPUs = DefaultCPUs
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = DefaultMemory
	}
	return o
}

var (
	// packageName is Debian policy's package name syntax (5.6.1).
	packageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	// userName is what useradd accepts by default on Debian, minus
	// uppercase and dots.
	userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// mirrorURL is an http(s) URL without spaces or quotes (it goes into
	// sources.list).
	mirrorURL = regexp.MustCompile(`^https?://[^\s"'\\]+$`)
)

// systemUsers already exist in a Debian base system (base-passwd and the
// base packages), so --user may not take their names.
var systemUsers = []string{
	"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news",
	"uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody",
	"_apt", "messagebus", "sshd", "systemd-network", "systemd-resolve",
	"systemd-timesync", "systemd-coredump", "tss",
}

// Validate checks o (after WithDefaults). Each error is one line naming
// the flag and the fix, and matches vmm.ErrInvalidConfig.
func (o Options) Validate() error {
	if _, ok := releases[o.Release]; !ok {
		return vmm.Invalidf("--release %q: unknown Debian release; use one of %s", o.Release, strings.Join(Releases(), ", "))
	}
	if o.Size < MinSize {
		return vmm.Invalidf("--size %s is too small: a Debian system with a kernel needs at least %s; try --size %s", vmm.FormatSize(o.Size), vmm.FormatSize(MinSize), vmm.FormatSize(DefaultSize))
	}
	if o.Size%(1<<20) != 0 {
		return vmm.Invalidf("--size %s: use a whole number of megabytes, e.g. 4G or 2500M", vmm.FormatSize(o.Size))
	}
	for _, p := range o.Packages {
		if !packageName.MatchString(p) {
			return vmm.Invalidf("--packages: %q is not a Debian package name (lowercase letters, digits, + - .)", p)
		}
	}
	if err := image.CheckHostname(o.Hostname); err != nil {
		return vmm.Invalidf("--hostname %v", err)
	}
	if o.User != "" {
		if !userName.MatchString(o.User) {
			return vmm.Invalidf("--user %q: use lowercase letters, digits, _ and -, starting with a letter or _ (at most 32)", o.User)
		}
		if slices.Contains(systemUsers, o.User) {
			return vmm.Invalidf("--user %q is a system account in Debian: pick another name", o.User)
		}
		if len(o.SSHKeys) == 0 {
			return vmm.Invalidf("--user %s needs --ssh-key FILE: the user has no password, so a key is the only way in", o.User)
		}
	}
	for i, k := range o.SSHKeys {
		if err := image.CheckAuthorizedKey(k); err != nil {
			return vmm.Invalidf("--ssh-key: key %d: %v", i+1, err)
		}
	}
	if strings.ContainsAny(o.RootPassword, "\n\r\x00:") {
		return vmm.Invalidf("--root-password: must be one line without ':'")
	}
	if err := image.CheckFormat(o.Format); err != nil {
		return vmm.Invalidf("--format: %v", err)
	}
	for _, m := range []struct{ flag, url string }{{"--mirror", o.Mirror}, {"--security-mirror", o.SecurityMirror}} {
		if !mirrorURL.MatchString(m.url) {
			return vmm.Invalidf("%s %q: want an http:// or https:// URL", m.flag, m.url)
		}
	}
	if o.CPUs < 1 || o.CPUs > vmm.MaxCPUs {
		return vmm.Invalidf("--cpus %d: want 1 to %d", o.CPUs, vmm.MaxCPUs)
	}
	if o.MemoryBytes < vmm.MinMemory || o.MemoryBytes%(2<<20) != 0 {
		return vmm.Invalidf("--memory %s: want at least %s, a multiple of 2M", vmm.FormatSize(o.MemoryBytes), vmm.FormatSize(vmm.MinMemory))
	}
	return nil
}

// packages is the full, sorted, de-duplicated list to install.
func (o Options) packages() []string {
	all := append(slices.Clone(basePackages), releases[o.Release].Packages...)
	all = append(all, o.Packages...)
	slices.Sort(all)
	return slices.Compact(all)
}

// CacheKey identifies the image o builds: a hash of everything that
// changes its bytes (not CPUs or memory, which only go into vm.json).
// The root password enters as its own hash.
func (o Options) CacheKey() string {
	pw := ""
	if o.RootPassword != "" {
		h := sha256.Sum256([]byte(o.RootPassword))
		pw = hex.EncodeToString(h[:])
	}
	keys := slices.Clone(o.SSHKeys)
	in := struct {
		Builder        int
		Release        string
		Packages       []string
		Size           uint64
		Hostname       string
		User           string
		SSHKeys        []string
		RootPassword   string
		Format         string
		Mirror         string
		SecurityMirror string
	}{BuilderVersion, o.Release, o.packages(), o.Size, o.Hostname, o.User, keys, pw, o.Format, o.Mirror, o.SecurityMirror}
	b, _ := json.Marshal(in)
	h := sha256.Sum256(b)
	return fmt.Sprintf("debian-%s-%s", o.Release, hex.EncodeToString(h[:])[:16])
}
