package kvmvm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/vmm"
	probe "github.com/wisp-vmm/wisp/vmm/accel/probeguest"
)

// probeMemory is all the probe guest needs: its image at 1 MiB, page
// tables and stacks below.
const probeMemory = 16 << 20

// ErrProbeFailed marks a probe guest that did not pass every step.
var ErrProbeFailed = errors.New("KVM probe guest failed")

// RunProbe boots the probe guest image on the KVM device and returns nil
// when it ran every step Linux needs early, or an error naming the step that
// failed and how. ctx bounds the run: a guest that hangs counts as failed.
func RunProbe(ctx context.Context, kvmDevice string, image []byte) error {
	var mu sync.Mutex
	var codes []byte
	cfg := vmm.Config{Kernel: "probe guest", KVMDevice: kvmDevice, CPUs: 1, MemoryBytes: probeMemory}.WithDefaults()
	vm, err := New(cfg, vmm.Console{}, Options{
		KernelImage: image,
		OnBootMarker: func(code byte, _ time.Duration) {
			mu.Lock()
			codes = append(codes, code)
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	if err := vm.Start(ctx); err != nil {
		return err
	}
	st, err := vm.Wait()
	if err != nil {
		return err
	}
	mu.Lock()
	passed, reason := probe.Summarize(codes)
	mu.Unlock()
	switch {
	case passed && st.Reason == vmm.ExitPoweroff:
		return nil
	case st.Reason == vmm.ExitEmulationFailure:
		return fmt.Errorf("%w: emulation failure, %s: %s", ErrProbeFailed, reason, st.Detail)
	case st.Reason == vmm.ExitStopped:
		return fmt.Errorf("%w: no answer in time, %s", ErrProbeFailed, reason)
	case passed:
		return fmt.Errorf("%w: passed every step but ended with %s (%s)", ErrProbeFailed, st.Reason, st.Detail)
	}
	return fmt.Errorf("%w: %s, then %s (%s)", ErrProbeFailed, reason, st.Reason, st.Detail)
}
