// Command genprobe builds the probe guest (probe.elf) from test/guests/src
// and writes it as a Go constant, so that wisp's `--accel auto` carries its
// KVM usability probe without needing a toolchain where it runs. It is run
// by `go generate ./vmm/accel/probeguest`; the guests package's tests fail
// when the generated file no longer matches the sources.
//
// Usage: genprobe OUTPUT.go
package main

import (
	"fmt"
	"os"

	"github.com/wisp-vmm/wisp/test/guests"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genprobe OUTPUT.go")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "genprobe:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	path, err := guests.Compile(guests.Probe)
	if err != nil {
		return err
	}
	image, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(out, guests.ProbeImageSource(image), 0o644)
}
