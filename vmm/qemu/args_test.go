package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
)

var testSockets = sockets{
	QMP:      "/run/w/qmp.sock",
	Console:  "/run/w/console.sock",
	Debugcon: "/run/w/debugcon.sock",
}

func baseConfig() vmm.Config {
	return vmm.Config{
		Kernel:      "/k/vmlinuz",
		Initrd:      "/k/initrd.img",
		Cmdline:     vmm.DefaultCmdline,
		CPUs:        2,
		MemoryBytes: 512 << 20,
		Console:     vmm.ConsoleStdio,
		Accel:       vmm.AccelTCG,
		OnReboot:    vmm.RebootExit,
	}
}

// wiring is the part of every command line that connects QEMU to wisp.
var wiring = []string{
	"-chardev", "socket,id=wispqmp,path=/run/w/qmp.sock",
	"-mon", "chardev=wispqmp,mode=control",
	"-chardev", "socket,id=wispcon,path=/run/w/console.sock",
	"-serial", "chardev:wispcon",
	"-chardev", "socket,id=wispdbg,path=/run/w/debugcon.sock",
	"-device", "isa-debugcon,iobase=0x440,chardev=wispdbg",
	"-device", "pvpanic",
	"-action", "panic=pause",
}

var sandbox = []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestCommandLine(t *testing.T) {
	head := func(machine, accel, cpu, smp, mem string) []string {
		return []string{
			"-nodefaults", "-no-user-config", "-nographic", "-S",
			"-accel", accel,
			"-machine", machine + ",memory-backend=wispmem",
			"-cpu", cpu,
			"-smp", smp,
			"-m", mem,
			"-object", "memory-backend-memfd,id=wispmem,size=" + mem + ",share=on",
		}
	}
	tests := []struct {
		name  string
		cfg   func(*vmm.Config)
		opts  Options
		extra []Device
		want  []string
	}{
		{
			name: "defaults",
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "no initrd, no cmdline",
			cfg:  func(c *vmm.Config) { c.Initrd, c.Cmdline = "", "" },
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz"}, wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "reboot restarts in place",
			cfg:  func(c *vmm.Config) { c.OnReboot = vmm.RebootRestart },
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, sandbox),
		},
		{
			name: "one cpu, 4 GiB, pc, qemu64, tb-size, no sandbox",
			cfg:  func(c *vmm.Config) { c.CPUs, c.MemoryBytes = 1, 4<<30 },
			opts: Options{Machine: MachinePC, CPUModel: "qemu64", TBSizeMiB: 256, NoSandbox: true},
			want: join(head("pc", "tcg,tb-size=256", "qemu64", "1", "4096M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"}),
		},
		{
			name: "qboot firmware",
			opts: Options{Firmware: QBootROM},
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-bios", QBootROM, "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "firmware boot: SeaBIOS from the disks, no kernel, qboot ignored",
			cfg:  func(c *vmm.Config) { c.Boot, c.Kernel, c.Initrd = vmm.BootFirmware, "", "" },
			opts: Options{Firmware: QBootROM},
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-boot", "strict=on"},
				wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "QEMU's default firmware",
			opts: Options{Firmware: FirmwareQEMUDefault},
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "cmdline with commas and spaces is one argument",
			cfg:  func(c *vmm.Config) { c.Cmdline = "console=ttyS0,115200 root=/dev/vda rw" },
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", "console=ttyS0,115200 root=/dev/vda rw"},
				wiring, []string{"-no-reboot"}, sandbox),
		},
		{
			name: "extra devices come after wisp's own",
			extra: []Device{
				{Chardev: "socket,id=disk0,path=/run/w/disk0.sock", Device: "vhost-user-blk-pci,chardev=disk0"},
				{Device: "virtio-rng-pci"},
			},
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"},
				[]string{"-chardev", "socket,id=disk0,path=/run/w/disk0.sock", "-device", "vhost-user-blk-pci,chardev=disk0",
					"-device", "virtio-rng-pci"},
				sandbox),
		},
		{
			name: "a vhost-user net: chardev, netdev, then the device",
			extra: []Device{
				{Chardev: "socket,id=disk0,path=/run/w/disk0.sock", Device: "vhost-user-blk-pci,chardev=disk0"},
				{
					Chardev: "socket,id=net0chr,path=/run/w/net0.sock",
					Netdev:  "vhost-user,id=net0,chardev=net0chr",
					Device:  "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56",
				},
			},
			want: join(head("q35", "tcg", "max", "2", "512M"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", vmm.DefaultCmdline},
				wiring, []string{"-no-reboot"},
				[]string{"-chardev", "socket,id=disk0,path=/run/w/disk0.sock", "-device", "vhost-user-blk-pci,chardev=disk0",
					"-chardev", "socket,id=net0chr,path=/run/w/net0.sock", "-netdev", "vhost-user,id=net0,chardev=net0chr",
					"-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"},
				sandbox),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			got, err := commandLine(cfg, testSockets, tt.opts, tt.extra)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCommandLineEscapesSocketPaths(t *testing.T) {
	s := sockets{QMP: "/run/a,b/qmp.sock", Console: "/run/a,b/c.sock", Debugcon: "/run/a,b/d.sock"}
	got, err := commandLine(baseConfig(), s, Options{}, nil)
	require.NoError(t, err)
	assert.Contains(t, got, "socket,id=wispqmp,path=/run/a,,b/qmp.sock")
	assert.Contains(t, got, "socket,id=wispcon,path=/run/a,,b/c.sock")
	assert.Contains(t, got, "socket,id=wispdbg,path=/run/a,,b/d.sock")
}

func TestCommandLineRejects(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*vmm.Config)
		extra []Device
	}{
		{"no kernel", func(c *vmm.Config) { c.Kernel = "" }, nil},
		{"zero cpus", func(c *vmm.Config) { c.CPUs = 0 }, nil},
		{"too many cpus", func(c *vmm.Config) { c.CPUs = vmm.MaxCPUs + 1 }, nil},
		{"too little memory", func(c *vmm.Config) { c.MemoryBytes = 8 << 20 }, nil},
		{"memory not whole MiB", func(c *vmm.Config) { c.MemoryBytes = 256<<20 + 4096 }, nil},
		{"NUL in kernel path", func(c *vmm.Config) { c.Kernel = "/k/\x00" }, nil},
		{"extra device without -device", nil, []Device{{Chardev: "socket,id=x,path=/x"}}},
		{"netdev without -device", nil, []Device{{Netdev: "vhost-user,id=n,chardev=x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := commandLine(cfg, testSockets, Options{}, tt.extra)
			require.Error(t, err)
			if tt.extra == nil {
				assert.ErrorIs(t, err, vmm.ErrInvalidConfig)
			}
		})
	}
}

func TestDefaultFirmware(t *testing.T) {
	assert.Equal(t, "/my/bios.bin", defaultFirmware("/my/bios.bin"))
	assert.Equal(t, FirmwareQEMUDefault, defaultFirmware(FirmwareQEMUDefault))
	want := FirmwareQEMUDefault
	if _, err := os.Stat(QBootROM); err == nil {
		want = QBootROM
	}
	assert.Equal(t, want, defaultFirmware(""))
}

func TestEscapeOpt(t *testing.T) {
	assert.Equal(t, "a,,b,,,,c", EscapeOpt("a,b,,c"))
	assert.Equal(t, "/plain/path", EscapeOpt("/plain/path"))
}

func TestNewNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // a PATH without QEMU
	_, err := New(baseConfig(), vmm.Console{}, Options{})
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.Equal(t, "qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`", err.Error())

	_, err = New(baseConfig(), vmm.Console{}, Options{Binary: "/nonexistent/qemu"})
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)

	notExec := filepath.Join(t.TempDir(), "qemu")
	require.NoError(t, os.WriteFile(notExec, nil, 0o644))
	_, err = New(baseConfig(), vmm.Console{}, Options{Binary: notExec})
	require.ErrorIs(t, err, ErrNotInstalled)
}

func TestNewRejectsBadConfig(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755))
	cfg := baseConfig()
	cfg.MemoryBytes = 3
	_, err := New(cfg, vmm.Console{}, Options{Binary: fake})
	require.ErrorIs(t, err, vmm.ErrInvalidConfig)
}

// splitOpts splits a QEMU option list the way QEMU does: a single comma
// separates, a doubled comma is a literal comma.
func splitOpts(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(parts, cur.String())
}

// FuzzCommandLine: whatever the paths and command line, the builder never
// panics, and a socket path cannot add options to its -chardev.
func FuzzCommandLine(f *testing.F) {
	f.Add("/k/vmlinuz", "/k/initrd", "console=ttyS0", "/run/w", 1, uint64(256<<20))
	f.Add("/k,x", "", "a,b", "/run/a,,b,path=/etc/passwd", 64, uint64(1<<40))
	f.Add("", "", "", "", 0, uint64(0))
	f.Fuzz(func(t *testing.T, kernel, initrd, cmdline, dir string, cpus int, mem uint64) {
		cfg := vmm.Config{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, CPUs: cpus, MemoryBytes: mem}
		s := sockets{QMP: dir + "/qmp.sock", Console: dir + "/c.sock", Debugcon: dir + "/d.sock"}
		args, err := commandLine(cfg, s, Options{}, nil)
		if err != nil {
			return
		}
		for i, a := range args {
			if a != "-chardev" || i+1 >= len(args) {
				continue
			}
			opts := splitOpts(args[i+1])
			if len(opts) != 3 || !strings.HasPrefix(opts[2], "path=") {
				t.Fatalf("-chardev %q splits into %q", args[i+1], opts)
			}
			if p := strings.TrimPrefix(opts[2], "path="); p != s.QMP && p != s.Console && p != s.Debugcon {
				t.Fatalf("path %q is none of the sockets", p)
			}
		}
	})
}
