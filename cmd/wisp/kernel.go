package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wisp-vmm/wisp/guest"
)

func newKernelCommand(c *cli) *cobra.Command {
	kernel := &cobra.Command{
		Use:   "kernel",
		Short: "Fetch or build the kernels wisp boots",
	}
	show := func(k *guest.Kernel) {
		fmt.Fprintf(c.stdout, "version: %s\nimage:   %s\n", k.Version, k.Image)
		if k.ELF != "" {
			fmt.Fprintf(c.stdout, "vmlinux: %s\n", k.ELF)
		}
		if k.ModulesDir != "" {
			fmt.Fprintf(c.stdout, "modules: %s\n", k.ModulesDir)
		}
	}
	kit := func() *guest.Kit { return &guest.Kit{CacheDir: guest.DefaultCacheDir(), Progress: c.stderr} }
	kernel.AddCommand(&cobra.Command{
		Use:   "build",
		Short: "Build the minimal microVM kernel from Debian's linux-source-6.1 (cached by its config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := kit().MinimalKernel(cmd.Context())
			if err != nil {
				return err
			}
			show(k)
			return nil
		},
	}, &cobra.Command{
		Use:   "fetch",
		Short: "Fetch Debian's cloud kernel, the default guest's (cached)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := kit().DebianKernel(cmd.Context())
			if err != nil {
				return err
			}
			show(k)
			return nil
		},
	})
	return kernel
}
