package qemu

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/vmm"
)

// Machine is a QEMU machine type wisp knows how to drive.
type Machine string

// Machine types. Q35 is the default: under TCG it boots Debian's cloud kernel
// as fast as microvm does when microvm boots at all (microvm has no HPET or
// ACPI PM timer, so the guest calibrates its TSC against the PIT, which
// fails on a loaded host and then hangs the boot), and it has PCIe for the
// vhost-user-*-pci devices the device plane adds.
const (
	MachineQ35 Machine = "q35"
	MachinePC  Machine = "pc"
)

// Fixed ids on QEMU's command line; Devices may refer to MemoryBackendID.
const (
	MemoryBackendID = "wispmem"
	qmpChardevID    = "wispqmp"
	consoleID       = "wispcon"
	debugconID      = "wispdbg"
)

// BootMarkerPort is the I/O port whose bytes wisp reports as boot markers
// (Options.OnBootMarker). wisp's KVM backend serves the same port.
const BootMarkerPort = 0x440

// QBootROM is the minimal firmware Debian's qemu-system-data ships. qboot
// boots a -kernel in a fraction of SeaBIOS's time and prints nothing, so the
// console shows the guest alone.
const QBootROM = "/usr/share/qemu/qboot.rom"

// FirmwareQEMUDefault as Options.Firmware keeps QEMU's own firmware
// (SeaBIOS) even where qboot is installed.
const FirmwareQEMUDefault = "qemu-default"

// defaultFirmware picks qboot where the package has it, else QEMU's default.
func defaultFirmware(firmware string) string {
	if firmware != "" {
		return firmware
	}
	if _, err := os.Stat(QBootROM); err == nil {
		return QBootROM
	}
	return FirmwareQEMUDefault
}

// Device is one extra device on QEMU's command line with an optional
// character device and network backend behind it. The vhost-user disks and
// nets of the device plane come in this way, e.g.
//
//	Chardev: "socket,id=disk0,path=/tmp/wisp-qemu-1/disk0.sock"
//	Device:  "vhost-user-blk-pci,chardev=disk0"
//
//	Chardev: "socket,id=net0chr,path=/tmp/wisp-qemu-1/net0.sock"
//	Netdev:  "vhost-user,id=net0,chardev=net0chr"
//	Device:  "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"
//
// Values are passed to QEMU verbatim, so a path inside them must have its
// commas doubled (see EscapeOpt). Guest RAM is the shared memfd backend
// MemoryBackendID, which vhost-user needs.
type Device struct {
	Chardev string // value of -chardev; empty for none
	Netdev  string // value of -netdev; empty for none
	Device  string // value of -device
	// Close, if set, releases what serves the device (a vhost-user
	// server). The backend calls it exactly once after QEMU has exited
	// (also when Start fails after the DeviceFunc returned), before the
	// runtime directory is removed, and waits for it.
	Close func() error
}

// DeviceFunc returns the extra devices for one VM. Start calls it with the
// VM's private runtime directory (0700, removed when the VM ends) after
// wisp's own sockets exist there and before QEMU starts, so a vhost-user
// server can listen in it for QEMU to connect to. An error aborts Start.
type DeviceFunc func(runtimeDir string) ([]Device, error)

// EscapeOpt doubles commas so s can be one value inside a QEMU option list
// such as -chardev socket,path=....
func EscapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// sockets are the paths of the unix sockets wisp listens on and QEMU
// connects to.
type sockets struct {
	QMP      string
	Console  string
	Debugcon string
}

// commandLine renders the arguments (without the binary) for cfg. It is pure
// so that table tests pin down every flag.
func commandLine(cfg vmm.Config, s sockets, o Options, extra []Device) ([]string, error) {
	firmwareBoot := cfg.Boot == vmm.BootFirmware
	if cfg.Kernel == "" && !firmwareBoot {
		return nil, fmt.Errorf("kernel: empty path: %w", vmm.ErrInvalidConfig)
	}
	if cfg.CPUs < 1 || cfg.CPUs > vmm.MaxCPUs {
		return nil, fmt.Errorf("cpus %d: want 1..%d: %w", cfg.CPUs, vmm.MaxCPUs, vmm.ErrInvalidConfig)
	}
	if cfg.MemoryBytes < vmm.MinMemory || cfg.MemoryBytes%(1<<20) != 0 {
		return nil, fmt.Errorf("memory %d bytes: the TCG backend needs a whole number of MiB, at least %d MiB: %w",
			cfg.MemoryBytes, vmm.MinMemory>>20, vmm.ErrInvalidConfig)
	}
	for _, p := range []string{cfg.Kernel, cfg.Initrd} {
		if strings.ContainsAny(p, "\x00") {
			return nil, fmt.Errorf("path %q contains NUL: %w", p, vmm.ErrInvalidConfig)
		}
	}
	machine := o.Machine
	if machine == "" {
		machine = MachineQ35
	}
	cpu := o.CPUModel
	if cpu == "" {
		cpu = "max"
	}
	mib := strconv.FormatUint(cfg.MemoryBytes>>20, 10) + "M"

	accel := "tcg"
	if o.TBSizeMiB > 0 {
		accel += ",tb-size=" + strconv.Itoa(o.TBSizeMiB)
	}

	args := []string{
		"-nodefaults", "-no-user-config", "-nographic",
		// Start paused: Start connects everything, then sends cont, so no
		// console byte or event is lost.
		"-S",
		"-accel", accel,
		"-machine", string(machine) + ",memory-backend=" + MemoryBackendID,
		"-cpu", cpu,
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", mib,
		// Shared so the vhost-user device servers can map guest RAM.
		"-object", "memory-backend-memfd,id=" + MemoryBackendID + ",size=" + mib + ",share=on",
	}
	if firmwareBoot {
		// QEMU's own SeaBIOS, which boots from disks (qboot only loads
		// -kernel); it tries the disks in PCI order, so the first --disk.
		args = append(args, "-boot", "strict=on")
	} else {
		args = append(args, "-kernel", cfg.Kernel)
		// New resolves an empty Firmware (defaultFirmware); this function
		// stays pure.
		if o.Firmware != "" && o.Firmware != FirmwareQEMUDefault {
			args = append(args, "-bios", o.Firmware)
		}
		if cfg.Initrd != "" {
			args = append(args, "-initrd", cfg.Initrd)
		}
		if cfg.Cmdline != "" {
			args = append(args, "-append", cfg.Cmdline)
		}
	}
	args = append(args,
		// QEMU connects to wisp's sockets (wisp listens), so nothing QEMU
		// writes is lost and QEMU fails at once if wisp is not there.
		"-chardev", "socket,id="+qmpChardevID+",path="+EscapeOpt(s.QMP),
		"-mon", "chardev="+qmpChardevID+",mode=control",
		"-chardev", "socket,id="+consoleID+",path="+EscapeOpt(s.Console),
		"-serial", "chardev:"+consoleID,
		"-chardev", "socket,id="+debugconID+",path="+EscapeOpt(s.Debugcon),
		"-device", fmt.Sprintf("isa-debugcon,iobase=%#x,chardev=%s", BootMarkerPort, debugconID),
		// pvpanic (ISA port 0x505, found by the guest through ACPI) reports
		// a guest panic. QEMU then emits GUEST_PANICKED and pauses the
		// vCPUs at once; the backend quits QEMU. (panic=shutdown would
		// leave the vCPUs running, and a guest with panic=-1 resets next,
		// racing the shutdown's reason.)
		"-device", "pvpanic",
		"-action", "panic=pause",
	)
	if cfg.OnReboot != vmm.RebootRestart {
		args = append(args, "-no-reboot")
	}
	for i, d := range extra {
		if d.Device == "" {
			return nil, fmt.Errorf("extra device %d: empty -device value", i)
		}
		if d.Chardev != "" {
			args = append(args, "-chardev", d.Chardev)
		}
		if d.Netdev != "" {
			args = append(args, "-netdev", d.Netdev)
		}
		args = append(args, "-device", d.Device)
	}
	if !o.NoSandbox {
		// The guest is hostile and QEMU parses everything it does: deny
		// QEMU the syscalls it never needs once running.
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	return args, nil
}
