package memory

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MappedFile is a file mapped read-only. Loaders read kernels and initrds
// through it instead of copying them onto the Go heap: the pages belong to
// the page cache, leave wisp's RSS when Close unmaps them, and a 20 MB
// kernel costs no heap that the runtime would keep afterwards.
type MappedFile struct {
	data []byte
}

// MapFile maps path read-only. An empty file maps to an empty slice.
func MapFile(path string) (*MappedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return &MappedFile{}, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return &MappedFile{data: data}, nil
}

// Bytes is the file's contents; valid until Close.
func (m *MappedFile) Bytes() []byte { return m.data }

// Close unmaps the file. Safe to call twice.
func (m *MappedFile) Close() error {
	if m.data == nil {
		return nil
	}
	err := unix.Munmap(m.data)
	m.data = nil
	return err
}
