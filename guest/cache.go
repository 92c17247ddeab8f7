package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

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
