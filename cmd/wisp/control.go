package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/api"
	"github.com/wisp-vmm/wisp/vmm/console"
	"github.com/wisp-vmm/wisp/vmm/machine"
)

// consoleHistory is how much console output the control socket keeps for
// a viewer that attaches late.
const consoleHistory = 1 << 20

// controlFlags make `wisp run` a VMM process a manager drives.
type controlFlags struct {
	apiSock  string
	exitFile string
	name     string
}

// controller answers the control socket for one Machine.
type controller struct {
	m    *machine.Machine
	name string
}

func (c controller) Status() api.Status {
	in := c.m.Info()
	st := api.Status{
		ID: in.ID, Name: c.name, State: in.State.String(), Backend: string(in.Accel),
		BackendReason: in.AccelReason, PID: os.Getpid(),
		NetRxBytes: in.NetRxBytes, NetTxBytes: in.NetTxBytes,
	}
	if !in.StartedAt.IsZero() {
		st.StartedAt = in.StartedAt.UTC()
		if in.State == vmm.StateRunning || in.State == vmm.StatePaused {
			st.UptimeSeconds = time.Since(in.StartedAt).Seconds()
		}
	}
	if cfg, err := json.Marshal(publicConfig(in.Config)); err == nil {
		st.Config = cfg
	}
	if in.Exit != nil {
		st.Exit = &api.Exit{Reason: in.Exit.Reason.String(), Detail: in.Exit.Detail, Code: vmm.ExitCode(*in.Exit)}
	}
	return st
}

func (c controller) Pause() error  { return c.m.Pause() }
func (c controller) Resume() error { return c.m.Resume() }
func (c controller) Stop(ctx context.Context, o api.StopOptions) error {
	timeout := o.Timeout
	if o.Force {
		timeout = 0
	}
	return c.m.Stop(ctx, timeout)
}

// configView is the part of a VM's config the control socket shows.
type configView struct {
	Kernel      string   `json:"kernel,omitempty"`
	Initrd      string   `json:"initrd,omitempty"`
	Cmdline     string   `json:"cmdline,omitempty"`
	CPUs        int      `json:"cpus"`
	MemoryBytes uint64   `json:"memory_bytes"`
	Disks       []string `json:"disks,omitempty"`
	Nets        int      `json:"nets,omitempty"`
	Accel       string   `json:"accel"`
	Boot        string   `json:"boot"`
}

func publicConfig(cfg vmm.Config) configView {
	v := configView{Kernel: cfg.Kernel, Initrd: cfg.Initrd, Cmdline: cfg.Cmdline, CPUs: cfg.CPUs, MemoryBytes: cfg.MemoryBytes,
		Nets: len(cfg.Nets), Accel: string(cfg.Accel), Boot: string(cfg.Boot)}
	for _, d := range cfg.Disks {
		v.Disks = append(v.Disks, d.Path)
	}
	return v
}

// serveControl serves m's control API on o.apiSock until the returned
// function is called (it removes the socket).
func serveControl(m *machine.Machine, o controlFlags, hub *console.Hub, stderr io.Writer) (func(), error) {
	ln, err := api.Listen(o.apiSock)
	if err != nil {
		return nil, fmt.Errorf("--api-sock %s: %w", o.apiSock, err)
	}
	srv := api.NewServer(controller{m: m, name: o.name}, hub, newLineLogger(stderr, nil))
	go func() { _ = srv.Serve(ln) }()
	return func() {
		_ = srv.Close()
		_ = os.Remove(o.apiSock)
	}, nil
}

// writeExitRecord says how the VM ended, for a manager that is not this
// process's parent.
func writeExitRecord(path string, st vmm.ExitStatus, runErr error) error {
	rec := agent.ExitRecord{Reason: st.Reason.String(), Detail: st.Detail, Code: vmm.ExitCode(st), Time: time.Now().UTC()}
	if runErr != nil {
		rec.Reason, rec.Detail, rec.Code = vmm.ExitBackendFailure.String(), runErr.Error(), vmm.CodeError
	}
	return agent.WriteExit(path, rec)
}
