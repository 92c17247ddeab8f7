package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/image"
	"github.com/wisp-vmm/wisp/image/vmdir"
	"github.com/wisp-vmm/wisp/vmm"
)

// applyMachineDir fills cfg from a directory made by `wisp image build`.
// Flags the user gave win over vm.json; --disk and --net add to its
// devices.
func applyMachineDir(cfg *vmm.Config, dir string, changed func(string) bool) error {
	m, err := vmdir.Load(dir)
	if err != nil {
		return err
	}
	cfg.Kernel, cfg.Initrd = m.Kernel, m.Initrd
	if !changed("cmdline") {
		cfg.Cmdline = m.Cmdline
	}
	if !changed("cpus") {
		cfg.CPUs = m.CPUs
	}
	if !changed("memory") {
		cfg.MemoryBytes = m.MemoryBytes
	}
	var disks []vmm.Disk
	for _, d := range m.Disks {
		disks = append(disks, vmm.Disk{Path: d.Path, ReadOnly: d.ReadOnly, Format: d.Format})
	}
	cfg.Disks = append(disks, cfg.Disks...)
	var nets []vmm.Net
	for _, n := range m.Nets {
		spec := n.Mode
		if n.Tap != "" {
			spec += ":" + n.Tap
		}
		if n.MAC != "" {
			spec += ",mac=" + n.MAC
		}
		parsed, err := vmm.ParseNet(spec)
		if err != nil {
			return vmm.Invalidf("%s: %v", filepath.Join(m.Dir, vmdir.FileName), err)
		}
		nets = append(nets, parsed)
	}
	cfg.Nets = append(nets, cfg.Nets...)
	return nil
}

// applyImage boots a disk image that carries its own kernel: the kernel
// and initrd are read out of its root filesystem (without mounting it,
// cached by the image's identity) and the image becomes /dev/vda. With
// --boot firmware the image's own bootloader does that instead.
func (c *cli) applyImage(ctx context.Context, cfg *vmm.Config, path string, changed func(string) bool) error {
	if _, err := os.Stat(path); err != nil {
		return vmm.Invalidf("--image %s: %v", path, err)
	}
	// The format comes from the name, never from the contents (a guest
	// may have written a qcow2 header into a raw image); a mismatch is
	// refused before anything reads the image.
	format, err := vmm.DiskFormat(path, "")
	if err != nil {
		return vmm.Invalidf("--image: %v", err)
	}
	if format == vmm.FormatQcow2 {
		// Open it as the VM will, before the boot files are read out of it:
		// a backing file (which --image does not allow) is refused here.
		d, err := blk.Open(blk.Options{Path: path, Format: format, ReadOnly: true})
		if err != nil {
			return vmm.Invalidf("--image: %v", err)
		}
		_ = d.Close()
	}
	if cfg.Boot == vmm.BootFirmware {
		// The image's own bootloader finds its kernel.
		cfg.Disks = append([]vmm.Disk{{Path: path, Format: format}}, cfg.Disks...)
		return nil
	}
	kernel, initrd, root, err := image.ExtractBoot(ctx, path, filepath.Join(imageCacheDir(), "boot"))
	if err != nil {
		return fmt.Errorf("--image %s: %w", path, err)
	}
	cfg.Kernel, cfg.Initrd = kernel, initrd
	if !changed("cmdline") {
		cfg.Cmdline = root + " ro " + vmm.DefaultCmdline
	}
	cfg.Disks = append([]vmm.Disk{{Path: path, Format: format}}, cfg.Disks...)
	return nil
}

// seedFlags are what a NoCloud seed carries.
type seedFlags struct {
	userData, hostname string
	sshKeys            []string
}

func (s seedFlags) wanted() bool { return s.userData != "" || s.hostname != "" || len(s.sshKeys) > 0 }

// attachSeed builds a NoCloud seed (cloud-init's "cidata" ISO) in memory
// and adds it as a read-only disk, /proc/self/fd/N: wisp itself opens its
// disks (QEMU reaches them over vhost-user), so the seed's user-data and
// keys are never on a disk, and go with wisp however it ends. The returned
// cleanup closes the memory file; keep it until the VM has ended.
func attachSeed(cfg *vmm.Config, s seedFlags) (cleanup func(), err error) {
	opts := image.SeedOptions{Hostname: s.hostname}
	if s.userData != "" {
		b, err := os.ReadFile(s.userData)
		if err != nil {
			return nil, vmm.Invalidf("--user-data %s: %v", s.userData, err)
		}
		if err := image.CheckUserData(b); err != nil {
			return nil, vmm.Invalidf("--user-data %s: %v", s.userData, err)
		}
		opts.UserData = b
	}
	if s.hostname != "" {
		if err := image.CheckHostname(s.hostname); err != nil {
			return nil, vmm.Invalidf("--hostname %s: %v", s.hostname, err)
		}
	}
	for _, k := range s.sshKeys {
		keys, err := image.ReadAuthorizedKeys(k)
		if err != nil {
			return nil, vmm.Invalidf("--ssh-key %s: %v", k, err)
		}
		opts.SSHKeys = append(opts.SSHKeys, keys...)
	}
	seed, err := image.NoCloudSeedMemory(opts)
	if err != nil {
		return nil, err
	}
	path := fmt.Sprintf("/proc/self/fd/%d", seed.Fd())
	cfg.Disks = append(cfg.Disks, vmm.Disk{Path: path, ReadOnly: true, Format: vmm.FormatRaw})
	return func() { seed.Close() }, nil
}
