package debian

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/image/internal/progress"
	"github.com/wisp-vmm/wisp/internal/cache"
	"github.com/wisp-vmm/wisp/internal/command"
	"github.com/wisp-vmm/wisp/vmm"
)

// Files in a cache entry and in an output directory.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
	RunScript  = "run.sh"
	buildMeta  = "build.json"
)

// DiskFile is the disk image's name for a format.
func DiskFile(format string) string { return "disk." + format }

// Builder builds Debian images into a cache and copies them out.
type Builder struct {
	// CacheDir holds built images (one directory per cache key), the
	// downloaded packages (debs/<release>), what each package set takes
	// installed (usage/) and locks. Required; wisp uses
	// guest.DefaultCacheDir()/images.
	CacheDir string
	// Progress shows the stages; nil is silent.
	Progress io.Writer
	// NoCache rebuilds even when the cache holds the image (the new
	// build replaces the cached one).
	NoCache bool
}

// Result is a finished build.
type Result struct {
	// Dir is the machine directory written.
	Dir string
	// Cached says the image came from the cache.
	Cached bool
	// KernelVersion is the image's kernel release, e.g. 6.1.0-50-cloud-amd64.
	KernelVersion string
	// CacheEntry is the cache directory the image came from.
	CacheEntry string
}

// entryMeta is build.json, written last into a cache entry.
type entryMeta struct {
	Builder       int       `json:"builder"`
	Key           string    `json:"key"`
	Release       string    `json:"release"`
	Packages      []string  `json:"packages"`
	Format        string    `json:"format"`
	Size          uint64    `json:"size"`
	Disk          string    `json:"disk"`
	KernelVersion string    `json:"kernel_version"`
	Built         time.Time `json:"built"`
	BuildSeconds  float64   `json:"build_seconds"`
}

// tools Build needs, with the Debian packages that bring them.
var buildTools = map[string]string{
	"mmdebstrap": "mmdebstrap",
	"mkfs.ext4":  "e2fsprogs",
	"unshare":    "util-linux",
	"chroot":     "coreutils",
}

// Build makes the image o describes (or takes it from the cache) and
// writes the machine directory outDir: the disk, the kernel and initrd
// from it, vm.json and run.sh. outDir must not exist or be empty; its
// parent must exist. On any failure, including cancellation, neither
// outDir nor a cache entry is left half-made.
func (b *Builder) Build(ctx context.Context, o Options, outDir string) (*Result, error) {
	o = o.WithDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := checkOutputDir(outDir); err != nil {
		return nil, err
	}
	cacheDir := b.CacheDir
	if cacheDir == "" {
		return nil, errors.New("image build: no cache directory")
	}
	key := o.CacheKey()
	entry := filepath.Join(cacheDir, key)

	stages := 2 // build or cache hit, then the output
	res := &Result{Dir: outDir, CacheEntry: entry}
	meta, err := readEntry(entry, key)
	if err == nil && !b.NoCache {
		res.Cached = true
	} else {
		stages = 4
		if o.Format == image.FormatQCOW2 {
			stages++
		}
	}
	if u, ok := readUsage(cacheDir, o); ok && !res.Cached && !fits(u, o.Size) {
		return nil, tooSmall(u, o.Size)
	}
	if err := checkSpace(cacheDir, outDir, o, res.Cached); err != nil {
		return nil, err
	}
	show := progress.New(b.Progress, stages)
	if res.Cached {
		st := show.Start("cached image " + key)
		st.Done(nil)
	} else {
		if err := command.Need(buildTools); err != nil {
			return nil, fmt.Errorf("image build: %w", err)
		}
		if os.Geteuid() != 0 {
			return nil, errors.New("image build needs root: mmdebstrap installs packages with chroot and mknod (run it with sudo)")
		}
		meta, err = b.buildEntry(ctx, show, o, key, entry)
		if err != nil {
			return nil, err
		}
	}
	res.KernelVersion = meta.KernelVersion
	st := show.Start("writing " + outDir)
	err = writeOutput(ctx, entry, meta, o, outDir)
	st.Done(err)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// checkOutputDir accepts a directory that does not exist (its parent
// must) or is empty.
func checkOutputDir(dir string) error {
	if dir == "" {
		return vmm.Invalidf("-o is required: name the directory to write the image to")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil:
		if len(entries) > 0 {
			return vmm.Invalidf("-o %s is not empty (it holds %s): give a new or empty directory", dir, entries[0].Name())
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		parent := filepath.Dir(filepath.Clean(dir))
		if st, err := os.Stat(parent); err != nil || !st.IsDir() {
			return vmm.Invalidf("-o %s: its parent %s does not exist: create it first", dir, parent)
		}
		return nil
	default:
		if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
			return vmm.Invalidf("-o %s is a file: give a new or empty directory", dir)
		}
		return vmm.Invalidf("-o %s: %v", dir, err)
	}
}

// readEntry loads a published cache entry.
func readEntry(entry, key string) (entryMeta, error) {
	var m entryMeta
	b, err := os.ReadFile(filepath.Join(entry, buildMeta))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", entry, err)
	}
	if m.Key != key || m.Builder != BuilderVersion {
		return m, fmt.Errorf("%s: written for another build", entry)
	}
	for _, f := range []string{m.Disk, KernelFile, InitrdFile} {
		if _, err := os.Stat(filepath.Join(entry, f)); err != nil {
			return m, fmt.Errorf("cache entry %s is damaged: %w", entry, err)
		}
	}
	return m, nil
}

// buildEntry builds the image into a staging directory and publishes it
// as entry.
func (b *Builder) buildEntry(ctx context.Context, show *progress.Stages, o Options, key, entry string) (meta entryMeta, err error) {
	start := time.Now()
	lock, err := cache.Acquire(ctx, b.CacheDir, key)
	if err != nil {
		return meta, err
	}
	defer lock.Unlock()
	// Another process may have built it while we waited.
	if m, err := readEntry(entry, key); err == nil && !b.NoCache {
		return m, nil
	}
	tmp, err := cache.Staging(entry)
	if err != nil {
		return meta, err
	}
	defer func() {
		if rerr := cache.Remove(tmp); rerr != nil && err == nil {
			err = rerr
		}
	}()
	root := filepath.Join(tmp, "tree")

	st := show.Start(fmt.Sprintf("installing Debian %s with mmdebstrap", o.Release))
	err = b.mmdebstrap(ctx, st, o, tmp, root)
	st.Done(err)
	if err != nil {
		return meta, err
	}

	st = show.Start("configuring the system")
	kernelVersion, err := configure(ctx, o, root, tmp)
	st.Done(err)
	if err != nil {
		return meta, err
	}

	st = show.Start(fmt.Sprintf("making the %s ext4 filesystem", vmm.FormatSize(o.Size)))
	st.Note("measuring the tree")
	u, err := measure(root)
	if err == nil {
		err = writeUsage(b.CacheDir, o, u)
	}
	raw := filepath.Join(tmp, DiskFile(image.FormatRaw))
	if err == nil {
		err = makeFilesystem(ctx, st, o, u, root, raw)
	}
	st.Done(err)
	if err != nil {
		return meta, err
	}
	// The tree is in the image now; free its space before converting.
	if err := cache.Remove(root); err != nil {
		return meta, err
	}

	disk := raw
	if o.Format == image.FormatQCOW2 {
		st = show.Start("converting to qcow2")
		disk = filepath.Join(tmp, DiskFile(image.FormatQCOW2))
		err = image.Convert(ctx, raw, disk, image.FormatQCOW2, nil)
		st.Done(err)
		if err != nil {
			return meta, err
		}
		if err := os.Remove(raw); err != nil {
			return meta, err
		}
	}
	meta = entryMeta{
		Builder: BuilderVersion, Key: key, Release: o.Release, Packages: o.packages(),
		Format: o.Format, Size: o.Size, Disk: filepath.Base(disk), KernelVersion: kernelVersion,
		Built: time.Now().UTC(), BuildSeconds: time.Since(start).Seconds(),
	}
	if err := cache.WriteJSON(filepath.Join(tmp, buildMeta), meta); err != nil {
		return meta, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return meta, err
	}
	if err := cache.Replace(tmp, entry); err != nil {
		return meta, err
	}
	return meta, nil
}

// shellQuote quotes s for sh (and for mmdebstrap's special hooks, which
// split with shellwords).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// mmdebstrap installs the system into root. It runs in a private mount
// namespace (unshare --mount): mmdebstrap mounts /proc, /sys and /dev/pts
// into the tree, and if it is killed those mounts vanish with the
// namespace instead of staying on the host under a directory we are about
// to delete.
//
// Downloaded packages are kept in CacheDir/debs/<release> and offered to
// the next build (mmdebstrap's sync-in/sync-out hooks), so a rebuild with
// other options downloads only what changed.
func (b *Builder) mmdebstrap(ctx context.Context, st *progress.Stage, o Options, tmp, root string) error {
	debsLock, err := cache.Acquire(ctx, b.CacheDir, "debs-"+o.Release)
	if err != nil {
		return err
	}
	defer debsLock.Unlock()
	debs := filepath.Join(b.CacheDir, "debs", o.Release)
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return fmt.Errorf("deb cache: %w", err)
	}
	newDebs := filepath.Join(tmp, "debs")
	if err := os.Mkdir(newDebs, 0o755); err != nil {
		return fmt.Errorf("deb cache: %w", err)
	}
	kimg := filepath.Join(tmp, "kernel-img.conf")
	if err := os.WriteFile(kimg, []byte(kernelImgConf), 0o644); err != nil {
		return err
	}
	args := []string{
		"--mount", "--propagation", "private",
		"mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
		"--include=" + strings.Join(o.packages(), ","),
		"--skip=download/empty", "--skip=essential/unlink",
		`--setup-hook=mkdir -p "$1/etc" "$1/var/cache/apt/archives"`,
		"--setup-hook=upload " + shellQuote(kimg) + " /etc/kernel-img.conf",
		"--setup-hook=sync-in " + shellQuote(debs) + " /var/cache/apt/archives/",
		"--customize-hook=sync-out /var/cache/apt/archives " + shellQuote(newDebs),
		`--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*.deb`,
		o.Release, root,
	}
	args = append(args, sourcesLines(o)...)

	log, err := os.Create(filepath.Join(tmp, "mmdebstrap.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	notes := st.Writer(func(line string) (string, bool) {
		note, ok := strings.CutPrefix(line, "I: ")
		return note, ok
	})
	// TMPDIR in the staging directory: mmdebstrap's own temporary files
	// (a gpg home, apt configuration) go with it if mmdebstrap is killed.
	mmtmp := filepath.Join(tmp, "tmp")
	if err := os.Mkdir(mmtmp, 0o700); err != nil {
		return err
	}
	c := command.Cmd{Env: []string{"TMPDIR=" + mmtmp}, Stdout: log, Stderr: io.MultiWriter(log, notes)}
	err = c.Run(ctx, "unshare", args...)
	if err != nil {
		return explainMmdebstrap(err, o, tmp)
	}
	// Keep exactly this build's packages: older versions go.
	if err := cache.Replace(newDebs, debs); err != nil {
		return fmt.Errorf("deb cache: %w", err)
	}
	return nil
}

// sourcesLines are the apt sources: the release, its updates and its
// security archive. They also become the image's sources.list.
func sourcesLines(o Options) []string {
	return []string{
		fmt.Sprintf("deb %s %s main", o.Mirror, o.Release),
		fmt.Sprintf("deb %s %s-updates main", o.Mirror, o.Release),
		fmt.Sprintf("deb %s %s-security main", o.SecurityMirror, o.Release),
	}
}

var (
	unknownPackage = []*regexp.Regexp{
		regexp.MustCompile(`Unable to locate package ([a-z0-9][a-z0-9+.-]+)`),
		regexp.MustCompile(`Package '?([a-z0-9][a-z0-9+.-]+)'? has no installation candidate`),
	}
	noSpaceLeft = regexp.MustCompile(`No space left on device`)
)

// explainMmdebstrap turns mmdebstrap's failures users can fix into one
// line each.
func explainMmdebstrap(err error, o Options, tmp string) error {
	var cerr *command.Error
	if !errors.As(err, &cerr) {
		return fmt.Errorf("mmdebstrap: %w", err)
	}
	text := cerr.Stderr
	if b, rerr := os.ReadFile(filepath.Join(tmp, "mmdebstrap.log")); rerr == nil {
		text = string(b)
	}
	for _, re := range unknownPackage {
		if m := re.FindStringSubmatch(text); m != nil {
			return vmm.Invalidf("--packages: Debian %s has no package %q: check the name at https://packages.debian.org/%s/", o.Release, m[1], o.Release)
		}
	}
	if noSpaceLeft.MatchString(text) {
		return fmt.Errorf("mmdebstrap: no space left on device under %s: free some space or point WISP_CACHE elsewhere", filepath.Dir(tmp))
	}
	return fmt.Errorf("mmdebstrap failed: %s", lastErrorLines(text))
}

// lastErrorLines picks mmdebstrap's "E:" lines, else the last lines.
func lastErrorLines(text string) string {
	var errs, all []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		all = append(all, line)
		if strings.HasPrefix(line, "E: ") {
			errs = append(errs, strings.TrimPrefix(line, "E: "))
		}
	}
	if len(errs) == 0 {
		errs = all[max(0, len(all)-3):]
	}
	return strings.Join(errs, "; ")
}

// configure turns the installed tree into a VM image (see configFiles)
// and returns the kernel's version.
func configure(ctx context.Context, o Options, root, tmp string) (string, error) {
	t, err := openTree(root)
	if err != nil {
		return "", err
	}
	defer t.close()
	for _, f := range configFiles(o) {
		if f.Path == "/etc/machine-id" || strings.HasPrefix(f.Path, homeDir(o.User)) {
			continue // after the user exists
		}
		if err := t.writeFile(f.Path, []byte(f.Data), f.Mode); err != nil {
			return "", fmt.Errorf("configure: %w", err)
		}
	}
	chroot := func(stdin string, args ...string) error {
		c := command.Cmd{}
		if stdin != "" {
			c.Stdin = strings.NewReader(stdin)
		}
		if err := c.Run(ctx, "chroot", append([]string{root}, args...)...); err != nil {
			return fmt.Errorf("configure: %w", err)
		}
		return nil
	}
	if err := chroot("", append([]string{"systemctl", "enable", "--quiet"}, unitsToEnable(o)...)...); err != nil {
		return "", err
	}
	if releases[o.Release].ResolvedInSystemd {
		if err := t.symlink("../run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf"); err != nil {
			return "", fmt.Errorf("configure: %w", err)
		}
	}
	// Host keys made by openssh-server's postinst would be shared by
	// every VM made from the image.
	if err := chroot("", "sh", "-c", "rm -f /etc/ssh/ssh_host_*"); err != nil {
		return "", err
	}
	if o.User != "" {
		if err := chroot("", "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "--password", "*", o.User); err != nil {
			return "", err
		}
	}
	if o.RootPassword != "" {
		if err := chroot("root:"+o.RootPassword+"\n", "chpasswd"); err != nil {
			return "", err
		}
	}
	// systemd makes a new machine id on first boot when the file is empty.
	for _, f := range configFiles(o) {
		if f.Path == "/etc/machine-id" || strings.HasPrefix(f.Path, homeDir(o.User)) {
			if err := t.writeFile(f.Path, []byte(f.Data), f.Mode); err != nil {
				return "", fmt.Errorf("configure: %w", err)
			}
		}
	}
	if len(o.SSHKeys) > 0 {
		owner := "root:root"
		if o.User != "" {
			owner = o.User + ":" + o.User
		}
		ssh := homeDir(o.User) + "/.ssh"
		if err := chroot("", "sh", "-c", `chmod 700 "$1" && chown -R "$2" "$1"`, "sh", ssh, owner); err != nil {
			return "", err
		}
	}

	// The kernel and initrd travel next to the image.
	kernel, err := t.linkTarget("/boot/vmlinuz")
	if err != nil {
		return "", fmt.Errorf("configure: the image has no /boot/vmlinuz: %w", err)
	}
	version := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	if err := t.copyOut("/boot/vmlinuz", filepath.Join(tmp, KernelFile)); err != nil {
		return "", fmt.Errorf("configure: %w", err)
	}
	if err := t.copyOut("/boot/initrd.img", filepath.Join(tmp, InitrdFile)); err != nil {
		return "", fmt.Errorf("configure: %w", err)
	}
	return version, nil
}

// mke2fsVersion reads "mke2fs 1.47.0 (5-Feb-2023)" from mkfs.ext4 -V.
var mke2fsVersion = regexp.MustCompile(`mke2fs (\d+)\.(\d+)`)

// makeFilesystem checks the tree (which takes u) fits o.Size and turns it
// into the raw image raw with mkfs.ext4 -d (no mounting, no loop device).
func makeFilesystem(ctx context.Context, st *progress.Stage, o Options, u usage, root, raw string) error {
	if !fits(u, o.Size) {
		return tooSmall(u, o.Size)
	}
	st.Note(fmt.Sprintf("writing %s in %d files", humanSize(u.Bytes), u.Inodes))
	f, err := os.OpenFile(raw, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(o.Size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", raw, err)
	}
	args := []string{"-F", "-q", "-t", "ext4", "-L", RootLabel, "-m", strconv.Itoa(reservePercent),
		"-N", strconv.FormatUint(inodesFor(u, o.Size), 10), "-d", root}
	// e2fsprogs 1.47 knows features older e2fsck (bullseye's 1.46) cannot
	// check; newer mke2fs.conf files turn them on by default.
	var ver bytes.Buffer
	_ = command.Cmd{Stdout: &ver, Stderr: &ver}.Run(ctx, "mkfs.ext4", "-V")
	if m := mke2fsVersion.FindStringSubmatch(ver.String()); m != nil {
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		if major > 1 || minor >= 47 {
			args = append(args, "-O", "^orphan_file,^metadata_csum_seed")
		}
	}
	args = append(args, raw)
	if err := (command.Cmd{}).Run(ctx, "mkfs.ext4", args...); err != nil {
		var cerr *command.Error
		if errors.As(err, &cerr) && (strings.Contains(cerr.Stderr, "Could not allocate") || strings.Contains(cerr.Stderr, "No space left")) {
			return tooSmall(u, o.Size)
		}
		return err
	}
	return nil
}

// usageFile records what a release's package set took installed, so a
// later build with a --size too small for it fails at once instead of
// after installing.
func usageFile(cacheDir string, o Options) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%d %s %s %s", BuilderVersion, o.Release, o.Mirror, strings.Join(o.packages(), ",")))
	return filepath.Join(cacheDir, "usage", hex.EncodeToString(h[:8])+".json")
}

func readUsage(cacheDir string, o Options) (usage, bool) {
	var u usage
	b, err := os.ReadFile(usageFile(cacheDir, o))
	if err != nil || json.Unmarshal(b, &u) != nil || u.Bytes == 0 {
		return usage{}, false
	}
	return u, true
}

func writeUsage(cacheDir string, o Options, u usage) error {
	p := usageFile(cacheDir, o)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return cache.WriteJSON(p, u)
}
