package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/image/internal/progress"
	"github.com/wisp-vmm/wisp/internal/command"
)

// ErrExists: the output of a conversion already exists.
var ErrExists = errors.New("already exists")

// Convert writes in (raw or qcow2, detected from its contents) as out in
// format, with qemu-img (Debian's qemu-utils). Zero blocks become holes
// (raw) or unallocated clusters (qcow2). out must not exist; it appears
// only when complete. progressOut, if not nil, shows qemu-img's progress.
func Convert(ctx context.Context, in, out, format string, progressOut io.Writer) error {
	if err := CheckFormat(format); err != nil {
		return err
	}
	if err := command.Need(map[string]string{"qemu-img": "qemu-utils"}); err != nil {
		return err
	}
	inFormat, err := DetectFormat(in)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("convert: %s %w: remove it or pick another name", out, ErrExists)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())

	args := []string{"convert", "-f", inFormat, "-O", format}
	var stage *progress.Stage
	c := command.Cmd{}
	if progressOut != nil {
		stage = progress.New(progressOut, 1).Start(fmt.Sprintf("converting %s to %s", filepath.Base(in), format))
		args = append(args, "-p")
		c.Stdout = stage.Writer(func(line string) (string, bool) {
			// qemu-img -p draws "    (12.34/100%)".
			line = strings.TrimSpace(line)
			if p, ok := strings.CutPrefix(line, "("); ok {
				if v, _, ok := strings.Cut(p, "/"); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						stage.Percent(f)
					}
				}
			}
			return "", false
		})
	}
	args = append(args, in, tmp.Name())
	err = c.Run(ctx, "qemu-img", args...)
	if stage != nil {
		stage.Done(err)
	}
	if err != nil {
		return fmt.Errorf("convert %s: %w", in, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}
