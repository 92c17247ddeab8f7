package model

import (
	"cmp"
	"slices"
)

// Preempts says whether vm may take the place of victim when the host is
// full: a reserved VM displaces any best-effort one; a best-effort VM only
// best-effort ones of strictly lower priority (so two cannot take turns
// displacing each other). A reserved VM is never displaced.
func Preempts(vm, victim VM) bool {
	if victim.Class != ClassBestEffort || victim.Name == vm.Name {
		return false
	}
	if vm.Class != ClassBestEffort {
		return true
	}
	return victim.Priority < vm.Priority
}

// PlanPreemption chooses the VMs to hold back so that vm fits on host: the
// running best-effort VMs vm may displace, lowest priority first (and of
// equal priority the latest started, which has done the least work). VMs
// already held count as gone: they are on their way out. It returns nil,
// false when even all of them would not make room, and nil, true when vm
// fits without holding back more (it may still have to wait for held VMs
// to stop: Needs tells).
func PlanPreemption(host Capacity, vms []VM, vm VM) ([]VM, bool) {
	var staying []VM
	for _, v := range vms {
		if !v.Held {
			staying = append(staying, v)
		}
	}
	used := Needs(staying, vm.Name)
	if Fits(host, used, vm.Spec) == nil {
		return nil, true
	}
	var candidates []VM
	for _, v := range vms {
		if holdsResources(v) && !v.Held && Preempts(vm, v) {
			candidates = append(candidates, v)
		}
	}
	slices.SortStableFunc(candidates, func(a, b VM) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		return -cmp.Compare(startedAt(a), startedAt(b))
	})
	var victims []VM
	for _, v := range candidates {
		victims = append(victims, v)
		used.CPUs -= v.Spec.CPUs
		used.MemoryBytes -= v.Spec.MemoryBytes
		if Fits(host, used, vm.Spec) == nil {
			return victims, true
		}
	}
	return nil, false
}

func startedAt(v VM) int64 {
	if v.Runtime == nil {
		return 0
	}
	return v.Runtime.StartedAt.UnixNano()
}

// HeldInOrder returns the held VMs in the order they come back: highest
// priority first, reserved before best-effort, then by name.
func HeldInOrder(vms []VM) []VM {
	var held []VM
	for _, v := range vms {
		if v.Held && v.Desired == DesiredRunning {
			held = append(held, v)
		}
	}
	slices.SortStableFunc(held, func(a, b VM) int {
		if a.Class != b.Class {
			if a.Class == ClassBestEffort {
				return 1
			}
			return -1
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return held
}
