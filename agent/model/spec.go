package model

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/wisp-vmm/wisp/vmm"
)

// Spec is what `wisp vm create` sends. It mirrors `wisp run`'s flags so the
// daemon can turn it into a command line (Args). Paths are absolute because
// the agent resolves them, not the client: a relative path would mean the
// agent's working directory.
type Spec struct {
	Kernel      string   `json:"kernel,omitempty"`
	Initrd      string   `json:"initrd,omitempty"`
	Cmdline     string   `json:"cmdline,omitempty"`
	CPUs        int      `json:"cpus"`
	MemoryBytes uint64   `json:"memory_bytes"`
	Disks       []string `json:"disks,omitempty"` // --disk values, e.g. "/srv/a.img,ro"
	Nets        []string `json:"nets,omitempty"`  // --net values
	Image       string   `json:"image,omitempty"`
	VMDir       string   `json:"vm_dir,omitempty"`
	RNG         *bool    `json:"rng,omitempty"` // nil: wisp run's default (on)
	Boot        string   `json:"boot,omitempty"`
	Accel       string   `json:"accel,omitempty"`
	SSHKeys     []string `json:"ssh_keys,omitempty"`  // --ssh-key files
	UserData    string   `json:"user_data,omitempty"` // --user-data file
	Hostname    string   `json:"hostname,omitempty"`
	Command     []string `json:"command,omitempty"` // -- CMD ARGS
	OnReboot    string   `json:"on_reboot,omitempty"`
}

// Limits Validate enforces; MaxCPUs is wisp run's own limit.
const (
	MaxCPUs        = 64
	MinMemoryBytes = 16 << 20
)

// Validate checks what can be checked without touching the host: sizes,
// which boot sources go together, that paths are absolute, and that disk
// and NIC values parse the way `wisp run` parses them. Whether the files
// exist is the VMM's to say when it starts. The error is a *FieldError
// naming the first bad field.
func (s Spec) Validate() error {
	if s.CPUs < 1 || s.CPUs > MaxCPUs {
		return &FieldError{Field: "cpus", Msg: fmt.Sprintf("%d; want 1 to %d", s.CPUs, MaxCPUs)}
	}
	if s.MemoryBytes < MinMemoryBytes {
		return &FieldError{Field: "memory_bytes", Msg: fmt.Sprintf("%d; want at least %d (16 MiB)", s.MemoryBytes, MinMemoryBytes)}
	}
	sources := 0
	for _, src := range []string{s.Kernel, s.Image, s.VMDir} {
		if src != "" {
			sources++
		}
	}
	if sources > 1 {
		return &FieldError{Field: "kernel", Msg: "give at most one of kernel, image and vm_dir"}
	}
	if s.Initrd != "" && s.Kernel == "" {
		return &FieldError{Field: "initrd", Msg: "needs kernel"}
	}
	if len(s.Command) > 0 && (s.Image != "" || s.VMDir != "") {
		return &FieldError{Field: "command", Msg: "runs through wisp's own init, which image and vm_dir do not use"}
	}
	paths := []struct{ field, path string }{
		{"kernel", s.Kernel}, {"initrd", s.Initrd}, {"image", s.Image},
		{"vm_dir", s.VMDir}, {"user_data", s.UserData},
	}
	for i, k := range s.SSHKeys {
		paths = append(paths, struct{ field, path string }{fmt.Sprintf("ssh_keys[%d]", i), k})
	}
	for _, p := range paths {
		if err := checkAbs(p.field, p.path); err != nil {
			return err
		}
	}
	for i, d := range s.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		disk, err := vmm.ParseDisk(d)
		if err != nil {
			return &FieldError{Field: field, Msg: err.Error()}
		}
		if err := checkAbs(field, disk.Path); err != nil {
			return err
		}
	}
	for i, n := range s.Nets {
		if _, err := vmm.ParseNet(n); err != nil {
			return &FieldError{Field: fmt.Sprintf("nets[%d]", i), Msg: err.Error()}
		}
	}
	choices := []struct {
		field, value string
		allowed      []string
	}{
		{"boot", s.Boot, []string{string(vmm.BootKernel), string(vmm.BootFirmware)}},
		{"accel", s.Accel, []string{string(vmm.AccelAuto), string(vmm.AccelKVM), string(vmm.AccelTCG)}},
		{"on_reboot", s.OnReboot, []string{string(vmm.RebootExit), string(vmm.RebootRestart)}},
	}
	for _, c := range choices {
		if err := checkChoice(c.field, c.value, c.allowed); err != nil {
			return err
		}
	}
	return nil
}

func checkAbs(field, path string) error {
	if path != "" && !filepath.IsAbs(path) {
		return &FieldError{Field: field, Msg: fmt.Sprintf("%q is relative; give an absolute path (the agent resolves it, not the client)", path)}
	}
	return nil
}

func checkChoice(field, value string, allowed []string) error {
	if value == "" {
		return nil
	}
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return &FieldError{Field: field, Msg: fmt.Sprintf("%q; want one of %v", value, allowed)}
}

// Args returns the `wisp run` flags for s, without the ones the daemon adds
// itself (--api-sock, --console). Memory is a plain byte count, which
// vmm.ParseSize reads exactly. The guest command, if any, comes last after
// "--".
func (s Spec) Args() []string {
	var args []string
	flag := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	flag("kernel", s.Kernel)
	flag("initrd", s.Initrd)
	flag("cmdline", s.Cmdline)
	flag("cpus", strconv.Itoa(s.CPUs))
	flag("memory", strconv.FormatUint(s.MemoryBytes, 10))
	for _, d := range s.Disks {
		flag("disk", d)
	}
	for _, n := range s.Nets {
		flag("net", n)
	}
	flag("image", s.Image)
	flag("vm", s.VMDir)
	if s.RNG != nil {
		// A bool flag takes its value only after '='.
		args = append(args, "--rng="+strconv.FormatBool(*s.RNG))
	}
	flag("boot", s.Boot)
	flag("accel", s.Accel)
	flag("on-reboot", s.OnReboot)
	for _, k := range s.SSHKeys {
		flag("ssh-key", k)
	}
	flag("user-data", s.UserData)
	flag("hostname", s.Hostname)
	if len(s.Command) > 0 {
		args = append(args, "--")
		args = append(args, s.Command...)
	}
	return args
}
