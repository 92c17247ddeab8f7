// Package vmdir reads and writes a machine directory: a directory holding a
// VM's disk images, kernel and initrd, and vm.json, which says how to boot
// them. `wisp image build` writes one; `wisp run --vm DIR` boots one.
//
// Paths inside vm.json are relative to the directory, so a machine
// directory can be moved or copied as a whole. Load treats vm.json as user
// input: every field is checked and every error is one line that names the
// file, the field and the fix, and matches vmm.ErrInvalidConfig.
package vmdir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/wisp-vmm/wisp/vmm"
)

// FileName is the machine description inside a machine directory.
const FileName = "vm.json"

// maxFileSize bounds how much of vm.json Load reads: a description is a
// few hundred bytes, so anything larger is not one.
const maxFileSize = 1 << 20

// Disk formats a machine directory may hold.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// Network modes.
const (
	// NetUser is user-mode networking: no host setup, outbound only.
	NetUser = "user"
	// NetTap attaches the NIC to an existing host tap device.
	NetTap = "tap"
)

// Machine is a loaded, validated machine directory. All paths are
// absolute.
type Machine struct {
	// Dir is the machine directory.
	Dir string
	// Kernel is the bzImage or ELF vmlinux to boot.
	Kernel string
	// Initrd is the initial ramdisk, "" for none.
	Initrd string
	// Cmdline is the kernel command line.
	Cmdline string
	// CPUs is the number of vCPUs.
	CPUs int
	// MemoryBytes is the guest RAM.
	MemoryBytes uint64
	// Disks are attached in order: the first is /dev/vda.
	Disks []Disk
	// Nets are the NICs, in order.
	Nets []Net
}

// Disk is one virtio-blk disk.
type Disk struct {
	Path     string `json:"path"`
	Format   string `json:"format"`
	ReadOnly bool   `json:"readonly,omitempty"`
}

// Net is one virtio-net NIC.
type Net struct {
	// Mode is NetUser or NetTap.
	Mode string `json:"mode"`
	// Tap is the host tap device's name (NetTap only).
	Tap string `json:"tap,omitempty"`
	// MAC is the NIC's address, "" for one chosen by wisp.
	MAC string `json:"mac,omitempty"`
}

// file is vm.json as stored: sizes as people write them, paths relative.
type file struct {
	CPUs    int    `json:"cpus"`
	Memory  string `json:"memory"`
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline"`
	Disks   []Disk `json:"disks"`
	Nets    []Net  `json:"nets,omitempty"`
}

// Load reads and validates dir/vm.json and checks that the files it names
// exist inside dir.
func Load(dir string) (*Machine, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, vmm.Invalidf("--vm %s: %v", dir, err)
	}
	path := filepath.Join(abs, FileName)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if st, serr := os.Stat(abs); serr != nil || !st.IsDir() {
				return nil, vmm.Invalidf("--vm %s: no such directory: give a directory made by `wisp image build`", dir)
			}
			return nil, vmm.Invalidf("--vm %s: no %s in it: give a directory made by `wisp image build`", dir, FileName)
		}
		return nil, vmm.Invalidf("--vm %s: %v", dir, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, vmm.Invalidf("%s: %v", path, err)
	}
	if len(b) > maxFileSize {
		return nil, vmm.Invalidf("%s: larger than %d bytes: not a machine description", path, maxFileSize)
	}
	return Parse(abs, b)
}

// Parse validates the contents of a vm.json that lives in dir.
func Parse(dir string, data []byte) (*Machine, error) {
	path := filepath.Join(dir, FileName)
	var fl file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fl); err != nil {
		return nil, vmm.Invalidf("%s: %v: fix the JSON (see `wisp image build` for an example)", path, err)
	}
	if dec.More() {
		return nil, vmm.Invalidf("%s: trailing data after the JSON object", path)
	}
	bad := func(format string, args ...any) error {
		return vmm.Invalidf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	m := &Machine{Dir: dir, CPUs: fl.CPUs, Cmdline: fl.Cmdline}

	if fl.CPUs < 1 || fl.CPUs > vmm.MaxCPUs {
		return nil, bad("cpus %d: want 1 to %d", fl.CPUs, vmm.MaxCPUs)
	}
	if fl.Memory == "" {
		return nil, bad(`memory is missing: give the guest RAM, e.g. "memory": "1G"`)
	}
	mem, err := vmm.ParseSize(fl.Memory)
	if err != nil {
		return nil, bad("memory: %v", err)
	}
	if mem < vmm.MinMemory {
		return nil, bad("memory %s: want at least %s", fl.Memory, vmm.FormatSize(vmm.MinMemory))
	}
	if mem%(2<<20) != 0 {
		return nil, bad("memory %s: use a multiple of 2M", fl.Memory)
	}
	m.MemoryBytes = mem
	if strings.ContainsRune(fl.Cmdline, 0) {
		return nil, bad("cmdline contains a NUL byte")
	}

	if fl.Kernel == "" {
		return nil, bad(`kernel is missing: name the kernel file, e.g. "kernel": "vmlinuz"`)
	}
	if m.Kernel, err = inside(dir, fl.Kernel); err != nil {
		return nil, bad("kernel: %v", err)
	}
	if fl.Initrd != "" {
		if m.Initrd, err = inside(dir, fl.Initrd); err != nil {
			return nil, bad("initrd: %v", err)
		}
	}

	if len(fl.Disks) == 0 {
		return nil, bad(`disks is empty: name at least the root disk, e.g. "disks": [{"path": "disk.raw", "format": "raw"}]`)
	}
	for i, d := range fl.Disks {
		if d.Path == "" {
			return nil, bad("disks[%d].path is missing", i)
		}
		p, err := inside(dir, d.Path)
		if err != nil {
			return nil, bad("disks[%d].path: %v", i, err)
		}
		switch d.Format {
		case FormatRaw, FormatQCOW2:
		case "":
			return nil, bad("disks[%d].format is missing: use raw or qcow2", i)
		default:
			return nil, bad("disks[%d].format %q: use raw or qcow2", i, d.Format)
		}
		if err := checkFormat(p, d.Format); err != nil {
			return nil, bad("disks[%d]: %v", i, err)
		}
		m.Disks = append(m.Disks, Disk{Path: p, Format: d.Format, ReadOnly: d.ReadOnly})
	}

	for i, n := range fl.Nets {
		switch n.Mode {
		case NetUser:
			if n.Tap != "" {
				return nil, bad("nets[%d]: tap %q is only for mode tap", i, n.Tap)
			}
		case NetTap:
			if err := checkTapName(n.Tap); err != nil {
				return nil, bad("nets[%d].tap: %v", i, err)
			}
		case "":
			return nil, bad("nets[%d].mode is missing: use user or tap", i)
		default:
			return nil, bad("nets[%d].mode %q: use user or tap", i, n.Mode)
		}
		if n.MAC != "" && !macPattern.MatchString(n.MAC) {
			return nil, bad("nets[%d].mac %q: want six hex bytes like 52:54:00:12:34:56", i, n.MAC)
		}
		m.Nets = append(m.Nets, n)
	}
	return m, nil
}

var macPattern = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

// checkTapName applies Linux's rules for interface names (IFNAMSIZ).
func checkTapName(name string) error {
	if name == "" {
		return errors.New("missing: name the host tap device")
	}
	if len(name) > 15 || strings.ContainsAny(name, "/: \t\n") || name == "." || name == ".." {
		return fmt.Errorf("%q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", name)
	}
	return nil
}

// inside resolves rel against dir and checks it names a regular file that
// stays inside dir, so a machine directory cannot point at /etc/shadow or
// at files a copy of it would not carry along.
func inside(dir, rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", fmt.Errorf("%q is absolute: give a path relative to the machine directory", rel)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%q leaves the machine directory: keep the file inside it", rel)
	}
	p := filepath.Join(dir, clean)
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: no such file", p)
		}
		return "", err
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if r, err := filepath.Rel(realDir, real); err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", fmt.Errorf("%q is a symlink out of the machine directory: copy the file in instead", rel)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", p)
	}
	return p, nil
}

// checkFormat applies wisp's one format rule (vmm.DiskFormat) to a disk
// whose format vm.json declares: a declared qcow2 must start with the
// qcow2 magic; a declared raw disk is raw whatever it holds, since a guest
// may have written a qcow2 header into it.
func checkFormat(path, format string) error {
	_, err := vmm.DiskFormat(path, format)
	return err
}

// Save writes m's description to m.Dir/vm.json atomically. Paths in m must
// lie inside m.Dir (absolute or relative to it); they are stored relative.
func Save(m *Machine) error {
	rel := func(p string) (string, error) {
		if p == "" {
			return "", nil
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(m.Dir, p)
		}
		r, err := filepath.Rel(m.Dir, p)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return "", fmt.Errorf("save %s: %s is outside the machine directory %s", FileName, p, m.Dir)
		}
		return r, nil
	}
	fl := file{CPUs: m.CPUs, Memory: vmm.FormatSize(m.MemoryBytes), Cmdline: m.Cmdline, Nets: m.Nets}
	var err error
	if fl.Kernel, err = rel(m.Kernel); err != nil {
		return err
	}
	if fl.Initrd, err = rel(m.Initrd); err != nil {
		return err
	}
	for _, d := range m.Disks {
		p, err := rel(d.Path)
		if err != nil {
			return err
		}
		fl.Disks = append(fl.Disks, Disk{Path: p, Format: d.Format, ReadOnly: d.ReadOnly})
	}
	b, err := json.MarshalIndent(fl, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", FileName, err)
	}
	tmp := filepath.Join(m.Dir, "."+FileName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", FileName, err)
	}
	if err := os.Rename(tmp, filepath.Join(m.Dir, FileName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", FileName, err)
	}
	return nil
}

// Config turns m into the fields of a vmm.Config it fills: kernel, initrd,
// command line, CPUs and memory. Disks and NICs are the caller's to attach.
func (m *Machine) Config() vmm.Config {
	return vmm.Config{
		Kernel:      m.Kernel,
		Initrd:      m.Initrd,
		Cmdline:     m.Cmdline,
		CPUs:        m.CPUs,
		MemoryBytes: m.MemoryBytes,
	}
}
