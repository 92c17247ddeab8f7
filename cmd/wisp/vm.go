package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/client"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

// agentFlags find the agent: --socket, else $WISP_SOCKET, else the default.
type agentFlags struct{ socket string }

func (a *agentFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&a.socket, "socket", "", "the agent's socket (default $WISP_SOCKET, else "+client.DefaultSocket+")")
}

func (a *agentFlags) client() *client.Client { return client.New(client.SocketFromEnv(a.socket)) }

func newVMCommand(c *cli) *cobra.Command {
	var af agentFlags
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Manage the VMs the host agent keeps (create, start, stop, pause, console, ...)",
	}
	af.register(cmd)
	cmd.AddCommand(
		newVMCreateCommand(c, &af),
		newVMListCommand(c, &af),
		newVMInspectCommand(c, &af),
		newVMOpCommand(c, &af, model.OpStart, "Start a VM"),
		newVMOpCommand(c, &af, model.OpStop, "Stop a VM: the ACPI power button, then force after --timeout"),
		newVMOpCommand(c, &af, model.OpPause, "Pause a VM's vCPUs"),
		newVMOpCommand(c, &af, model.OpResume, "Resume a paused VM"),
		newVMOpCommand(c, &af, model.OpRestart, "Stop a VM (gracefully) and start it again"),
		newVMRemoveCommand(c, &af),
		newVMConsoleCommand(c, &af),
		newVMLogsCommand(c, &af),
		newVMEventsCommand(c, &af),
	)
	return cmd
}

func newVMCreateCommand(c *cli, af *agentFlags) *cobra.Command {
	var f runFlags
	var req agent.CreateRequest
	var labels []string
	var from, until string
	cmd := &cobra.Command{
		Use:   "create NAME [flags] [-- CMD ARGS...]",
		Short: "Define a VM (the same flags as wisp run); --start starts it too",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			var argv []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				if dash != 1 {
					return vmm.Invalidf("give one NAME before --")
				}
				argv = args[1:]
			} else if len(args) > 1 {
				return vmm.Invalidf("unexpected argument %q: put the command to run in the guest after --", args[1])
			}
			spec, err := f.spec(cmd.Flags().Changed, argv)
			if err != nil {
				return err
			}
			req.Spec = spec
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if req.LeaseFrom, err = parseTime("--from", from); err != nil {
				return err
			}
			if req.LeaseUntil, err = parseTime("--until", until); err != nil {
				return err
			}
			vm, err := af.client().Create(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printVM(c.stdout, vm, false)
		},
	}
	fl := cmd.Flags()
	f.registerMachine(fl)
	fl.BoolVar(&req.Autostart, "autostart", false, "start the VM whenever the agent starts after a host boot, and again after a crash")
	fl.BoolVar(&req.Start, "start", false, "start it once created")
	fl.IntVar(&req.Priority, "priority", 0, "the VM's priority (higher wins when the host is full)")
	fl.StringVar(&req.Class, "class", model.ClassReserved, "reserved (must run when desired) or best-effort")
	fl.StringArrayVar(&labels, "label", nil, "KEY=VALUE label; repeatable")
	fl.StringVar(&from, "from", "", "a lease: start the VM at this time (2026-12-24T08:00, local, or RFC 3339)")
	fl.StringVar(&until, "until", "", "a lease: stop the VM at this time, and refuse to start it after")
	return cmd
}

// parseTime reads a lease time: RFC 3339, or a local date and time.
func parseTime(flag, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return &t, nil
		}
	}
	return nil, vmm.Invalidf("%s %q: want a time like 2026-12-24T08:00 (local) or 2026-12-24T08:00:00Z", flag, s)
}

func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, vmm.Invalidf("--label %q: want KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

// spec turns `wisp run`'s flags into a VM spec for the agent. Paths become
// absolute: the agent runs elsewhere.
func (f runFlags) spec(changed func(string) bool, argv []string) (model.Spec, error) {
	mem, err := vmm.ParseSize(f.memory)
	if err != nil {
		return model.Spec{}, vmm.Invalidf("--memory: %v", err)
	}
	s := model.Spec{
		Kernel: absPath(f.kernel), Initrd: absPath(f.initrd), Cmdline: f.cmdline,
		CPUs: f.cpus, MemoryBytes: mem, Nets: f.nets,
		Image: absPath(f.image), VMDir: absPath(f.vm), Boot: f.boot, Accel: f.accel, OnReboot: f.onReboot,
		UserData: absPath(f.seed.userData), Hostname: f.seed.hostname, Command: argv,
	}
	if changed("rng") {
		rng := f.rng
		s.RNG = &rng
	}
	for _, d := range f.disks {
		path, opts, _ := strings.Cut(d, ",")
		if opts != "" {
			opts = "," + opts
		}
		s.Disks = append(s.Disks, absPath(path)+opts)
	}
	for _, k := range f.seed.sshKeys {
		s.SSHKeys = append(s.SSHKeys, absPath(k))
	}
	if err := s.Validate(); err != nil {
		return model.Spec{}, vmm.Invalidf("%v", err)
	}
	return s, nil
}

func absPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return abs
}

type jsonFlag struct{ on bool }

func (j *jsonFlag) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&j.on, "json", false, "print JSON")
}

func newVMListCommand(c *cli, af *agentFlags) *cobra.Command {
	var js jsonFlag
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the VMs: name, state, backend, CPUs, memory, uptime",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vms, err := af.client().List(cmd.Context())
			if err != nil {
				return err
			}
			if js.on {
				return writeJSON(c.stdout, vms)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tDESIRED\tBACKEND\tCPUS\tMEMORY\tUPTIME\tIP")
			for _, vm := range vms {
				backend, ip := "-", "-"
				if vm.Runtime != nil && vm.Runtime.Backend != "" {
					backend = vm.Runtime.Backend
				}
				if addr := guestIP(vm.Spec); addr != "" && vm.Runtime != nil {
					ip = addr
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", vm.Name, vm.Observed, vm.Desired, backend,
					vm.Spec.CPUs, vmm.FormatSize(vm.Spec.MemoryBytes), uptime(vm.UptimeSeconds), ip)
			}
			return tw.Flush()
		},
	}
	js.register(cmd)
	return cmd
}

// guestIP is the address a VM is known to have without asking the guest:
// the user-mode network's DHCP always hands out the same one.
func guestIP(s model.Spec) string {
	if len(s.Nets) > 0 && strings.HasPrefix(s.Nets[0], "user") {
		return "10.0.2.15"
	}
	return ""
}

func uptime(sec float64) string {
	if sec <= 0 {
		return "-"
	}
	return (time.Duration(sec) * time.Second).Round(time.Second).String()
}

func newVMInspectCommand(c *cli, af *agentFlags) *cobra.Command {
	var js jsonFlag
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show one VM: its spec, desired and observed state, and VMM process",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := af.client().Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printVM(c.stdout, vm, js.on)
		},
	}
	js.register(cmd)
	return cmd
}

// printVM prints a VM for a person, or as JSON.
func printVM(w io.Writer, vm agent.VMInfo, asJSON bool) error {
	if asJSON {
		return writeJSON(w, vm)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("name", "%s", vm.Name)
	row("state", "%s (desired %s)", vm.Observed, vm.Desired)
	if vm.Reason != "" {
		row("reason", "%s", vm.Reason)
	}
	if rt := vm.Runtime; rt != nil {
		row("vmm", "pid %d, %s backend, up %s", rt.PID, dash(rt.Backend), uptime(vm.UptimeSeconds))
	}
	row("size", "%d vCPU, %s", vm.Spec.CPUs, vmm.FormatSize(vm.Spec.MemoryBytes))
	switch {
	case vm.Spec.Image != "":
		row("boots", "image %s", vm.Spec.Image)
	case vm.Spec.VMDir != "":
		row("boots", "vm directory %s", vm.Spec.VMDir)
	case vm.Spec.Kernel != "":
		row("boots", "kernel %s", vm.Spec.Kernel)
	default:
		row("boots", "the default guest")
	}
	for _, d := range vm.Spec.Disks {
		row("disk", "%s", d)
	}
	for _, n := range vm.Spec.Nets {
		row("net", "%s", n)
	}
	if len(vm.Spec.Command) > 0 {
		row("command", "%s", strings.Join(vm.Spec.Command, " "))
	}
	row("autostart", "%t", vm.Autostart)
	if vm.LeaseFrom != nil || vm.LeaseUntil != nil {
		row("lease", "%s", leaseWindow(vm.LeaseFrom, vm.LeaseUntil))
	}
	if vm.Held {
		row("held", "waiting for capacity")
	}
	row("priority", "%d (%s)", vm.Priority, vm.Class)
	for _, k := range slices.Sorted(maps.Keys(vm.Labels)) {
		row("label", "%s=%s", k, vm.Labels[k])
	}
	row("created", "%s", vm.CreatedAt.Local().Format(time.DateTime))
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVMOpCommand(c *cli, af *agentFlags, op model.Op, short string) *cobra.Command {
	var opts agent.OpOptions
	var js jsonFlag
	var noWait bool
	cmd := &cobra.Command{
		Use:   string(op) + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.NoWait = noWait
			vm, err := af.client().Do(cmd.Context(), args[0], op, opts)
			if err != nil {
				return err
			}
			if js.on {
				return writeJSON(c.stdout, vm)
			}
			fmt.Fprintf(c.stdout, "%s: %s\n", vm.Name, vm.Observed)
			return nil
		},
	}
	if op == model.OpStop || op == model.OpRestart {
		cmd.Flags().BoolVar(&opts.Force, "force", false, "end the guest at once, without the power button")
		cmd.Flags().DurationVar(&opts.Timeout, "timeout", agent.DefaultStopTimeout, "how long the guest has to power off before it is forced")
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the agent has the request, before the VM got there")
	js.register(cmd)
	return cmd
}

func newVMRemoveCommand(c *cli, af *agentFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a stopped VM (--force: stop it first); its history stays",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return af.client().Delete(cmd.Context(), args[0], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "force a running VM off first")
	return cmd
}

func newVMConsoleCommand(c *cli, af *agentFlags) *cobra.Command {
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console (Ctrl-A x detaches; the VM keeps running)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := af.client().Console(cmd.Context(), args[0], !readOnly)
			if err != nil {
				return err
			}
			defer conn.Close()
			return attachTerminal(cmd.Context(), conn, c.stdin, c.stdout, readOnly)
		},
	}
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "watch without typing (several may watch; one may type)")
	return cmd
}

// attachTerminal joins the terminal to a console stream until the stream
// ends, the user types Ctrl-A x, or ctx ends.
func attachTerminal(ctx context.Context, conn io.ReadWriteCloser, stdin *os.File, stdout io.Writer, readOnly bool) error {
	quit := make(chan struct{})
	if fd := int(stdin.Fd()); term.IsTerminal(fd) {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, old)
	}
	if !readOnly {
		go func() {
			_, _ = io.Copy(conn, console.NewEscapeReader(stdin, quit))
		}()
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	case <-quit:
		return nil
	case <-ctx.Done():
		return nil
	}
}

func newVMLogsCommand(c *cli, af *agentFlags) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print what a VM's console printed (-f: keep following)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := tail
			if n == 0 {
				n = -1 // the client's "all"
			}
			return af.client().Logs(cmd.Context(), args[0], follow, n, c.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVar(&tail, "tail", 0, "only the last N bytes (0: all)")
	return cmd
}

func newVMEventsCommand(c *cli, af *agentFlags) *cobra.Command {
	var follow bool
	var js jsonFlag
	cmd := &cobra.Command{
		Use:   "events [NAME]",
		Short: "Print the VMs' history of state changes (-f: keep following)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var q store.EventQuery
			if len(args) == 1 {
				q.VM = args[0]
			}
			print := func(ev model.Event) error {
				if js.on {
					b, err := json.Marshal(ev)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.stdout, "%s\n", b)
					return err
				}
				_, err := fmt.Fprintf(c.stdout, "%s  %-12s %-9s %-9s → %-9s %s\n", ev.Time.Local().Format(time.DateTime), ev.VM, ev.Kind, dash(ev.From), dash(ev.To), ev.Reason)
				return err
			}
			cl := af.client()
			if follow {
				err := cl.FollowEvents(cmd.Context(), q, print)
				if cmd.Context().Err() != nil {
					return nil
				}
				return err
			}
			evs, err := cl.Events(cmd.Context(), q)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if err := print(ev); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	js.register(cmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func leaseWindow(from, until *time.Time) string {
	f, u := "now", "no end"
	if from != nil {
		f = from.Local().Format(time.DateTime)
	}
	if until != nil {
		u = until.Local().Format(time.DateTime)
	}
	return f + " → " + u
}
