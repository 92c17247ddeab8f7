package main

import (
	"context"
	"errors"
	"io"

	"github.com/wisp-vmm/wisp/vmm"
)

// newBackend picks and builds the backend for cfg.
func newBackend(ctx context.Context, cfg vmm.Config, con vmm.Console, stderr io.Writer) (vmm.Backend, error) {
	return nil, errors.New("no backend yet")
}
