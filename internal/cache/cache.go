// Package cache holds the pieces every entry of wisp's cache (kernels,
// initramfs, images) is made with: a
// file lock per entry (builds run in several processes, e.g. parallel test
// binaries), a staging directory next to the entry, and publishing by
// rename, so a reader never sees half an entry and a killed build leaves
// only a staging directory the next build removes.
package cache

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a waiting lock retries: flock cannot be
// cancelled by a context, so we poll with LOCK_NB.
const lockPoll = 200 * time.Millisecond

// StagingPrefix starts the names of staging directories.
const StagingPrefix = ".tmp-"

// Lock is an exclusive flock on dir/.name.lock.
type Lock struct{ f *os.File }

// Acquire waits for the lock on entry name in dir, or for ctx.
func Acquire(ctx context.Context, dir, name string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "."+name+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}

// Unlock drops the lock (closing the file drops the flock).
func (l *Lock) Unlock() { l.f.Close() }

// Staging makes an empty directory next to final, on the same filesystem
// so publishing is one rename, after removing staging directories of
// final left by killed runs. Callers hold final's lock.
func Staging(final string) (string, error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", parent, err)
	}
	prefix := StagingPrefix + filepath.Base(final) + "-"
	old, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
	for _, o := range old {
		if err := Remove(o); err != nil {
			return "", err
		}
	}
	tmp, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", fmt.Errorf("create staging directory for %s: %w", final, err)
	}
	return tmp, nil
}

// Replace renames tmp to final, replacing an existing final.
func Replace(tmp, final string) error {
	var old string
	if _, err := os.Lstat(final); err == nil {
		old = tmp + ".old"
		if err := os.Rename(final, old); err != nil {
			return fmt.Errorf("replace %s: %w", final, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final)
		}
		return fmt.Errorf("publish %s: %w", final, err)
	}
	if old != "" {
		return Remove(old)
	}
	return nil
}

// Remove deletes dir like os.RemoveAll, but first refuses if anything is
// mounted below it: a build tree may have had /proc, /sys or /dev mounted
// into it, and RemoveAll would walk into the host's.
func Remove(dir string) error {
	if dir == "" || dir == "/" {
		return fmt.Errorf("refusing to remove %q", dir)
	}
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: %s is mounted inside it (unmount it first)", dir, mounts[0])
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// MountsUnder lists the mount points at or below dir, from
// /proc/self/mountinfo.
func MountsUnder(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == abs || strings.HasPrefix(mp, abs+"/") {
			found = append(found, mp)
		}
	}
	return found, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// WriteJSON writes v to path through a temporary file and a rename.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
