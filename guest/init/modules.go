package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// moduleSpec is one line of the modules file.
type moduleSpec struct {
	path   string
	params string
}

// parseModules reads the modules file format (see initproto.ModulesFile):
// "<absolute path> [params...]" per line, '#' comments, blank lines.
func parseModules(text string) ([]moduleSpec, error) {
	var specs []moduleSpec
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, params, _ := strings.Cut(line, " ")
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("line %d: module path %q is not absolute", n, path)
		}
		specs = append(specs, moduleSpec{path: path, params: strings.TrimSpace(params)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return specs, nil
}

// loadModules loads the listed modules in order. The initramfs builder
// decompressed them and ordered dependencies first, so init needs no
// module tooling: only finit_module. A module that is already loaded (or
// built in under the same name) is fine; other failures are logged and the
// rest still load.
func loadModules(log *logger, listPath string) {
	b, err := os.ReadFile(listPath)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		log.errorf("read %s: %v", listPath, err)
		return
	}
	specs, err := parseModules(string(b))
	if err != nil {
		log.errorf("%s: %v", listPath, err)
		return
	}
	for _, m := range specs {
		if err := loadModule(m); err != nil {
			log.errorf("load module %s: %v", m.path, err)
		}
	}
}

func loadModule(m moduleSpec) error {
	f, err := os.Open(m.path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), m.params, 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module: %w", err)
	}
	return nil
}
