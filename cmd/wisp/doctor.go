package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/machine"
)

func newDoctorCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Say which accelerator wisp would use here, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev := os.Getenv("WISP_KVM_DEVICE")
			if dev == "" {
				dev = vmm.DefaultKVM
			}
			r := machine.Probe(cmd.Context(), dev)
			for _, f := range r.Findings {
				fmt.Fprintf(c.stdout, "  %s\n", f)
			}
			if r.KVM {
				fmt.Fprintf(c.stdout, "accelerator: kvm (probe took %v)\n", r.Took.Round(1e6))
				return nil
			}
			fmt.Fprintf(c.stdout, "accelerator: tcg (QEMU), because %s (probe took %v)\n", r.Reason, r.Took.Round(1e6))
			return nil
		},
	}
}
