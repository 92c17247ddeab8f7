package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
)

// errUnknownPackage: apt's package lists do not know a package (yet).
var errUnknownPackage = errors.New("package unknown to apt")

// hasApt reports whether the apt tools the kit drives are installed.
func hasApt() bool {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

// apt runs Debian's package tools. It remembers whether it already ran
// `apt-get update`, so one kit call updates the lists at most once.
type apt struct {
	out     io.Writer
	updated bool
}

// aptEnv keeps apt from asking questions and lets it download as root into
// directories the _apt user cannot read (apt warns otherwise).
var aptEnv = []string{"DEBIAN_FRONTEND=noninteractive"}

func (a *apt) cmd(dir string) command {
	return command{dir: dir, env: aptEnv, stdout: a.out, stderr: a.out}
}

func (a *apt) update(ctx context.Context) error {
	if a.updated {
		return nil
	}
	fmt.Fprintln(a.out, "wisp: apt-get update")
	if err := a.cmd("").run(ctx, "apt-get", "-q", "update"); err != nil {
		return err
	}
	a.updated = true
	return nil
}

// withUpdate runs f; if f reports an unknown package it updates apt's lists
// once and runs f again.
func (a *apt) withUpdate(ctx context.Context, f func() error) error {
	err := f()
	if !errors.Is(err, errUnknownPackage) || a.updated {
		return err
	}
	if uerr := a.update(ctx); uerr != nil {
		return fmt.Errorf("%w (and apt-get update failed: %w)", err, uerr)
	}
	return f()
}

// depends returns the packages pkg depends on (first alternative of each).
func (a *apt) depends(ctx context.Context, pkg string) ([]string, error) {
	var deps []string
	err := a.withUpdate(ctx, func() error {
		out, err := command{env: aptEnv}.output(ctx, "apt-cache", "depends", pkg)
		if err != nil {
			if strings.Contains(err.Error(), "No packages found") {
				return fmt.Errorf("apt-cache depends %s: %w", pkg, errUnknownPackage)
			}
			return err
		}
		deps = parseAptDepends(out)
		if len(deps) == 0 {
			return fmt.Errorf("apt-cache depends %s: no Depends: %w", pkg, errUnknownPackage)
		}
		return nil
	})
	return deps, err
}

// parseAptDepends reads `apt-cache depends` output. Lines look like
// "  Depends: foo" or "  Depends: <virtual>"; a leading "|" marks an
// alternative to the next line, which we skip in favour of the first.
func parseAptDepends(out []byte) []string {
	var deps []string
	alt := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		prevAlt := alt
		alt = strings.HasPrefix(line, "|")
		name, ok := strings.CutPrefix(strings.TrimPrefix(line, "|"), "Depends:")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if prevAlt || strings.HasPrefix(name, "<") {
			continue
		}
		deps = append(deps, name)
	}
	return deps
}

// candidate returns the version apt would install for pkg.
func (a *apt) candidate(ctx context.Context, pkg string) (string, error) {
	var version string
	err := a.withUpdate(ctx, func() error {
		out, err := command{env: aptEnv}.output(ctx, "apt-cache", "policy", pkg)
		if err != nil {
			return err
		}
		v := parseAptCandidate(out)
		if v == "" {
			return fmt.Errorf("apt-cache policy %s: no candidate: %w", pkg, errUnknownPackage)
		}
		version = v
		return nil
	})
	return version, err
}

func parseAptCandidate(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Candidate:"); ok {
			v = strings.TrimSpace(v)
			if v == "(none)" {
				return ""
			}
			return v
		}
	}
	return ""
}

// download fetches pkg's .deb (of version, if not "") into dir and returns
// its path.
func (a *apt) download(ctx context.Context, pkg, version, dir string) (string, error) {
	spec := pkg
	if version != "" {
		spec += "=" + version
	}
	err := a.withUpdate(ctx, func() error {
		err := a.cmd(dir).run(ctx, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", spec)
		if err != nil && strings.Contains(err.Error(), "Unable to locate package") {
			return fmt.Errorf("%w: %w", err, errUnknownPackage)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: expected one .deb in %s, found %d", pkg, dir, len(debs))
	}
	return debs[0], nil
}

// installedVersion returns pkg's installed version, "" if not installed.
func installedVersion(ctx context.Context, pkg string) string {
	out, err := command{}.output(ctx, "dpkg-query", "-W", "-f=${Status}\t${Version}", pkg)
	if err != nil {
		return ""
	}
	status, version, _ := strings.Cut(string(out), "\t")
	if !strings.HasSuffix(status, " installed") {
		return ""
	}
	return version
}

// ensureInstalled installs whichever of pkgs are missing, in one apt-get
// call, and returns the list it installed.
func (a *apt) ensureInstalled(ctx context.Context, pkgs ...string) ([]string, error) {
	var missing []string
	for _, p := range pkgs {
		if installedVersion(ctx, p) == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	fmt.Fprintf(a.out, "wisp: apt-get install %s\n", strings.Join(missing, " "))
	err := a.withUpdate(ctx, func() error {
		args := append([]string{"-q", "-y", "--no-install-recommends", "install"}, missing...)
		err := a.cmd("").run(ctx, "apt-get", args...)
		if err != nil && strings.Contains(err.Error(), "Unable to locate package") {
			return fmt.Errorf("%w: %w", err, errUnknownPackage)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return missing, nil
}
