package qemu

import (
	"context"
	"fmt"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/qemu/qmp"
)

func (b *Backend) client() (*qmp.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != stateRunning {
		return nil, ErrNotRunning
	}
	return b.qmp, nil
}

// Pause stops the guest's CPUs (QMP stop).
func (b *Backend) Pause() error {
	c, err := b.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// Resume restarts the guest's CPUs (QMP cont).
func (b *Backend) Resume() error {
	c, err := b.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := c.Cont(ctx); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// Status asks QEMU whether the guest's CPUs run (QMP query-status).
func (b *Backend) Status(ctx context.Context) (qmp.Status, error) {
	c, err := b.client()
	if err != nil {
		return qmp.Status{}, err
	}
	return c.QueryStatus(ctx)
}

// Stop ends the VM and returns once it has ended. StopGraceful presses the
// ACPI power button and waits for the guest until ctx is done, then forces.
// StopForce asks QEMU to quit and kills it if it does not promptly. Either
// way Wait then reports ExitStopped (or ExitPanic if the guest panicked).
// Stop on a VM that already ended returns nil.
func (b *Backend) Stop(ctx context.Context, how vmm.StopMode) error {
	b.mu.Lock()
	st, client := b.state, b.qmp
	b.mu.Unlock()
	switch st {
	case stateNew, stateStarting:
		return fmt.Errorf("stop: %w (cancel Start's context to abort a start)", ErrNotRunning)
	case stateEnded:
		return nil
	}

	if how == vmm.StopGraceful {
		b.mu.Lock()
		if b.facts.stop == stopNone {
			b.facts.stop = stopGraceful
		}
		b.mu.Unlock()
		if err := client.SystemPowerdown(ctx); err == nil {
			select {
			case <-b.done:
				return nil
			case <-ctx.Done():
			}
		}
	}

	b.mu.Lock()
	b.facts.stop = stopForced
	b.mu.Unlock()
	qctx, cancel := context.WithTimeout(context.Background(), quitGrace)
	defer cancel()
	if client.Quit(qctx) == nil {
		select {
		case <-b.done:
			return nil
		case <-qctx.Done():
		}
	}
	b.killGroup()
	<-b.done
	return nil
}

// Wait blocks until the VM has ended and everything it used is removed,
// then reports how it ended. It may be called from several goroutines and
// any number of times. The error is set only when Start failed (the status
// is then ExitBackendFailure); a QEMU that dies later is reported as
// ExitBackendFailure with its last stderr line in Detail and a nil error.
func (b *Backend) Wait() (vmm.ExitStatus, error) {
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status, b.waitErr
}
