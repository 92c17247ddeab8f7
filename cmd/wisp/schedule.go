package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/agent/policy"
	"github.com/wisp-vmm/wisp/vmm"
)

func newScheduleCommand(c *cli) *cobra.Command {
	var af agentFlags
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Recurring actions on VMs (stop at 22:00 on weekdays, around public holidays)",
	}
	af.register(cmd)
	cmd.AddCommand(
		newScheduleAddCommand(c, &af),
		newScheduleListCommand(c, &af),
		newScheduleRemoveCommand(c, &af),
		newScheduleNextCommand(c, &af),
	)
	return cmd
}

func newScheduleAddCommand(c *cli, af *agentFlags) *cobra.Command {
	var (
		s        policy.Schedule
		labels   []string
		holidays string
		extra    []string
	)
	cmd := &cobra.Command{
		Use:   "add (--vm NAME | --label K=V...) --action ACTION --at HH:MM [flags]",
		Short: "Add a schedule: --action stop --at 22:00 --days mon-fri --tz Europe/Berlin --holidays DE",
		Example: `  wisp schedule add --name night-stop --label tier=web --action stop --at 22:00 --days mon-fri --holidays DE
  wisp schedule add --vm web1 --action start --at 07:00 --days mon-fri --holidays DE-BY --holiday 2026-12-24=Heiligabend
  wisp schedule add --label tier=web --fraction 0.5 --action stop --at 20:00 --days weekend --holidays company.ics`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if s.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if !cmd.Flags().Changed("tz") {
				s.TZ = localZone()
			}
			if s.Holidays, err = holidayFlags(holidays, extra); err != nil {
				return err
			}
			out, err := af.client().AddSchedule(cmd.Context(), s)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "schedule %s: %s %s at %s on %s (%s)\n", out.ID, out.Action, scheduleTarget(out), out.At, out.Days, out.TZ)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&s.ID, "name", "", "the schedule's id (default: generated, e.g. stop-2200-1a2b3c)")
	fl.StringVar(&s.VM, "vm", "", "the VM it acts on")
	fl.StringArrayVar(&labels, "label", nil, "KEY=VALUE: act on the VMs with this label (repeatable: all must match)")
	fl.Float64Var(&s.Fraction, "fraction", 0, "act on this fraction of the labelled VMs, the same ones every time (0.5: half)")
	fl.StringVar((*string)(&s.Action), "action", "", "start, stop (graceful), pause or resume (suspend and resize: not yet)")
	fl.StringVar(&s.At, "at", "", "time of day, HH:MM (24 h)")
	fl.StringVar(&s.Days, "days", "daily", "mon-fri, sat,sun, weekdays, weekend, daily, or days and ranges with commas")
	fl.StringVar(&s.TZ, "tz", "", "time zone, e.g. Europe/Berlin (default: this host's zone)")
	fl.StringVar(&holidays, "holidays", "", "public holidays that count as weekend days: a country (DE) or region (DE-BY), or an iCalendar FILE.ics")
	fl.StringArrayVar(&extra, "holiday", nil, "DATE[=NAME]: one more holiday, e.g. 2026-12-24=Heiligabend (repeatable)")
	return cmd
}

// holidayFlags turns --holidays CC|FILE.ics and --holiday DATE[=NAME] into
// the schedule's holidays. A file is read here and sent as text: the agent
// keeps its dates, not a path it may not be able to read.
func holidayFlags(source string, extra []string) (*policy.Holidays, error) {
	if source == "" && len(extra) == 0 {
		return nil, nil
	}
	h := &policy.Holidays{}
	if source != "" {
		if strings.HasSuffix(strings.ToLower(source), ".ics") || strings.ContainsRune(source, os.PathSeparator) {
			b, err := os.ReadFile(source)
			if err != nil {
				return nil, vmm.Invalidf("--holidays %s: %v", source, err)
			}
			h.ICS = string(b)
		} else {
			h.Calendar = source
		}
	}
	for _, e := range extra {
		date, name, _ := strings.Cut(e, "=")
		h.Dates = append(h.Dates, policy.HolidayDate{Date: strings.TrimSpace(date), Name: strings.TrimSpace(name)})
	}
	return h, nil
}

// localZone is this host's zone by name, which the agent (on the same host)
// and a reader of the schedule understand alike; UTC when it has none.
func localZone() string {
	if tz := os.Getenv("TZ"); tz != "" {
		return strings.TrimPrefix(tz, ":")
	}
	if b, err := os.ReadFile("/etc/timezone"); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	if target, err := filepath.EvalSymlinks("/etc/localtime"); err == nil {
		if _, zone, ok := strings.Cut(target, "zoneinfo/"); ok {
			return zone
		}
	}
	return policy.DefaultZone
}

func scheduleTarget(s policy.Schedule) string {
	if s.VM != "" {
		return "vm " + s.VM
	}
	var kv []string
	for k, v := range s.Labels {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	target := strings.Join(kv, ",")
	if s.Fraction > 0 && s.Fraction < 1 {
		target = strconv.FormatFloat(s.Fraction, 'g', -1, 64) + " of " + target
	}
	return target
}

func describeHolidays(h *policy.Holidays) string {
	if h == nil {
		return "-"
	}
	var parts []string
	if h.Calendar != "" {
		parts = append(parts, h.Calendar)
	}
	if n := len(h.Dates); n > 0 {
		parts = append(parts, fmt.Sprintf("+%d dates", n))
	}
	return strings.Join(parts, " ")
}

func newScheduleListCommand(c *cli, af *agentFlags) *cobra.Command {
	var js jsonFlag
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the schedules",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			scheds, err := af.client().Schedules(cmd.Context())
			if err != nil {
				return err
			}
			if js.on {
				return writeJSON(c.stdout, scheds)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tACTION\tTARGET\tAT\tDAYS\tTZ\tHOLIDAYS")
			for _, s := range scheds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Action, scheduleTarget(s), s.At, s.Days, s.TZ, describeHolidays(s.Holidays))
			}
			return tw.Flush()
		},
	}
	js.register(cmd)
	return cmd
}

func newScheduleRemoveCommand(c *cli, af *agentFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove schedules",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				if err := af.client().DeleteSchedule(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "removed schedule %s\n", id)
			}
			return nil
		},
	}
}

func newScheduleNextCommand(c *cli, af *agentFlags) *cobra.Command {
	var js jsonFlag
	var count int
	cmd := &cobra.Command{
		Use:   "next",
		Short: "The next occurrences of every schedule, the VMs they touch, and the holidays that change them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			next, err := af.client().NextSchedules(cmd.Context(), count)
			if err != nil {
				return err
			}
			if js.on {
				return writeJSON(c.stdout, next)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSCHEDULE\tACTION\tVMS\tNOTE")
			for _, o := range next {
				vms := strings.Join(o.VMs, ",")
				if vms == "" {
					vms = "(none)"
				}
				note := ""
				switch {
				case o.Skipped:
					note = "skipped: " + o.Holiday
				case o.Holiday != "":
					note = "holiday: " + o.Holiday
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Time.Format("Mon 2006-01-02 15:04 MST"), o.Schedule, o.Action, vms, note)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&count, "count", 3, "occurrences per schedule (1 to 100)")
	js.register(cmd)
	return cmd
}
