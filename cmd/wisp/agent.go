package main

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/agent"
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
	fl.Float64Var(&cfg.Host.CPUOvercommit, "cpu-overcommit", agent.DefaultCPUOvercommit, "vCPUs each host CPU may carry (memory is never overcommitted)")
	fl.BoolVar(&debug, "debug", false, "log every request and state change")
	return cmd
}
