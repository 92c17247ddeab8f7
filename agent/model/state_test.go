package model_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

func TestApplyEveryOpInEveryState(t *testing.T) {
	// allowed lists, per operation, the observed states it is accepted in
	// and the desired state it sets; every other pair is refused.
	allowed := map[model.Op]map[model.Observed]model.Desired{
		model.OpStart: {
			model.ObservedStopped: model.DesiredRunning,
			model.ObservedCrashed: model.DesiredRunning,
		},
		model.OpStop: {
			model.ObservedStarting: model.DesiredStopped,
			model.ObservedRunning:  model.DesiredStopped,
			model.ObservedPaused:   model.DesiredStopped,
		},
		model.OpPause:  {model.ObservedRunning: model.DesiredPaused},
		model.OpResume: {model.ObservedPaused: model.DesiredRunning},
		model.OpRestart: {
			model.ObservedRunning: model.DesiredRunning,
			model.ObservedPaused:  model.DesiredRunning,
		},
		model.OpDelete: {
			model.ObservedStopped: model.DesiredStopped,
			model.ObservedCrashed: model.DesiredStopped,
		},
		model.OpResize:  {},
		model.OpSuspend: {},
	}
	require.Len(t, model.Ops(), len(allowed), "every operation has a row here")
	require.Len(t, model.ObservedStates(), 7)
	for _, op := range model.Ops() {
		row, ok := allowed[op]
		require.True(t, ok, "no row for %s", op)
		for _, state := range model.ObservedStates() {
			t.Run(string(op)+"/"+string(state), func(t *testing.T) {
				got, err := model.Apply(op, state)
				want, ok := row[state]
				if ok {
					require.NoError(t, err)
					assert.Equal(t, want, got)
					return
				}
				require.Error(t, err)
				assert.Empty(t, got)
				if op == model.OpResize || op == model.OpSuspend {
					assert.ErrorIs(t, err, model.ErrInvalid)
					assert.Contains(t, err.Error(), "not supported yet")
					return
				}
				assert.ErrorIs(t, err, model.ErrConflict)
				assert.NotErrorIs(t, err, model.ErrInvalid)
				var te *model.TransitionError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, op, te.Op)
				assert.Equal(t, state, te.State)
			})
		}
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct {
		name    string
		vm      model.VM
		op      model.Op
		wantMsg string
		wantIs  error
	}{
		{"refusal names the vm", model.VM{Name: "web1", Observed: model.ObservedStopped}, model.OpPause, "cannot pause: vm web1 is stopped", model.ErrConflict},
		{"stop while stopping", model.VM{Name: "db", Observed: model.ObservedStopping}, model.OpStop, "cannot stop: vm db is stopping", model.ErrConflict},
		{"unknown op", model.VM{Name: "web1", Observed: model.ObservedRunning}, model.Op("reboot"), `op: unknown operation "reboot"`, model.ErrInvalid},
		{"later op", model.VM{Name: "web1", Observed: model.ObservedRunning}, model.OpResize, "op: resize is not supported yet", model.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.vm.Apply(tt.op)
			require.Error(t, err)
			assert.EqualError(t, err, tt.wantMsg)
			assert.ErrorIs(t, err, tt.wantIs)
		})
	}
	_, err := model.Apply(model.OpPause, model.ObservedStopped)
	assert.EqualError(t, err, "cannot pause: vm is stopped")
	assert.False(t, errors.Is(err, model.ErrNotFound))
}

func TestSetObservedAndDesiredEvents(t *testing.T) {
	vm := model.VM{
		Name: "web1", Desired: model.DesiredStopped, Observed: model.ObservedStopped,
		Spec: model.Spec{CPUs: 2, MemoryBytes: 1 << 30},
	}
	evs := vm.SetDesired(model.DesiredRunning, "user start")
	assert.Equal(t, []model.Event{{VM: "web1", Kind: model.EventDesired, From: "stopped", To: "running", Reason: "user start", CPUs: 2, MemoryBytes: 1 << 30}}, evs)
	assert.Equal(t, model.DesiredRunning, vm.Desired)
	assert.Empty(t, vm.SetDesired(model.DesiredRunning, "again"), "no change, no event")

	evs = vm.SetObserved(model.ObservedCrashed, "exit status 84")
	assert.Equal(t, []model.Event{{VM: "web1", Kind: model.EventObserved, From: "stopped", To: "crashed", Reason: "exit status 84", CPUs: 2, MemoryBytes: 1 << 30}}, evs)
	assert.Equal(t, "exit status 84", vm.Reason)
	assert.Empty(t, vm.SetObserved(model.ObservedCrashed, "exit status 82"))
	assert.Equal(t, "exit status 82", vm.Reason, "the reason follows the last observation")
}
