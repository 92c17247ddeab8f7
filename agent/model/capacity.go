package model

import (
	"fmt"
	"math"
)

// Capacity is an amount of host resources: what the host offers, or what
// VMs hold.
type Capacity struct {
	CPUs        int
	MemoryBytes uint64
	// CPUOvercommit is how many vCPUs each host CPU may carry; 0 means 1
	// (no overcommit). Only the host's Capacity uses it. Memory is never
	// overcommitted: guest RAM is touched and a host OOM kills VMs.
	CPUOvercommit float64
}

// holdsResources says whether v counts against the host: its VMM process
// exists (starting, running, paused, stopping), or it is wanted running or
// paused and the agent is about to start it. Counting the second kind stops
// two starts accepted at once from both fitting into the same free memory
// before either VMM exists.
func holdsResources(v VM) bool {
	switch v.Observed {
	case ObservedStarting, ObservedRunning, ObservedPaused, ObservedStopping:
		return true
	}
	if v.Held {
		return false // waiting for room, not in it
	}
	return v.Desired == DesiredRunning || v.Desired == DesiredPaused
}

// Needs sums the size of the VMs that hold host resources, leaving out the
// VM named excluding (the one being started or resized, so it is not
// counted against itself).
func Needs(vms []VM, excluding string) Capacity {
	var used Capacity
	for _, v := range vms {
		if v.Name == excluding || !holdsResources(v) {
			continue
		}
		used.CPUs += v.Spec.CPUs
		used.MemoryBytes += v.Spec.MemoryBytes
	}
	return used
}

// Fits says whether a VM of size want fits on host next to used. A
// refusal is a *CapacityError, matching ErrConflict.
func Fits(host, used Capacity, want Spec) error {
	var freeMem uint64
	if used.MemoryBytes < host.MemoryBytes {
		freeMem = host.MemoryBytes - used.MemoryBytes
	}
	if want.MemoryBytes > freeMem {
		return &CapacityError{Short: "memory", Want: want.MemoryBytes, Free: freeMem, Total: host.MemoryBytes}
	}
	factor := host.CPUOvercommit
	if factor <= 0 {
		factor = 1
	}
	totalCPUs := uint64(math.Floor(float64(host.CPUs) * factor))
	var freeCPUs uint64
	if u := uint64(max(used.CPUs, 0)); u < totalCPUs {
		freeCPUs = totalCPUs - u
	}
	if uint64(max(want.CPUs, 0)) > freeCPUs {
		return &CapacityError{Short: "cpus", Want: uint64(want.CPUs), Free: freeCPUs, Total: totalCPUs}
	}
	return nil
}

// CapacityError is a VM that does not fit on the host, e.g. "not enough
// memory: vm needs 1.0 GiB, 512.0 MiB free of 2.0 GiB". It matches
// ErrConflict.
type CapacityError struct {
	Short string // "memory" or "cpus"
	// Want, Free and Total are bytes for memory, vCPUs for cpus; Total
	// includes the CPU overcommit.
	Want, Free, Total uint64
}

func (e *CapacityError) Error() string {
	if e.Short == "memory" {
		return fmt.Sprintf("not enough memory: vm needs %s, %s free of %s",
			FormatBytes(e.Want), FormatBytes(e.Free), FormatBytes(e.Total))
	}
	return fmt.Sprintf("not enough %s: vm needs %d, %d free of %d", e.Short, e.Want, e.Free, e.Total)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *CapacityError) Is(target error) bool { return target == ErrConflict }

// FormatBytes writes n in binary units with one decimal: "512.0 MiB",
// "1.5 GiB"; below 1 KiB as "N B".
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
