package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// bootMarkerLogger prints boot markers when WISP_BOOT_MARKERS is set, for
// benchmarks and for seeing where a boot spends its time.
func bootMarkerLogger(w io.Writer) func(code byte, since time.Duration) {
	if os.Getenv("WISP_BOOT_MARKERS") == "" {
		return nil
	}
	return func(code byte, since time.Duration) {
		fmt.Fprintf(w, "wisp: boot marker %#02x at %v\n", code, since.Round(time.Microsecond))
	}
}
