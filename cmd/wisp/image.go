package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/image/debian"
	"github.com/wisp-vmm/wisp/vmm"
)

// imageCacheDir is where built images and extracted boot files are kept.
func imageCacheDir() string { return filepath.Join(guest.DefaultCacheDir(), "images") }

func newImageCommand(c *cli) *cobra.Command {
	img := &cobra.Command{
		Use:   "image",
		Short: "Build and convert VM disk images",
	}
	img.AddCommand(newImageBuildCommand(c), newImageConvertCommand(c))
	return img
}

type imageBuildFlags struct {
	release, size, hostname, user, rootPassword, format, output string
	memory, mirror, securityMirror                              string
	packages, sshKeys                                           []string
	cpus                                                        int
	noCache                                                     bool
}

func newImageBuildCommand(c *cli) *cobra.Command {
	var f imageBuildFlags
	cmd := &cobra.Command{
		Use:   "build debian -o DIR [flags]",
		Short: "Build a bootable Debian disk image with mmdebstrap (needs root)",
		Long: `Build a Debian disk image: a whole-disk ext4 filesystem (label ` + debian.RootLabel + `)
with Debian's cloud kernel, systemd, a serial console on ttyS0, DHCP on every
wired NIC (systemd-networkd), ssh and cloud-init. cloud-init runs only when a
datasource is found (a NoCloud seed or a cloud), so plain boots do not wait.

DIR receives the disk, the kernel and initrd from it, vm.json (how to boot
it) and run.sh; boot it with: wisp run --vm DIR

Builds are cached by their inputs in ` + "$WISP_CACHE/images (default ~/.cache/wisp/images)" + `:
an unchanged rebuild copies the cached image (reflink where the filesystem
can, else a sparse copy of the data only; never a hard link, so booting DIR
never changes the cache). --no-cache rebuilds. Delete the directory to
reclaim the space. Needs root and the Debian packages mmdebstrap, e2fsprogs
and util-linux (and qemu-utils for qcow2).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return vmm.Invalidf("name the distribution to build: wisp image build debian -o DIR")
			}
			if args[0] != "debian" {
				return vmm.Invalidf("unknown distribution %q: wisp builds debian (try wisp image build debian --release %s)", args[0], debian.DefaultRelease)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			start := time.Now()
			b := &debian.Builder{CacheDir: imageCacheDir(), Progress: c.stderr, NoCache: f.noCache}
			res, err := b.Build(cmd.Context(), o, f.output)
			if err != nil {
				return err
			}
			how := "built"
			if res.Cached {
				how = "copied from the cache"
			}
			o = o.WithDefaults()
			fmt.Fprintf(c.stdout, "%s: Debian %s, %s %s, kernel %s (%s in %v)\n", res.Dir, o.Release,
				vmm.FormatSize(o.Size), o.Format, res.KernelVersion, how, time.Since(start).Round(100*time.Millisecond))
			fmt.Fprintf(c.stdout, "boot it with: wisp run --vm %s\n", res.Dir)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "", "directory to write (must not exist, or be empty)")
	fl.StringVar(&f.release, "release", debian.DefaultRelease, "Debian release: "+strings.Join(debian.Releases(), ", "))
	fl.StringVar(&f.size, "size", vmm.FormatSize(debian.DefaultSize), "disk size (sparse: the image uses what its files need)")
	fl.StringSliceVar(&f.packages, "packages", nil, "extra Debian packages, comma-separated")
	fl.StringVar(&f.hostname, "hostname", debian.DefaultHostname, "the guest's hostname")
	fl.StringVar(&f.user, "user", "", "create this user (password-less sudo; log in with --ssh-key)")
	fl.StringArrayVar(&f.sshKeys, "ssh-key", nil, "public key file (authorized_keys format) for --user, or root without --user; repeatable")
	fl.StringVar(&f.rootPassword, "root-password", "", "root's password for console login (visible in ps: prefer keys)")
	fl.StringVar(&f.format, "format", debian.DefaultFormat, "disk format: raw or qcow2")
	fl.IntVar(&f.cpus, "cpus", debian.DefaultCPUs, "vCPUs written into vm.json")
	fl.StringVar(&f.memory, "memory", vmm.FormatSize(debian.DefaultMemory), "guest RAM written into vm.json")
	fl.StringVar(&f.mirror, "mirror", debian.DefaultMirror, "Debian archive to install from")
	fl.StringVar(&f.securityMirror, "security-mirror", debian.DefaultSecurity, "Debian security archive")
	fl.BoolVar(&f.noCache, "no-cache", false, "build even if the cache holds this image")
	return cmd
}

// options turns the flags into build options, reading key files.
func (f imageBuildFlags) options() (debian.Options, error) {
	size, err := vmm.ParseSize(f.size)
	if err != nil {
		return debian.Options{}, vmm.Invalidf("--size: %v", err)
	}
	mem, err := vmm.ParseSize(f.memory)
	if err != nil {
		return debian.Options{}, vmm.Invalidf("--memory: %v", err)
	}
	var keys []string
	for _, file := range f.sshKeys {
		k, err := image.ReadAuthorizedKeys(file)
		if err != nil {
			return debian.Options{}, vmm.Invalidf("--ssh-key: %v", err)
		}
		keys = append(keys, k...)
	}
	var pkgs []string
	for _, p := range f.packages {
		if p = strings.TrimSpace(p); p != "" {
			pkgs = append(pkgs, p)
		}
	}
	o := debian.Options{
		Release: f.release, Size: size, Packages: pkgs, Hostname: f.hostname,
		User: f.user, SSHKeys: keys, RootPassword: f.rootPassword, Format: f.format,
		Mirror: f.mirror, SecurityMirror: f.securityMirror, CPUs: f.cpus, MemoryBytes: mem,
	}
	if size == 0 {
		return o, vmm.Invalidf("--size 0: give the disk a size, e.g. --size %s", vmm.FormatSize(debian.DefaultSize))
	}
	return o, o.WithDefaults().Validate()
}

func newImageConvertCommand(c *cli) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "convert IN OUT [--format raw|qcow2]",
		Short: "Convert a disk image between raw and qcow2 (with qemu-img)",
		Long: `Convert IN (raw or qcow2, recognised by its contents) to OUT. The output
format is --format, else OUT's extension (.qcow2 is qcow2, anything else raw).
OUT must not exist; it appears only when complete. Holes and zero blocks stay
unallocated.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return vmm.Invalidf("give IN and OUT: wisp image convert disk.raw disk.qcow2")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			in, out := args[0], args[1]
			f := format
			if f == "" {
				f = image.FormatRaw
				if strings.EqualFold(filepath.Ext(out), ".qcow2") {
					f = image.FormatQCOW2
				}
			}
			if err := image.CheckFormat(f); err != nil {
				return vmm.Invalidf("--format: %v", err)
			}
			if _, err := image.DetectFormat(in); err != nil {
				return vmm.Invalidf("IN %s: %v", in, err)
			}
			err := image.Convert(cmd.Context(), in, out, f, c.stderr)
			if errors.Is(err, image.ErrExists) {
				return vmm.Invalidf("%v", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s: %s\n", out, f)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: raw or qcow2 (default: from OUT's extension)")
	return cmd
}
