package machine

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
)

// scriptedBackend ends the way it is told to, so the lifecycle logic is
// tested without a hypervisor; the VMs that boot are in the Example and
// the end-to-end tests.
type scriptedBackend struct {
	startErr error
	pauseErr error
	// beforePause runs inside Pause, to let a test end the VM meanwhile.
	beforePause func()
	exit        chan vmm.ExitStatus

	mu       sync.Mutex
	stops    []vmm.StopMode
	paused   bool
	startCtx context.Context
}

func newScripted() *scriptedBackend { return &scriptedBackend{exit: make(chan vmm.ExitStatus, 1)} }

func (b *scriptedBackend) Start(ctx context.Context) error {
	b.mu.Lock()
	b.startCtx = ctx
	b.mu.Unlock()
	return b.startErr
}

func (b *scriptedBackend) Pause() error {
	if b.beforePause != nil {
		b.beforePause()
	}
	if b.pauseErr != nil {
		return b.pauseErr
	}
	b.mu.Lock()
	b.paused = true
	b.mu.Unlock()
	return nil
}

func (b *scriptedBackend) Resume() error {
	b.mu.Lock()
	b.paused = false
	b.mu.Unlock()
	return nil
}

func (b *scriptedBackend) Stop(ctx context.Context, how vmm.StopMode) error {
	b.mu.Lock()
	b.stops = append(b.stops, how)
	b.mu.Unlock()
	if how == vmm.StopGraceful {
		<-ctx.Done() // a guest that ignores the power button
	}
	select {
	case b.exit <- vmm.ExitStatus{Reason: vmm.ExitStopped}:
	default:
	}
	return nil
}

func (b *scriptedBackend) Wait() (vmm.ExitStatus, error) {
	st := <-b.exit
	b.exit <- st // later Waits see the same end
	return st, nil
}

// recorder keeps a Machine's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) path() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.From.String()+"→"+e.To.String())
	}
	return out
}

func scripted(b vmm.Backend) (*Machine, *recorder) {
	rec := &recorder{}
	m := newMachine(vmm.Config{}.WithDefaults(), Options{ID: "t1", OnEvent: rec.add}, slog.New(slog.DiscardHandler))
	m.backend = b
	return m, rec
}

func TestRunToPoweroff(t *testing.T) {
	b := newScripted()
	m, rec := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	assert.Equal(t, vmm.StateRunning, m.State())
	b.exit <- vmm.ExitStatus{Reason: vmm.ExitPoweroff}
	st, err := m.Wait()
	require.NoError(t, err)
	assert.Equal(t, vmm.ExitPoweroff, st.Reason)
	assert.Equal(t, vmm.StateStopped, m.State())
	assert.Equal(t, []string{"created→starting", "starting→running", "running→stopped"}, rec.path())
	assert.ErrorIs(t, m.Start(context.Background()), vmm.ErrBadTransition, "a stopped machine does not start again")
	require.NoError(t, m.Close())
}

func TestStartFailure(t *testing.T) {
	b := newScripted()
	b.startErr = errors.New("no memory")
	m, _ := scripted(b)
	require.ErrorContains(t, m.Start(context.Background()), "no memory")
	assert.Equal(t, vmm.StateFailed, m.State())
	_, err := m.Wait()
	assert.ErrorContains(t, err, "no memory")
}

func TestStartContextIsNotTheLifetime(t *testing.T) {
	b := newScripted()
	m, _ := scripted(b)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, m.Start(ctx))
	cancel()
	assert.NoError(t, b.startCtx.Err(), "cancelling Start's context after it returned must not end the VM")
	assert.Equal(t, vmm.StateRunning, m.State())
	require.NoError(t, m.Close())
	assert.Error(t, b.startCtx.Err(), "Close ends the VM's lifetime")
	assert.Equal(t, vmm.StateStopped, m.State())
}

func TestStartCancelledMidway(t *testing.T) {
	b := newScripted()
	m, _ := scripted(b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := m.Start(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []vmm.StopMode{vmm.StopForce}, b.stops, "a backend that started anyway is forced off")
	assert.Equal(t, vmm.StateFailed, m.State())
}

func TestPauseResume(t *testing.T) {
	b := newScripted()
	m, rec := scripted(b)
	assert.ErrorIs(t, m.Pause(), vmm.ErrBadTransition, "pause before start")
	assert.ErrorIs(t, m.Resume(), vmm.ErrBadTransition, "resume before start")
	require.NoError(t, m.Start(context.Background()))
	require.NoError(t, m.Pause())
	assert.True(t, b.paused)
	assert.ErrorIs(t, m.Pause(), vmm.ErrBadTransition, "pause twice")
	require.NoError(t, m.Resume())
	assert.False(t, b.paused)
	require.NoError(t, m.Close())
	assert.Contains(t, rec.path(), "running→paused")
	assert.Contains(t, rec.path(), "paused→running")
}

func TestFailedPauseKeepsRunning(t *testing.T) {
	b := newScripted()
	b.pauseErr = errors.New("qmp: timeout")
	m, _ := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	require.ErrorContains(t, m.Pause(), "qmp: timeout")
	assert.Equal(t, vmm.StateRunning, m.State())
	require.NoError(t, m.Close())
}

func TestPauseRacingTheEndLeavesItEnded(t *testing.T) {
	b := newScripted()
	m, _ := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	b.pauseErr = errors.New("vm is not running")
	b.beforePause = func() {
		b.exit <- vmm.ExitStatus{Reason: vmm.ExitPoweroff}
		<-m.Done()
	}
	require.Error(t, m.Pause())
	assert.Equal(t, vmm.StateStopped, m.State(), "a failed pause never brings an ended VM back")

	b2 := newScripted()
	m2, _ := scripted(b2)
	require.NoError(t, m2.Start(context.Background()))
	b2.beforePause = func() {
		b2.exit <- vmm.ExitStatus{Reason: vmm.ExitPoweroff}
		<-m2.Done()
	}
	require.ErrorIs(t, m2.Pause(), vmm.ErrBadTransition, "the backend paused, but the VM ended meanwhile")
	assert.Equal(t, vmm.StateStopped, m2.State())
}

func TestStopGracefulThenForce(t *testing.T) {
	b := newScripted()
	m, rec := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	require.NoError(t, m.Stop(context.Background(), time.Millisecond))
	assert.Equal(t, []vmm.StopMode{vmm.StopGraceful}, b.stops, "the backend forces once the timeout passes")
	assert.Equal(t, vmm.StateStopped, m.State())
	assert.Equal(t, []string{"created→starting", "starting→running", "running→stopping", "stopping→stopped"}, rec.path())
	assert.ErrorIs(t, m.Stop(context.Background(), 0), vmm.ErrBadTransition, "stop a stopped VM")
}

func TestStopPausedResumesFirst(t *testing.T) {
	b := newScripted()
	m, rec := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	require.NoError(t, m.Pause())
	require.NoError(t, m.Stop(context.Background(), time.Millisecond))
	assert.False(t, b.paused, "a paused guest cannot hear the power button")
	assert.Contains(t, rec.path(), "paused→running")
}

func TestForceStop(t *testing.T) {
	b := newScripted()
	m, _ := scripted(b)
	require.NoError(t, m.Start(context.Background()))
	require.NoError(t, m.Stop(context.Background(), 0))
	assert.Equal(t, []vmm.StopMode{vmm.StopForce}, b.stops)
}

func TestCloseBeforeStart(t *testing.T) {
	b := newScripted()
	m, rec := scripted(b)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close twice")
	assert.ErrorIs(t, m.Start(context.Background()), ErrClosed)
	_, err := m.Wait()
	assert.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, []string{"created→stopped"}, rec.path())
}

func TestProberCaches(t *testing.T) {
	p := &Prober{}
	dev := filepath.Join(t.TempDir(), "no-kvm")
	first := p.Probe(context.Background(), dev)
	assert.False(t, first.KVM)
	assert.NotEmpty(t, first.Reason)
	// A marker in the cache proves the second call does not probe again.
	p.results[dev] = accel.Result{Reason: "cached"}
	assert.Equal(t, "cached", p.Probe(context.Background(), dev).Reason)
}
