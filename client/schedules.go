package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/policy"
)

func schedulePath(id string) string { return "/v1/schedules/" + url.PathEscape(id) }

// Schedules returns every schedule, sorted by id.
func (c *Client) Schedules(ctx context.Context) ([]policy.Schedule, error) {
	var out []policy.Schedule
	err := c.call(ctx, http.MethodGet, "/v1/schedules", nil, nil, &out, http.StatusOK)
	return out, err
}

// Schedule returns one schedule.
func (c *Client) Schedule(ctx context.Context, id string) (policy.Schedule, error) {
	var s policy.Schedule
	err := c.call(ctx, http.MethodGet, schedulePath(id), nil, nil, &s, http.StatusOK)
	return s, err
}

// AddSchedule adds a schedule and returns it as the agent stored it (with
// its id when s had none). Bad input is an *Error naming the field.
func (c *Client) AddSchedule(ctx context.Context, s policy.Schedule) (policy.Schedule, error) {
	var out policy.Schedule
	err := c.call(ctx, http.MethodPost, "/v1/schedules", nil, s, &out, http.StatusCreated)
	return out, err
}

// DeleteSchedule removes a schedule.
func (c *Client) DeleteSchedule(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, schedulePath(id), nil, nil, nil, http.StatusNoContent)
}

// NextSchedules returns the next count occurrences of every schedule
// (count 0: the agent's default), oldest first.
func (c *Client) NextSchedules(ctx context.Context, count int) ([]agent.ScheduleOccurrence, error) {
	var q url.Values
	if count > 0 {
		q = url.Values{"count": {strconv.Itoa(count)}}
	}
	var out []agent.ScheduleOccurrence
	err := c.call(ctx, http.MethodGet, "/v1/schedules/next", q, nil, &out, http.StatusOK)
	return out, err
}
