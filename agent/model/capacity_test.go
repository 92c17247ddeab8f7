package model_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

func sized(name string, desired model.Desired, observed model.Observed, cpus int, mem uint64) model.VM {
	return model.VM{Name: name, Desired: desired, Observed: observed, Spec: model.Spec{CPUs: cpus, MemoryBytes: mem}}
}

func TestNeeds(t *testing.T) {
	vms := []model.VM{
		sized("running", model.DesiredRunning, model.ObservedRunning, 1, 1*mib),
		sized("paused", model.DesiredPaused, model.ObservedPaused, 2, 2*mib),
		sized("starting", model.DesiredRunning, model.ObservedStarting, 4, 4*mib),
		sized("stopping", model.DesiredStopped, model.ObservedStopping, 8, 8*mib),
		sized("stopped", model.DesiredStopped, model.ObservedStopped, 16, 16*mib),
		sized("crashed", model.DesiredStopped, model.ObservedCrashed, 32, 32*mib),
		sized("to-start", model.DesiredRunning, model.ObservedStopped, 64, 64*mib),
		sized("suspended", model.DesiredStopped, model.ObservedSuspended, 128, 128*mib),
	}
	tests := []struct {
		name      string
		excluding string
		want      model.Capacity
	}{
		{"all holders", "", model.Capacity{CPUs: 1 + 2 + 4 + 8 + 64, MemoryBytes: (1 + 2 + 4 + 8 + 64) * mib}},
		{"excluding a holder", "paused", model.Capacity{CPUs: 1 + 4 + 8 + 64, MemoryBytes: (1 + 4 + 8 + 64) * mib}},
		{"excluding a stopped vm changes nothing", "stopped", model.Capacity{CPUs: 79, MemoryBytes: 79 * mib}},
		{"excluding the one about to start", "to-start", model.Capacity{CPUs: 15, MemoryBytes: 15 * mib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, model.Needs(vms, tt.excluding))
		})
	}
	assert.Equal(t, model.Capacity{}, model.Needs(nil, ""))
}

func TestFits(t *testing.T) {
	host := model.Capacity{CPUs: 4, MemoryBytes: 2 * gib}
	tests := []struct {
		name      string
		host      model.Capacity
		used      model.Capacity
		want      model.Spec
		wantShort string // "" means it fits
		wantMsg   string
	}{
		{"empty host", host, model.Capacity{}, model.Spec{CPUs: 4, MemoryBytes: 2 * gib}, "", ""},
		{"exactly the rest", host, model.Capacity{CPUs: 2, MemoryBytes: 1536 * mib}, model.Spec{CPUs: 2, MemoryBytes: 512 * mib}, "", ""},
		{"memory short", host, model.Capacity{CPUs: 1, MemoryBytes: 1536 * mib}, model.Spec{CPUs: 1, MemoryBytes: gib}, "memory",
			"not enough memory: vm needs 1.0 GiB, 512.0 MiB free of 2.0 GiB"},
		{"memory over-used already", host, model.Capacity{MemoryBytes: 3 * gib}, model.Spec{CPUs: 1, MemoryBytes: 16 * mib}, "memory",
			"not enough memory: vm needs 16.0 MiB, 0 B free of 2.0 GiB"},
		{"cpus short", host, model.Capacity{CPUs: 3}, model.Spec{CPUs: 2, MemoryBytes: 16 * mib}, "cpus",
			"not enough cpus: vm needs 2, 1 free of 4"},
		{"overcommit 2", model.Capacity{CPUs: 4, MemoryBytes: 2 * gib, CPUOvercommit: 2}, model.Capacity{CPUs: 6}, model.Spec{CPUs: 2, MemoryBytes: 16 * mib}, "", ""},
		{"overcommit 2 full", model.Capacity{CPUs: 4, MemoryBytes: 2 * gib, CPUOvercommit: 2}, model.Capacity{CPUs: 7}, model.Spec{CPUs: 2, MemoryBytes: 16 * mib}, "cpus",
			"not enough cpus: vm needs 2, 1 free of 8"},
		{"overcommit 1.5 rounds down", model.Capacity{CPUs: 3, MemoryBytes: 2 * gib, CPUOvercommit: 1.5}, model.Capacity{}, model.Spec{CPUs: 5, MemoryBytes: 16 * mib}, "cpus",
			"not enough cpus: vm needs 5, 4 free of 4"},
		{"memory is checked first", host, model.Capacity{CPUs: 4, MemoryBytes: 2 * gib}, model.Spec{CPUs: 1, MemoryBytes: 16 * mib}, "memory", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := model.Fits(tt.host, tt.used, tt.want)
			if tt.wantShort == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, model.ErrConflict)
			var ce *model.CapacityError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.wantShort, ce.Short)
			if tt.wantMsg != "" {
				assert.EqualError(t, err, tt.wantMsg)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536 * mib, "1.5 GiB"},
		{512 * mib, "512.0 MiB"},
		{3 << 40, "3.0 TiB"},
		{^uint64(0), "16.0 EiB"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, model.FormatBytes(tt.n), "%d", tt.n)
	}
}
