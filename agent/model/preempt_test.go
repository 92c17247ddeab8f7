package model

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func vmOf(name, class string, prio int, mem uint64, running bool) VM {
	v := VM{Name: name, Class: class, Priority: prio, Spec: Spec{CPUs: 1, MemoryBytes: mem}, Desired: DesiredStopped, Observed: ObservedStopped}
	if running {
		v.Desired, v.Observed = DesiredRunning, ObservedRunning
		v.Runtime = &Runtime{StartedAt: time.Unix(int64(prio), 0)}
	}
	return v
}

func names(vms []VM) []string {
	var out []string
	for _, v := range vms {
		out = append(out, v.Name)
	}
	return out
}

func TestPreempts(t *testing.T) {
	res := vmOf("r", ClassReserved, 0, 1, false)
	be5 := vmOf("b5", ClassBestEffort, 5, 1, false)
	be1 := vmOf("b1", ClassBestEffort, 1, 1, false)
	tests := []struct {
		vm, victim VM
		want       bool
	}{
		{res, be5, true},  // reserved displaces any best-effort
		{res, res, false}, // never itself
		{be5, res, false}, // reserved is never displaced
		{be5, be1, true},  // higher priority best-effort
		{be1, be5, false}, // not a higher one
		{be5, vmOf("b5b", ClassBestEffort, 5, 1, false), false}, // equal priorities cannot take turns
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Preempts(tt.vm, tt.victim), "%s over %s", tt.vm.Name, tt.victim.Name)
	}
}

func TestPlanPreemption(t *testing.T) {
	host := Capacity{CPUs: 8, MemoryBytes: 1000}
	full := []VM{
		vmOf("low", ClassBestEffort, 1, 300, true),
		vmOf("mid", ClassBestEffort, 2, 300, true),
		vmOf("keep", ClassReserved, 0, 300, true),
	}
	tests := []struct {
		name    string
		vms     []VM
		vm      VM
		victims []string
		ok      bool
	}{
		{"fits as it is", full[:2], vmOf("new", ClassReserved, 0, 300, false), nil, true},
		{"lowest priority first", full, vmOf("new", ClassReserved, 0, 300, false), []string{"low"}, true},
		{"as many as it takes", full, vmOf("new", ClassReserved, 0, 600, false), []string{"low", "mid"}, true},
		{"reserved VMs do not make room", full, vmOf("new", ClassReserved, 0, 800, false), nil, false},
		{"best-effort only displaces lower priorities", full, vmOf("new", ClassBestEffort, 2, 300, false), []string{"low"}, true},
		{"best-effort of the lowest priority waits", full, vmOf("new", ClassBestEffort, 0, 300, false), nil, false},
		{"held VMs count as gone", append([]VM{func() VM { v := full[0]; v.Held = true; return v }()}, full[1:]...), vmOf("new", ClassReserved, 0, 300, false), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			victims, ok := PlanPreemption(host, tt.vms, tt.vm)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.victims, names(victims))
		})
	}
}

func TestHeldInOrder(t *testing.T) {
	held := func(v VM) VM { v.Held, v.Desired = true, DesiredRunning; return v }
	vms := []VM{
		held(vmOf("be-low", ClassBestEffort, 1, 1, false)),
		held(vmOf("be-high", ClassBestEffort, 9, 1, false)),
		held(vmOf("res", ClassReserved, 0, 1, false)),
		vmOf("not-held", ClassBestEffort, 5, 1, false),
	}
	assert.Equal(t, []string{"res", "be-high", "be-low"}, names(HeldInOrder(vms)))
}
