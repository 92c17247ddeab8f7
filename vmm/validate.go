package vmm

import (
	"errors"
	"fmt"
	"os"
	"strconv"
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

// Validate checks c against the host. Every error is a *FieldError naming
// the Config field at fault and how to fix it, and matches
// ErrInvalidConfig.
func (c Config) Validate(hostMemory uint64) error {
	if c.Boot == BootFirmware {
		return c.ValidateMachine(hostMemory)
	}
	if c.Kernel == "" {
		return fieldError("Kernel", "", "required: give the path of a Linux bzImage or ELF vmlinux")
	}
	if err := readableFile("Kernel", c.Kernel); err != nil {
		return err
	}
	if c.Initrd != "" {
		if err := readableFile("Initrd", c.Initrd); err != nil {
			return err
		}
	}
	return c.ValidateMachine(hostMemory)
}

// ValidateMachine checks everything but the boot files, for callers that
// fill those in later (the default guest).
func (c Config) ValidateMachine(hostMemory uint64) error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fieldError("CPUs", strconv.Itoa(c.CPUs), "want 1 to %d", MaxCPUs)
	}
	// MemoryBytes goes out in plain bytes, exact for a program; the CLI
	// prints it back as a size.
	mem := strconv.FormatUint(c.MemoryBytes, 10)
	if c.MemoryBytes < MinMemory {
		return fieldError("MemoryBytes", mem, "want at least %s", FormatSize(MinMemory))
	}
	if hostMemory > 0 && c.MemoryBytes > hostMemory {
		return fieldError("MemoryBytes", mem, "more than the host's %.1fG", float64(hostMemory)/(1<<30))
	}
	if c.MemoryBytes%(2<<20) != 0 {
		return fieldError("MemoryBytes", mem, "use a multiple of 2M")
	}
	if strings.ContainsRune(c.Cmdline, 0) {
		return fieldError("Cmdline", "", "contains a NUL byte: remove it")
	}
	switch c.Console {
	case ConsoleStdio, ConsoleNone:
	case ConsoleFile:
		if c.ConsolePath == "" {
			return fieldError("ConsolePath", "", "a file console needs the path of its file")
		}
	default:
		return fieldError("Console", string(c.Console), "use stdio, file:PATH or none")
	}
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return fieldError("Accel", string(c.Accel), "use auto, kvm or tcg")
	}
	switch c.OnReboot {
	case RebootExit, RebootRestart:
	default:
		return fieldError("OnReboot", string(c.OnReboot), "use exit or restart")
	}
	switch c.Boot {
	case BootKernel:
	case BootFirmware:
		if c.Kernel != "" || c.Initrd != "" {
			return fieldError("Boot", string(c.Boot), "boots the disk's own bootloader, not a kernel: drop the kernel and initrd (or boot the kernel)")
		}
		if len(c.Disks) == 0 {
			return fieldError("Boot", string(c.Boot), "needs a disk with a bootloader: add one")
		}
		if c.Accel == AccelKVM {
			return fieldError("Accel", string(c.Accel), "firmware boot runs on the TCG backend (wisp's KVM VMM has no BIOS): use tcg or auto")
		}
	default:
		return fieldError("Boot", string(c.Boot), "use kernel or firmware")
	}
	return c.validateDevices()
}

// readableFile checks that path, the value of field, is a regular file this
// process can open.
func readableFile(field, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return &FieldError{Field: field, Value: path, Msg: "no such file", Err: err}
		}
		return &FieldError{Field: field, Value: path, Msg: err.Error(), Err: err}
	}
	if !st.Mode().IsRegular() {
		return fieldError(field, path, "not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return &FieldError{Field: field, Value: path, Msg: "cannot read: " + err.Error(), Err: err}
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
		return &FieldError{Field: "Kernel", Value: c.Kernel, Msg: err.Error(), Err: err}
	}
	defer kf.Close()
	kernel := kf.Bytes()
	var initrd []byte
	if c.Initrd != "" {
		f, err := memory.MapFile(c.Initrd)
		if err != nil {
			return &FieldError{Field: "Initrd", Value: c.Initrd, Msg: err.Error(), Err: err}
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
		return &FieldError{Field: "Initrd", Value: c.Initrd, Err: err,
			Msg: fmt.Sprintf("its %s does not fit in %s of memory next to the kernel: give the guest more memory", FormatSize(uint64(len(initrd))), FormatSize(c.MemoryBytes))}
	case errors.Is(err, boot.ErrNoRoom):
		return &FieldError{Field: "Kernel", Value: c.Kernel, Err: err,
			Msg: fmt.Sprintf("does not fit in %s of memory: give the guest more memory", FormatSize(c.MemoryBytes))}
	case errors.Is(err, boot.ErrCmdlineTooLong):
		return &FieldError{Field: "Cmdline", Msg: err.Error() + ": shorten it", Err: err}
	}
	return &FieldError{Field: "Kernel", Value: c.Kernel, Msg: err.Error(), Err: err}
}
