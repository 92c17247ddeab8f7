package vmm

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/boot"
	"github.com/wisp-vmm/wisp/vmm/memory"
)

// HostMemory reports the host's total RAM in bytes.
func HostMemory() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// WithDefaults fills the fields a user may leave out.
func (c Config) WithDefaults() Config {
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemory
	}
	if c.Cmdline == "" {
		c.Cmdline = DefaultCmdline
	}
	if c.Console == "" {
		c.Console = ConsoleStdio
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
	}
	if c.OnReboot == "" {
		c.OnReboot = RebootExit
	}
	if c.KVMDevice == "" {
		c.KVMDevice = DefaultKVM
	}
	if c.Boot == "" {
		c.Boot = BootKernel
	}
	nets := make([]Net, len(c.Nets))
	for i, n := range c.Nets {
		if len(n.MAC) == 0 {
			// crypto/rand does not fail on Linux; a nil MAC is caught by
			// Validate if it ever did.
			n.MAC, _ = RandomMAC()
		}
		nets[i] = n
	}
	c.Nets = nets
	return c
}

// Validate checks c against the host. Every error names the flag at fault
// and how to fix it, and wraps ErrInvalidConfig.
func (c Config) Validate(hostMemory uint64) error {
	if c.Boot == BootFirmware {
		return c.ValidateMachine(hostMemory)
	}
	if c.Kernel == "" {
		return invalid("--kernel is required: give the path of a Linux bzImage or ELF vmlinux")
	}
	if err := readableFile("--kernel", c.Kernel); err != nil {
		return err
	}
	if c.Initrd != "" {
		if err := readableFile("--initrd", c.Initrd); err != nil {
			return err
		}
	}
	return c.ValidateMachine(hostMemory)
}

// ValidateMachine checks everything but the boot files, for callers that
// fill those in later (the default guest).
func (c Config) ValidateMachine(hostMemory uint64) error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return invalid("--cpus %d: want 1 to %d", c.CPUs, MaxCPUs)
	}
	if c.MemoryBytes < MinMemory {
		return invalid("--memory %s: want at least %s", FormatSize(c.MemoryBytes), FormatSize(MinMemory))
	}
	if hostMemory > 0 && c.MemoryBytes > hostMemory {
		return invalid("--memory %s: more than the host's %.1fG", FormatSize(c.MemoryBytes), float64(hostMemory)/(1<<30))
	}
	if c.MemoryBytes%(2<<20) != 0 {
		return invalid("--memory %s: use a multiple of 2M", FormatSize(c.MemoryBytes))
	}
	if strings.ContainsRune(c.Cmdline, 0) {
		return invalid("--cmdline contains a NUL byte")
	}
	switch c.Console {
	case ConsoleStdio, ConsoleNone:
	case ConsoleFile:
		if c.ConsolePath == "" {
			return invalid("--console file: needs a path, e.g. --console file:/tmp/console.log")
		}
	default:
		return invalid("--console %q: use stdio, file:PATH or none", c.Console)
	}
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return invalid("--accel %q: use auto, kvm or tcg", c.Accel)
	}
	switch c.OnReboot {
	case RebootExit, RebootRestart:
	default:
		return invalid("--on-reboot %q: use exit or restart", c.OnReboot)
	}
	switch c.Boot {
	case BootKernel:
	case BootFirmware:
		if c.Kernel != "" || c.Initrd != "" {
			return invalid("--boot firmware boots the disk's own bootloader: drop --kernel and --initrd (or drop --boot firmware)")
		}
		if len(c.Disks) == 0 {
			return invalid("--boot firmware needs a disk with a bootloader: add --disk PATH")
		}
		if c.Accel == AccelKVM {
			return invalid("--boot firmware runs on the TCG backend (wisp's KVM VMM has no BIOS): use --accel tcg or auto")
		}
	default:
		return invalid("--boot %q: use kernel or firmware", c.Boot)
	}
	return c.validateDevices()
}

func readableFile(flag, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return invalid("%s %s: no such file", flag, path)
		}
		return invalid("%s %s: %v", flag, path, err)
	}
	if !st.Mode().IsRegular() {
		return invalid("%s %s: not a regular file", flag, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return invalid("%s %s: cannot read: %v", flag, path, err)
	}
	return f.Close()
}

// ParseConsole reads the --console flag: stdio, none or file:PATH.
func ParseConsole(s string) (ConsoleKind, string, error) {
	switch {
	case s == "stdio" || s == "":
		return ConsoleStdio, "", nil
	case s == "none":
		return ConsoleNone, "", nil
	case strings.HasPrefix(s, "file:") && len(s) > len("file:"):
		return ConsoleFile, strings.TrimPrefix(s, "file:"), nil
	}
	return "", "", invalid("--console %q: use stdio, file:PATH or none", s)
}

// FormatSize prints a byte count the way users type it (256M, 1G).
func FormatSize(n uint64) string {
	units := []string{"", "K", "M", "G", "T"}
	i := 0
	for i < len(units)-1 && n >= 1024 && n%1024 == 0 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d%s", n, units[i])
}

// CheckBoot reads the kernel and initrd and runs the loader against
// memory that keeps nothing, so a file that is not a kernel, an initrd that
// cannot fit or a command line that is too long is reported in one line
// before any backend starts, the same way for KVM and for QEMU.
func (c Config) CheckBoot() error {
	if c.Boot == BootFirmware {
		return nil // the firmware reads the disk; there is no kernel to check
	}
	kf, err := memory.MapFile(c.Kernel)
	if err != nil {
		return invalid("--kernel %s: %v", c.Kernel, err)
	}
	defer kf.Close()
	kernel := kf.Bytes()
	var initrd []byte
	if c.Initrd != "" {
		f, err := memory.MapFile(c.Initrd)
		if err != nil {
			return invalid("--initrd %s: %v", c.Initrd, err)
		}
		defer f.Close()
		initrd = f.Bytes()
	}
	var ram []boot.Region
	for _, r := range memory.Layout(c.MemoryBytes) {
		ram = append(ram, boot.Region{GuestAddr: r.GuestAddr, Size: r.Size})
	}
	err = boot.Check(boot.Config{Kernel: kernel, Initrd: initrd, Cmdline: c.Cmdline, RAM: ram, CPUs: c.CPUs}, c.MemoryBytes)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, boot.ErrInitrdTooLarge):
		return invalid("--initrd %s (%s) does not fit in --memory %s next to the kernel: give the guest more memory", c.Initrd, FormatSize(uint64(len(initrd))), FormatSize(c.MemoryBytes))
	case errors.Is(err, boot.ErrNoRoom):
		return invalid("--kernel %s does not fit in --memory %s: give the guest more memory", c.Kernel, FormatSize(c.MemoryBytes))
	case errors.Is(err, boot.ErrCmdlineTooLong):
		return invalid("--cmdline: %v", err)
	}
	return invalid("--kernel %s: %v", c.Kernel, err)
}
