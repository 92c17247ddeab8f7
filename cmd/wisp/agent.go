package main

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/vmm"
)

func newAgentCommand(c *cli) *cobra.Command {
	var cfg agent.Config
	var debug bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Keep this host's VMs: a daemon serving wisp's API on a unix socket",
		Long: `Run the host agent in the foreground. It keeps the VMs made with
` + "`wisp vm create`" + ` in a store under --state-dir, runs each in its own VMM process
(` + "`wisp run --api-sock`" + `), and serves the API that ` + "`wisp vm`" + ` and programs use on
--socket (root and group wisp may use it). VMs keep running when the agent
stops; a new agent adopts them. After a host boot it starts the VMs marked
--autostart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			return a.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.StateDir, "state-dir", agent.DefaultStateDir, "where the store and the VMs' files live")
	fl.StringVar(&cfg.RunDir, "run-dir", agent.DefaultRunDir, "runtime directory (a tmpfs): sockets, running VMs")
	fl.StringVar(&cfg.Socket, "socket", "", "the API's unix socket (default RUN-DIR/agent.sock)")
	fl.StringVar(&cfg.Group, "group", agent.DefaultGroup, "group that may use the socket")
	fl.DurationVar(&cfg.Interval, "interval", 2*time.Second, "how often every VM is looked at when nothing else asks")
	fl.IntVar(&cfg.Host.CPUs, "host-cpus", 0, "CPUs the VMs may use (default: all of the host's)")
	fl.Var(sizeFlag{&cfg.Host.MemoryBytes}, "host-memory", "memory the VMs may use, e.g. 16G (default: all of the host's)")
	fl.Float64Var(&cfg.Host.CPUOvercommit, "cpu-overcommit", agent.DefaultCPUOvercommit, "vCPUs each host CPU may carry (memory is never overcommitted)")
	fl.DurationVar(&cfg.TrafficInterval, "traffic-interval", time.Minute, "how often running VMs' NIC counters go into the ledger")
	fl.BoolVar(&debug, "debug", false, "log every request and state change")
	return cmd
}

// sizeFlag reads a size such as 16G into a byte count.
type sizeFlag struct{ bytes *uint64 }

func (f sizeFlag) String() string {
	if f.bytes == nil || *f.bytes == 0 {
		return ""
	}
	return vmm.FormatSize(*f.bytes)
}

func (f sizeFlag) Set(s string) error {
	n, err := vmm.ParseSize(s)
	if err != nil {
		return err
	}
	*f.bytes = n
	return nil
}

func (sizeFlag) Type() string { return "size" }
