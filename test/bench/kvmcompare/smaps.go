package kvmcompare

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Memory is a process's resident memory, split into guest RAM and the
// rest, which is what the VMM itself costs.
type Memory struct {
	Total    uint64 // bytes resident, all mappings
	GuestRAM uint64 // bytes resident in the mappings of guest RAM
	// Largest are the biggest parts of the overhead: resident bytes per
	// mapped path ("[anon]" for anonymous memory), largest first, at most
	// largestParts of them.
	Largest []Part
}

// Part is the resident memory of the mappings of one path.
type Part struct {
	Name string
	RSS  uint64
}

const largestParts = 3

// minPartKB is the least a mapping's RSS must be to count as a part.
const minPartKB = 100

// Overhead is the resident memory that is not guest RAM.
func (m Memory) Overhead() uint64 { return m.Total - m.GuestRAM }

// Mapping is what decides whether a mapping of /proc/PID/smaps is guest
// RAM: its path ("" for anonymous memory) and its size.
type Mapping struct {
	Name string
	Size uint64 // bytes
}

// GuestRAMFunc reports whether a mapping holds guest RAM.
type GuestRAMFunc func(Mapping) bool

// wispGuestRAM: wisp's guest RAM is a memfd (vmm/memory) the VMM maps
// whole; the kernel names it after the memfd.
func wispGuestRAM(m Mapping) bool { return strings.HasPrefix(m.Name, "/memfd:wisp-guest-ram") }

// anonymousOfSize: QEMU's RAM is one anonymous mapping of exactly the
// machine's memory size (a guard page after it is a mapping of its own),
// the way Firecracker's memory test tells guest RAM apart too.
func anonymousOfSize(size uint64) GuestRAMFunc {
	return func(m Mapping) bool { return m.Name == "" && m.Size == size }
}

// readMemory reads /proc/PID/smaps.
func readMemory(pid int, isGuestRAM GuestRAMFunc) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("read memory use: %w", err)
	}
	defer f.Close()
	m, err := parseSmaps(f, isGuestRAM)
	if err != nil {
		return Memory{}, fmt.Errorf("/proc/%d/smaps: %w", pid, err)
	}
	return m, nil
}

// parseSmaps sums the Rss fields of smaps text, and separately those of
// the mappings isGuestRAM picks. A mapping starts with a header line,
// "start-end perms offset dev inode [path]", followed by "Key: value"
// lines; sizes are in kB.
func parseSmaps(r io.Reader, isGuestRAM GuestRAMFunc) (Memory, error) {
	var (
		m       Memory
		current *Mapping
		guest   bool
		seen    int
		parts   = map[string]uint64{}
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if hdr, ok := parseMappingHeader(line); ok {
			current, guest = &hdr, false
			seen++
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || current == nil {
			continue
		}
		switch key {
		case "Size":
			kb, err := parseKB(value)
			if err != nil {
				return Memory{}, fmt.Errorf("mapping %d: Size: %w", seen, err)
			}
			current.Size = kb << 10
			guest = isGuestRAM(*current)
		case "Rss":
			kb, err := parseKB(value)
			if err != nil {
				return Memory{}, fmt.Errorf("mapping %d: Rss: %w", seen, err)
			}
			m.Total += kb << 10
			switch {
			case guest:
				m.GuestRAM += kb << 10
			case kb < minPartKB:
				// Too small to explain anything.
			case current.Name == "":
				parts["[anon]"] += kb << 10
			default:
				parts[current.Name] += kb << 10
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if seen == 0 {
		return Memory{}, fmt.Errorf("no mappings")
	}
	for name, rss := range parts {
		m.Largest = append(m.Largest, Part{Name: name, RSS: rss})
	}
	sort.Slice(m.Largest, func(i, j int) bool {
		a, b := m.Largest[i], m.Largest[j]
		return a.RSS > b.RSS || a.RSS == b.RSS && a.Name < b.Name
	})
	if len(m.Largest) > largestParts {
		m.Largest = m.Largest[:largestParts]
	}
	return m, nil
}

// parseMappingHeader recognises "55d0c0a00000-55d0c0a21000 rw-p 00000000
// 00:00 0   [heap]": its first field is two hex addresses joined by "-".
// The path may contain spaces (" (deleted)").
func parseMappingHeader(line string) (Mapping, bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return Mapping{}, false
	}
	lo, hi, ok := strings.Cut(fields[0], "-")
	if !ok || !isHex(lo) || !isHex(hi) {
		return Mapping{}, false
	}
	if len(fields) == 5 {
		return Mapping{}, true
	}
	// The path is what follows the fifth field, spaces and all.
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			return Mapping{}, true
		}
		rest = rest[i:]
	}
	return Mapping{Name: strings.TrimSpace(rest)}, true
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	_, err := strconv.ParseUint(s, 16, 64)
	return err == nil
}

// parseKB reads " 1234 kB".
func parseKB(v string) (uint64, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(v), " kB")
	if !ok {
		return 0, fmt.Errorf("%q: want a size in kB", strings.TrimSpace(v))
	}
	return strconv.ParseUint(strings.TrimSpace(num), 10, 64)
}
