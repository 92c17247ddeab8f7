package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/internal/command"
)

// maxLinkHops bounds symlink chains in an image (the kernel's own limit
// is 40; boot files are one or two hops away).
const maxLinkHops = 16

// ErrNotInImage: a path does not exist in the filesystem.
var ErrNotInImage = errors.New("not found in the image")

// debugfs reads one ext filesystem with e2fsprogs' debugfs, read-only and
// without mounting. Everything it reads is untrusted: names, sizes and
// link targets come from the image.
type debugfs struct {
	// spec is what debugfs opens: the image path, with "?offset=N" for a
	// filesystem inside a partition (an option of e2fsprogs' unix I/O
	// manager).
	spec string
}

func newDebugfs(disk string, offset int64) debugfs {
	if offset == 0 {
		return debugfs{spec: disk}
	}
	return debugfs{spec: fmt.Sprintf("%s?offset=%d", disk, offset)}
}

// quote makes p one argument of a debugfs request. debugfs's parser
// knows double quotes but no escapes, so paths that need them are
// refused.
func quote(p string) (string, error) {
	if strings.ContainsAny(p, "\"\\") || strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return "", fmt.Errorf("path %q has characters debugfs cannot be asked for", p)
	}
	return `"` + p + `"`, nil
}

// run runs one debugfs request. debugfs exits 0 even when a request
// fails, so failure is read from stderr: anything besides its banner.
func (d debugfs) run(ctx context.Context, request string, stdout io.Writer) error {
	var stderr bytes.Buffer
	err := command.Cmd{Stdout: stdout, Stderr: &stderr}.Run(ctx, "debugfs", "-R", request, d.spec)
	if err != nil {
		return fmt.Errorf("debugfs %s: %w", d.spec, err)
	}
	var msgs []string
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "debugfs ") {
			continue // the version banner
		}
		msgs = append(msgs, line)
	}
	if len(msgs) == 0 {
		return nil
	}
	msg := strings.Join(msgs, "; ")
	if strings.Contains(msg, "File not found") {
		return fmt.Errorf("%s: %w", msg, ErrNotInImage)
	}
	return fmt.Errorf("debugfs %s: %s: %s", d.spec, request, msg)
}

// inode is what `stat` says about a file.
type inode struct {
	Type     string // regular, directory, symlink, ...
	Size     int64
	LinkDest string // fast symlinks only
}

var (
	statType = regexp.MustCompile(`Type: ([a-z ]+?)\s{2,}Mode:`)
	statSize = regexp.MustCompile(`\bSize: (\d+)`)
	statLink = regexp.MustCompile(`(?m)^Fast link dest: "(.*)"$`)
)

func (d debugfs) stat(ctx context.Context, p string) (inode, error) {
	q, err := quote(p)
	if err != nil {
		return inode{}, err
	}
	var out bytes.Buffer
	if err := d.run(ctx, "stat "+q, &out); err != nil {
		return inode{}, err
	}
	return parseStat(out.Bytes())
}

func parseStat(out []byte) (inode, error) {
	t := statType.FindSubmatch(out)
	s := statSize.FindSubmatch(out)
	if t == nil || s == nil {
		return inode{}, fmt.Errorf("debugfs stat: unexpected output %q", abbreviate(string(out)))
	}
	size, err := strconv.ParseInt(string(s[1]), 10, 64)
	if err != nil || size < 0 {
		return inode{}, fmt.Errorf("debugfs stat: bad size %q", s[1])
	}
	in := inode{Type: string(t[1]), Size: size}
	if l := statLink.FindSubmatch(out); l != nil {
		in.LinkDest = string(l[1])
	}
	return in, nil
}

// readLink returns a symlink's target: from stat for fast links (short
// targets live in the inode), else from the link's data block.
func (d debugfs) readLink(ctx context.Context, p string, in inode) (string, error) {
	if in.LinkDest != "" {
		return in.LinkDest, nil
	}
	if in.Size > 4096 {
		return "", fmt.Errorf("symlink %s: target of %d bytes is longer than a path can be", p, in.Size)
	}
	var b bytes.Buffer
	if err := d.cat(ctx, p, &b, 4096); err != nil {
		return "", err
	}
	return b.String(), nil
}

// resolve follows symlinks from p to a regular file, the way the guest's
// kernel would: relative targets from the link's directory, absolute ones
// from the filesystem's root (not the host's).
func (d debugfs) resolve(ctx context.Context, p string) (string, inode, error) {
	for range maxLinkHops {
		in, err := d.stat(ctx, p)
		if err != nil {
			return "", inode{}, err
		}
		switch in.Type {
		case "regular":
			return p, in, nil
		case "symlink":
			target, err := d.readLink(ctx, p, in)
			if err != nil {
				return "", inode{}, err
			}
			if target == "" {
				return "", inode{}, fmt.Errorf("symlink %s is empty", p)
			}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = path.Clean(target)
		default:
			return "", inode{}, fmt.Errorf("%s is a %s, not a file", p, in.Type)
		}
	}
	return "", inode{}, fmt.Errorf("%s: more than %d symlinks", p, maxLinkHops)
}

// cat copies file p to w, refusing files larger than limit.
func (d debugfs) cat(ctx context.Context, p string, w io.Writer, limit int64) error {
	q, err := quote(p)
	if err != nil {
		return err
	}
	lw := &limitWriter{w: w, left: limit}
	err = d.run(ctx, "cat "+q, lw)
	if lw.over {
		return fmt.Errorf("%s is larger than %d bytes", p, limit)
	}
	return err
}

// dirEntry is one line of `ls -p`.
type dirEntry struct {
	Name string
	Mode uint32
	Size int64
}

// isRegular and isLink read the file type bits of a mode.
func (e dirEntry) isRegular() bool { return e.Mode&0o170000 == 0o100000 }
func (e dirEntry) isLink() bool    { return e.Mode&0o170000 == 0o120000 }

// list returns the entries of directory p (without . and ..).
func (d debugfs) list(ctx context.Context, p string) ([]dirEntry, error) {
	q, err := quote(p)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := d.run(ctx, "ls -p "+q, &out); err != nil {
		return nil, err
	}
	return parseList(out.Bytes()), nil
}

// parseList reads `ls -p` lines: /inode/mode/uid/gid/name/size/. Names
// cannot hold '/', so splitting is safe; lines that do not parse are
// skipped.
func parseList(out []byte) []dirEntry {
	var entries []dirEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "/")
		if len(f) != 8 || f[0] != "" {
			continue
		}
		name := f[5]
		if name == "." || name == ".." || name == "" {
			continue
		}
		mode, err := strconv.ParseUint(f[2], 8, 32)
		if err != nil {
			continue
		}
		// Directories print no size; anything else must be a size.
		var size int64
		if f[6] != "" {
			if size, err = strconv.ParseInt(f[6], 10, 64); err != nil || size < 0 {
				continue
			}
		}
		entries = append(entries, dirEntry{Name: name, Mode: uint32(mode), Size: size})
	}
	return entries
}

// limitWriter passes at most left bytes to w and remembers whether more
// came.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if err != nil {
		return n, err
	}
	if l.over {
		return n, errors.New("file exceeds its size limit")
	}
	return n, nil
}
