package client

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/policy"
)

func TestSchedules(t *testing.T) {
	ta := newTestAgent(t)
	ctx := context.Background()

	s, err := ta.c.AddSchedule(ctx, policy.Schedule{ID: "night-stop", Labels: map[string]string{"tier": "web"}, Fraction: 0.5,
		Action: policy.ActionStop, At: "22:00", Days: "weekdays", TZ: "Europe/Berlin"})
	require.NoError(t, err)
	assert.Equal(t, "mon-fri", s.Days)

	_, err = ta.c.AddSchedule(ctx, policy.Schedule{VM: "web1", Action: policy.ActionStop, At: "22:00", TZ: "Nowhere/Town"})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "tz", e.Field)
	assert.ErrorIs(t, err, model.ErrInvalid)

	list, err := ta.c.Schedules(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	got, err := ta.c.Schedule(ctx, "night-stop")
	require.NoError(t, err)
	assert.Equal(t, s, got)

	next, err := ta.c.NextSchedules(ctx, 2)
	require.NoError(t, err)
	require.Len(t, next, 2)
	assert.Equal(t, "night-stop", next[0].Schedule)
	assert.Equal(t, 22, next[0].Time.Hour())

	require.NoError(t, ta.c.DeleteSchedule(ctx, "night-stop"))
	assert.ErrorIs(t, ta.c.DeleteSchedule(ctx, "night-stop"), model.ErrNotFound)
}
