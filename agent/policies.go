package agent

import "context"

// runPolicies lets the policies (schedules, leases, priorities) change
// desired states before each reconcile round. They only ever write desired
// states with a reason; the reconcile loop does the rest.
func (a *Agent) runPolicies(ctx context.Context) {
	a.runSchedules(ctx)
	a.releaseHeld()
}

// runSchedules applies the schedules that came due since the last round.
func (a *Agent) runSchedules(ctx context.Context) {}
