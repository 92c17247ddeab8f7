package agent

import (
	"context"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
)

// runPolicies lets the policies (schedules, leases, priorities) change
// desired states before each reconcile round. They only ever write desired
// states with a reason; the reconcile loop does the rest.
func (a *Agent) runPolicies(ctx context.Context) {
	a.runSchedules(ctx)
	a.applyLeases()
	a.releaseHeld()
}

// applyLeases starts VMs whose lease began (once) and stops those whose
// lease ended.
func (a *Agent) applyLeases() {
	now := a.now()
	vms, err := a.list()
	if err != nil {
		a.log.Error("list vms: " + err.Error())
		return
	}
	for _, vm := range vms {
		ended := vm.LeaseUntil != nil && !now.Before(*vm.LeaseUntil)
		begins := vm.InLease(now) && !vm.LeaseStarted && vm.LeaseFrom != nil
		if !(ended && vm.Desired != model.DesiredStopped) && !begins {
			continue
		}
		_, err := a.store.UpdateVM(vm.Name, func(vm *model.VM) ([]model.Event, error) {
			switch {
			case vm.LeaseUntil != nil && !now.Before(*vm.LeaseUntil):
				vm.Held = false
				return vm.SetDesired(model.DesiredStopped, "lease ended at "+vm.LeaseUntil.UTC().Format(time.RFC3339)), nil
			case vm.InLease(now) && !vm.LeaseStarted && vm.LeaseFrom != nil:
				vm.LeaseStarted = true
				return vm.SetDesired(model.DesiredRunning, "lease began"), nil
			}
			return nil, nil
		})
		if err != nil {
			a.log.Warn("lease: "+err.Error(), "vm", vm.Name)
		}
	}
}
