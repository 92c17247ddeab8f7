package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/cost"
	"github.com/wisp-vmm/wisp/vmm"
)

// barWidth is how many characters the dearest day's bar takes.
const barWidth = 40

func newCostCommand(c *cli) *cobra.Command {
	var (
		af            agentFlags
		q             agent.CostQuery
		forecast      bool
		asJSON, asCSV bool
		svgPath       string
	)
	cmd := &cobra.Command{
		Use:   "cost",
		Short: "What every VM costs this month (or --month), per resource and per day; --forecast with what-ifs",
		Example: `  wisp cost                                   # this month so far, per VM, with a chart of each day
  wisp cost --month 2026-04 --vm web1 --csv
  wisp cost --forecast --what-if off-nights=8h --what-if off-weekends --what-if off-holidays=DE
  wisp cost --forecast --what-if half-off-nights=12h -o april.svg
  wisp cost prices --set cpu_ghz_hour=0.12 --set only_running=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON && asCSV {
				return vmm.Invalidf("give one of --json and --csv")
			}
			if len(q.WhatIfs) > 0 && !forecast {
				return vmm.Invalidf("--what-if is for --forecast: the month's cost is what happened")
			}
			if !cmd.Flags().Changed("tz") {
				q.TZ = localZone()
			}
			cl := af.client()
			var (
				out   any
				chart cost.Report
				write func(w io.Writer) error
			)
			if forecast {
				f, err := cl.CostForecast(cmd.Context(), q)
				if err != nil {
					return err
				}
				out, chart = f, f.Baseline
				if f.WhatIf != nil {
					chart = *f.WhatIf
				}
				write = func(w io.Writer) error { return printForecast(w, f, asCSV) }
			} else {
				r, err := cl.Cost(cmd.Context(), q)
				if err != nil {
					return err
				}
				out, chart = r, r
				write = func(w io.Writer) error {
					if asCSV {
						return costCSV(w, "", r, true)
					}
					return printCost(w, "", r)
				}
			}
			if svgPath != "" {
				if err := writeSVG(svgPath, chart); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			return write(c.stdout)
		},
	}
	af.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&q.Month, "month", "", "the month, YYYY-MM (default: this month)")
	fl.StringVar(&q.VM, "vm", "", "one VM only")
	fl.StringVar(&q.TZ, "tz", "", "the zone months and days are in (default: this host's)")
	fl.BoolVar(&forecast, "forecast", false, "the whole month with the VMs as they are (each wanted running is on all month)")
	fl.StringArrayVar(&q.WhatIfs, "what-if", nil, "with --forecast, a change to try (repeatable): off-nights=8h, half-off-nights=12h, off-weekends, off-days=2026-12-24,2026-12-31, off-holidays=DE")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	fl.BoolVar(&asCSV, "csv", false, "print CSV")
	fl.StringVarP(&svgPath, "output", "o", "", "also write the cost of each day as an SVG bar chart to FILE.svg")
	cmd.AddCommand(newCostPricesCommand(c, &af))
	return cmd
}

func newCostPricesCommand(c *cli, af *agentFlags) *cobra.Command {
	var (
		set    []string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "prices [--set KEY=VALUE...]",
		Short: "Show or change the price table (the default: $0.25 an hour for 1 vCPU, 1 GiB, 1000 GB of disk, 100 GB of traffic a month)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl := af.client()
			p, err := cl.Prices(cmd.Context())
			if err != nil {
				return err
			}
			if len(set) > 0 {
				fields := map[string]string{}
				for _, kv := range set {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return vmm.Invalidf("--set %q: give KEY=VALUE, e.g. cpu_ghz_hour=0.10 (keys: %s)", kv, strings.Join(cost.Keys(), ", "))
					}
					fields[k] = v
				}
				if p, err = cl.UpdatePrices(cmd.Context(), p, fields); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			for _, row := range p.Rows() {
				fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
			}
			fmt.Fprintf(tw, "unit (1 vCPU, 1 GiB, 1000 GB disk, port)\t%s an hour\n", cost.Money(p.UnitHour()))
			return tw.Flush()
		},
	}
	cmd.Flags().StringArrayVar(&set, "set", nil, "KEY=VALUE: change a price (repeatable), e.g. cpu_ghz_hour=0.10, only_running=false")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printCost writes the month's table per VM, its total, and a bar of
// each day's cost.
func printCost(w io.Writer, title string, r cost.Report) error {
	if title == "" {
		title = "cost of " + r.Month
	}
	fmt.Fprintf(w, "%s (%s), metered to %s\n", title, r.Zone, r.Until.In(r.Start.Location()).Format("2006-01-02 15:04"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "VM\tHOURS\tCPU\tMEMORY\tDISK\tTRAFFIC\tTOTAL\t")
	for _, v := range r.VMs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", v.VM, cost.Hours(v.RunningHours), cost.Money(v.CPU), cost.Money(v.Memory),
			cost.Money(v.Disk), cost.Money(v.Traffic), cost.Money(v.Total))
	}
	fmt.Fprintf(tw, "total\t\t\t\t\t\t%s\t\n", cost.Money(r.Total))
	if len(r.VMs) > 1 {
		fmt.Fprintf(tw, "average per VM\t\t\t\t\t\t%s\t\n", cost.Money(r.Average))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return cost.Bars(w, r.Days, barWidth)
}

func printForecast(w io.Writer, f cost.Forecast, asCSV bool) error {
	if asCSV {
		if err := costCSV(w, "as they are", f.Baseline, true); err != nil {
			return err
		}
		if f.WhatIf != nil {
			return costCSV(w, strings.Join(f.WhatIfs, " "), *f.WhatIf, false)
		}
		return nil
	}
	if f.WhatIf == nil {
		return printCost(w, "forecast of "+f.Baseline.Month+", VMs as they are", f.Baseline)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "forecast of %s (%s)\n", f.Baseline.Month, f.Baseline.Zone)
	fmt.Fprintln(tw, "VM\tAS THEY ARE\tWHAT IF\tSAVING\t")
	for i, v := range f.Baseline.VMs {
		wi := f.WhatIf.VMs[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", v.VM, cost.Money(v.Total), cost.Money(wi.Total), cost.Money(v.Total.Sub(wi.Total)))
	}
	fmt.Fprintf(tw, "total\t%s\t%s\t%s\t\n", cost.Money(f.Baseline.Total), cost.Money(f.WhatIf.Total), cost.Money(*f.Saving))
	fmt.Fprintf(tw, "average per VM\t%s\t%s\t\t\n", cost.Money(f.Baseline.Average), cost.Money(f.WhatIf.Average))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "what if: %s\n\n", strings.Join(f.WhatIfs, ", "))
	return cost.Bars(w, f.WhatIf.Days, barWidth)
}

// costCSV writes one row per VM and a total row; scenario, when given,
// is a first column (forecasts).
func costCSV(w io.Writer, scenario string, r cost.Report, header bool) error {
	cw := csv.NewWriter(w)
	row := func(cols ...string) {
		if scenario != "" {
			cols = append([]string{scenario}, cols...)
		}
		_ = cw.Write(cols)
	}
	if header {
		cols := []string{"month", "vm", "running_hours", "cpu", "memory", "disk", "traffic", "total"}
		if scenario != "" {
			cols = append([]string{"scenario"}, cols...)
		}
		_ = cw.Write(cols)
	}
	for _, v := range r.VMs {
		row(r.Month, v.VM, v.RunningHours.String(), v.CPU.StringFixed(2), v.Memory.StringFixed(2), v.Disk.StringFixed(2),
			v.Traffic.StringFixed(2), v.Total.StringFixed(2))
	}
	row(r.Month, "total", "", "", "", "", "", r.Total.StringFixed(2))
	cw.Flush()
	return cw.Error()
}

func writeSVG(path string, r cost.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := cost.SVG(f, r); err != nil {
		f.Close()
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}
