package machine_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/machine"
)

// Two VMs in one program: both boot the default guest (Debian's cloud
// kernel and wisp's initramfs, fetched into the cache on first use), run
// until the program stops them with the ACPI power button, and report how
// they ended. The accelerator is pinned to TCG so the example means the
// same on every host; leave Accel empty to let wisp choose.
func Example() {
	ctx := context.Background()
	kit := &guest.Kit{}
	kernel, err := kit.DebianKernel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	initrd, err := kit.DefaultInitramfs(ctx, kernel)
	if err != nil {
		log.Fatal(err)
	}
	// The guest's init runs this until the power button ends it.
	wait, err := initproto.EncodeCmd([]string{"sleep", "3600"})
	if err != nil {
		log.Fatal(err)
	}

	var vms []*machine.Machine
	var ready []chan struct{}
	for _, id := range []string{"vm1", "vm2"} {
		cfg := vmm.Config{
			Kernel: kernel.Image, Initrd: initrd,
			Cmdline:     vmm.DefaultCmdline + " quiet " + wait,
			MemoryBytes: 192 << 20,
			Accel:       vmm.AccelTCG,
			Console:     vmm.ConsoleNone,
		}
		// wisp's init writes 0x7f to the boot-marker port once it
		// runs, and listens for the power button from then on.
		up := make(chan struct{})
		var once sync.Once
		m, err := machine.New(ctx, cfg, machine.Options{ID: id, OnBootMarker: func(code byte, _ time.Duration) {
			if code == 0x7f {
				once.Do(func() { close(up) })
			}
		}})
		if err != nil {
			log.Fatal(err)
		}
		defer m.Close()
		if err := m.Start(ctx); err != nil {
			log.Fatal(err)
		}
		vms = append(vms, m)
		ready = append(ready, up)
	}
	for i, m := range vms {
		<-ready[i]
		fmt.Println(m.ID(), m.State())
	}
	for _, m := range vms {
		// The power button, and a minute for the guest to power off
		// before it is forced.
		if err := m.Stop(ctx, time.Minute); err != nil {
			log.Fatal(err)
		}
	}
	for _, m := range vms {
		st, err := m.Wait()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %s\n", m.ID(), m.State(), st.Detail)
	}
	// Output:
	// vm1 running
	// vm2 running
	// vm1 stopped: stopped by the host: ACPI power button, guest powered off
	// vm2 stopped: stopped by the host: ACPI power button, guest powered off
}
