// Package stale removes what a killed wisp left behind. A wisp process
// that dies by SIGKILL (or a crash, or a power cut of its cgroup) runs no
// cleanup, so its private directories stay in the temporary directory:
// the VM's state directory, QEMU's socket directory, a NoCloud seed's
// scratch space. Each such directory carries an owner record naming the
// process that made it (pid, start time, boot, pid namespace); Sweep, run
// when the next wisp starts, removes those whose owner is gone.
package stale

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Prefixes of the directories wisp makes in the temporary directory.
const (
	PrefixVM   = "wisp-vm-"   // a VM's state directory (vmm/machine)
	PrefixQEMU = "wisp-qemu-" // QEMU's sockets (vmm/qemu)
	PrefixSeed = "wisp-seed-" // a NoCloud seed's scratch space (image)
)

// Prefixes are all of them, for SweepTemp.
func Prefixes() []string { return []string{PrefixVM, PrefixQEMU, PrefixSeed} }

// RecordName is the owner record's file name inside a directory.
const RecordName = "owner"

// maxRecord bounds what Sweep reads of a record: a real one is ~150 bytes.
const maxRecord = 4 << 10

// Errors; test with errors.Is.
var (
	// ErrNoRecord: the directory has no owner record Sweep can parse.
	ErrNoRecord = errors.New("no owner record")
)

// Owner identifies a process across pid reuse: a pid names one process
// only together with its start time, and both only within one boot and
// one pid namespace.
type Owner struct {
	PID int `json:"pid"`
	// Start is field 22 of /proc/PID/stat: clock ticks since boot.
	Start uint64 `json:"start"`
	// Boot is /proc/sys/kernel/random/boot_id.
	Boot string `json:"boot"`
	// PIDNS is the pid namespace, as /proc/self/ns/pid reads.
	PIDNS string `json:"pidns"`
}

// Self is the owner record of the calling process.
func Self() (Owner, error) {
	pid := os.Getpid()
	start, err := startTime(pid)
	if err != nil {
		return Owner{}, err
	}
	boot, err := bootID()
	if err != nil {
		return Owner{}, err
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return Owner{}, fmt.Errorf("owner record: %w", err)
	}
	return Owner{PID: pid, Start: start, Boot: boot, PIDNS: ns}, nil
}

// MkdirTemp is os.MkdirTemp (mode 0700) with an owner record naming the
// calling process, so that Sweep can remove the directory once this
// process is gone without having cleaned up. On error nothing is left.
func MkdirTemp(dir, prefix string) (_ string, err error) {
	self, err := Self()
	if err != nil {
		return "", err
	}
	path, err := os.MkdirTemp(dir, prefix)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(path)
		}
	}()
	if err := os.Chmod(path, 0o700); err != nil {
		return "", err
	}
	b, err := json.Marshal(self)
	if err != nil {
		return "", fmt.Errorf("owner record: %w", err)
	}
	// The trailing newline ends a complete record: one cut short by a
	// crash mid-write does not parse, and Sweep keeps its directory.
	if err := writeNew(filepath.Join(path, RecordName), append(b, '\n')); err != nil {
		return "", fmt.Errorf("owner record: %w", err)
	}
	return path, nil
}

func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// SweepTemp sweeps os.TempDir() for every prefix wisp uses. It returns
// what it removed; errors (a directory it could not remove) do not stop
// it.
func SweepTemp() (removed []string, err error) {
	var errs []error
	for _, p := range Prefixes() {
		r, err := Sweep(os.TempDir(), p)
		removed = append(removed, r...)
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// Sweep removes the directories directly under dir whose names start with
// prefix and whose owner record names a process that is gone: dead, or
// its pid now used by another process (another start time), or from an
// earlier boot. It keeps a directory whose owner lives, and one it cannot
// judge: no record, or one it cannot parse (it might not be ours, or be
// written right now), another user's directory, an owner in another pid
// namespace. It returns the paths it removed.
func Sweep(dir, prefix string) (removed []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", dir, err)
	}
	boot, err := bootID()
	if err != nil {
		return nil, err
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		// DirEntry types come from lstat: a symlink is never followed.
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if !ownedByUs(path) {
			continue
		}
		o, err := ReadOwner(path)
		if err != nil {
			continue
		}
		if !gone(o, boot, ns) {
			continue
		}
		// RemoveAll works through file descriptors (unlinkat) and never
		// follows a symlink inside the directory.
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", path, err))
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}

// ownedByUs: a directory another user made in a shared temporary
// directory is not ours to judge, whatever its record says.
func ownedByUs(path string) bool {
	st, err := os.Lstat(path)
	if err != nil || !st.IsDir() {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Geteuid()
}

// ReadOwner reads dir's owner record. It fails with ErrNoRecord when there
// is none or it does not parse.
func ReadOwner(dir string) (Owner, error) {
	path := filepath.Join(dir, RecordName)
	// O_NOFOLLOW and the regular-file check: a record is a file wisp
	// wrote, never a link or a FIFO someone put there.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return Owner{}, fmt.Errorf("%s: %w: %w", path, ErrNoRecord, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return Owner{}, fmt.Errorf("%s: %w: not a regular file", path, ErrNoRecord)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecord))
	if err != nil {
		return Owner{}, fmt.Errorf("%s: %w: %w", path, ErrNoRecord, err)
	}
	return parseOwner(path, b)
}

func parseOwner(path string, b []byte) (Owner, error) {
	if !bytes.HasSuffix(b, []byte("\n")) {
		return Owner{}, fmt.Errorf("%s: %w: incomplete", path, ErrNoRecord)
	}
	var o Owner
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return Owner{}, fmt.Errorf("%s: %w: %w", path, ErrNoRecord, err)
	}
	if o.PID <= 0 || o.Start == 0 || o.Boot == "" || o.PIDNS == "" {
		return Owner{}, fmt.Errorf("%s: %w: missing fields", path, ErrNoRecord)
	}
	return o, nil
}

// gone reports whether o is certainly not running, seen from a process in
// boot boot and pid namespace ns.
func gone(o Owner, boot, ns string) bool {
	if o.Boot != boot {
		return true // every process of an earlier boot is gone
	}
	if o.PIDNS != ns {
		return false // its pid means nothing here
	}
	start, err := startTime(o.PID)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false // cannot tell: keep
	}
	// A zombie counts as alive: its parent may still be about to clean
	// up, and the next sweep after the reaping removes the directory.
	return start != o.Start // the pid was reused
}

// startTime is field 22 of /proc/PID/stat, the process's start in clock
// ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return parseStat(pid, b)
}

// parseStat reads the start time out of /proc/PID/stat's
// "pid (comm) state ppid ...". comm may hold spaces and parentheses, so
// the fields start after the last ')'.
func parseStat(pid int, b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: malformed stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: start time: %w", pid, err)
	}
	return start, nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
