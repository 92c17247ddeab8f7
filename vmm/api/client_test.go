package api

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

func TestClientStatus(t *testing.T) {
	vm := &fakeVM{state: vmm.StateRunning}
	path, _ := serve(t, vm, nil)
	st, err := Dial(path).Status(t.Context())
	require.NoError(t, err)
	want := vm.Status()
	assert.True(t, want.StartedAt.Equal(st.StartedAt))
	st.StartedAt = want.StartedAt
	assert.JSONEq(t, string(want.Config), string(st.Config))
	st.Config = want.Config
	assert.Equal(t, want, st)
}

func TestClientOperations(t *testing.T) {
	ctx := t.Context()
	vm := &fakeVM{state: vmm.StateRunning}
	path, _ := serve(t, vm, nil)
	c := Dial(path)

	require.NoError(t, c.Pause(ctx))
	assert.Equal(t, "paused", vm.Status().State)
	require.NoError(t, c.Resume(ctx))
	assert.Equal(t, "running", vm.Status().State)

	st, err := c.Stop(ctx, StopOptions{Timeout: 5 * time.Second})
	require.NoError(t, err)
	assert.Equal(t, "stopped", st.State, "the answer comes once stopped")
	require.NotNil(t, st.Exit)
	assert.Equal(t, "stopped", st.Exit.Reason)
	assert.Equal(t, StopOptions{Timeout: 5 * time.Second}, vm.lastStop())

	vm.mu.Lock()
	vm.state = vmm.StateRunning
	vm.mu.Unlock()
	_, err = c.Stop(ctx, StopOptions{Force: true})
	require.NoError(t, err)
	assert.Equal(t, StopOptions{Force: true, Timeout: DefaultStopTimeout}, vm.lastStop(), "zero timeout: the default")
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name   string
		state  vmm.State
		fail   error
		call   func(context.Context, *Client) error
		status int
		code   Code
		is     []error
	}{
		{name: "pause while paused", state: vmm.StatePaused,
			call:   func(ctx context.Context, c *Client) error { return c.Pause(ctx) },
			status: 409, code: CodeConflict, is: []error{vmm.ErrBadTransition, ErrConflict}},
		{name: "stop a stopped vm", state: vmm.StateStopped,
			call:   func(ctx context.Context, c *Client) error { _, err := c.Stop(ctx, StopOptions{}); return err },
			status: 409, code: CodeConflict, is: []error{vmm.ErrBadTransition}},
		{name: "negative timeout", state: vmm.StateRunning,
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Stop(ctx, StopOptions{Timeout: -time.Second})
				return err
			},
			status: 400, code: CodeBadRequest, is: []error{ErrBadRequest}},
		{name: "controller failure", state: vmm.StateRunning, fail: errBackend,
			call:   func(ctx context.Context, c *Client) error { return c.Resume(ctx) },
			status: 500, code: CodeInternal, is: []error{ErrInternal}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := serve(t, &fakeVM{state: tt.state, fail: tt.fail}, nil)
			err := tt.call(t.Context(), Dial(path))
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tt.status, e.Status)
			assert.Equal(t, tt.code, e.Code)
			assert.NotEmpty(t, e.Message)
			for _, target := range tt.is {
				assert.ErrorIs(t, err, target)
			}
			assert.NotErrorIs(t, err, console.ErrConsoleBusy)
		})
	}
}

func TestClientNoServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	_, err := Dial(path).Status(t.Context())
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist, "no socket")
	var ne net.Error
	assert.ErrorAs(t, err, &ne)
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		code  Code
		is    []error
		isNot []error
	}{
		{CodeConflict, []error{ErrConflict, vmm.ErrBadTransition}, []error{ErrConsoleBusy, ErrInternal}},
		{CodeConsoleBusy, []error{ErrConsoleBusy, console.ErrConsoleBusy}, []error{vmm.ErrBadTransition}},
		{CodeBadRequest, []error{ErrBadRequest}, []error{ErrNotFound}},
		{CodeNotFound, []error{ErrNotFound}, []error{ErrBadRequest}},
		{CodeMethodNotAllowed, []error{ErrMethodNotAllowed}, []error{ErrNotFound}},
		{CodeTooLarge, []error{ErrTooLarge}, []error{ErrBadRequest}},
		{CodeInternal, []error{ErrInternal}, []error{vmm.ErrBadTransition}},
		{"from a newer server", nil, []error{ErrInternal, ErrBadRequest}},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			err := error(&Error{Code: tt.code, Message: "m"})
			for _, target := range tt.is {
				assert.ErrorIs(t, err, target)
			}
			for _, target := range tt.isNot {
				assert.NotErrorIs(t, err, target)
			}
		})
	}
	assert.Equal(t, CodeConflict, asError(errors.Join(errBackend, &vmm.TransitionError{})).Code)
	assert.Equal(t, CodeInternal, asError(errBackend).Code)
}
