package guest

import (
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

// lockPoll is how often a waiting lock retries; flock cannot be cancelled
// by a context, so we poll with LOCK_NB instead of blocking.
const lockPoll = 200 * time.Millisecond

// cacheLock is an exclusive flock on a file under the cache directory. It
// serialises fetches and builds of one cache entry across goroutines and
// processes (go test runs packages in parallel processes that share the
// cache).
type cacheLock struct{ f *os.File }

func lockCache(ctx context.Context, dir, name string) (*cacheLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lock dir: %w", err)
	}
	path := filepath.Join(dir, "."+name+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &cacheLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

func (l *cacheLock) unlock() {
	// Closing the file drops the flock.
	l.f.Close()
}

// stagingDir makes an empty temporary directory next to final (same
// filesystem, so publishing is one rename). Its name starts with ".tmp-" and
// the final base name, so removeStale can find leftovers of killed runs.
func stagingDir(final string) (string, error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", parent, err)
	}
	removeStale(final)
	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(final)+"-")
	if err != nil {
		return "", fmt.Errorf("create staging dir for %s: %w", final, err)
	}
	return tmp, nil
}

// removeStale deletes staging directories of final left by killed runs.
// Callers hold the entry's lock, so no live run owns them.
func removeStale(final string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(final), ".tmp-"+filepath.Base(final)+"-*"))
	for _, m := range matches {
		os.RemoveAll(m)
	}
}

// publish renames the finished staging directory to final.
func publish(tmp, final string) error {
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("publish %s: %w", final, err)
	}
	return nil
}

// metaFile is the name of the description written last into every kernel
// cache entry; an entry without it is not trusted.
const metaFile = "kernel.json"

// writeKernelMeta records kern with paths relative to dir.
func writeKernelMeta(dir string, kern *Kernel) error {
	rel := *kern
	for _, p := range []*string{&rel.Image, &rel.ELF, &rel.ModulesDir} {
		if *p == "" {
			continue
		}
		r, err := filepath.Rel(dir, *p)
		if err != nil || strings.HasPrefix(r, "..") {
			return fmt.Errorf("kernel file %s is outside its cache entry %s", *p, dir)
		}
		*p = r
	}
	b, err := json.MarshalIndent(rel, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", metaFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, metaFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", metaFile, err)
	}
	return nil
}

// readKernelMeta loads a published cache entry, checking its files exist.
// It returns an error wrapping ErrNotCached if the entry is absent.
func readKernelMeta(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotCached)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", metaFile, err)
	}
	var kern Kernel
	if err := json.Unmarshal(b, &kern); err != nil {
		return nil, fmt.Errorf("decode %s in %s: %w", metaFile, dir, err)
	}
	for _, p := range []*string{&kern.Image, &kern.ELF, &kern.ModulesDir} {
		if *p == "" {
			continue
		}
		if filepath.IsAbs(*p) || strings.HasPrefix(filepath.Clean(*p), "..") {
			return nil, fmt.Errorf("%s in %s names a path outside the entry: %q", metaFile, dir, *p)
		}
		*p = filepath.Join(dir, *p)
		if _, err := os.Stat(*p); err != nil {
			return nil, fmt.Errorf("cache entry %s is damaged: %w", dir, err)
		}
	}
	if kern.Image == "" || kern.Version == "" {
		return nil, fmt.Errorf("cache entry %s is damaged: no image or version", dir)
	}
	return &kern, nil
}
