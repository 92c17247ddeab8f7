package kvmvm

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/wisp-vmm/wisp/boot/acpi"
	pcibus "github.com/wisp-vmm/wisp/devices/pci"
	"github.com/wisp-vmm/wisp/devices/virtio"
	vpci "github.com/wisp-vmm/wisp/devices/virtio/pci"
	"github.com/wisp-vmm/wisp/kvm"
)

// PCI resources: the type-1 configuration ports, ECAM and the windows BARs
// are assigned from, as wisp's DSDT and MCFG describe them.
const (
	pciConfigPort = 0xcf8
	pciConfigLen  = 8
	// pciIOStart..pciIOEnd is where I/O BARs go: inside the DSDT's I/O
	// window, clear of every legacy port wisp serves.
	pciIOStart = 0xc000
	pciIOEnd   = 0x10000
)

// GSIs from firstMSIGSI on carry MSI routes; below are the IOAPIC's pins.
const (
	firstMSIGSI = ioapicPins
	// maxGSI bounds the routing table well inside KVM's limit
	// (KVM_MAX_IRQ_ROUTES, 4096).
	maxGSI = 4096
)

// ErrNoGSI means every GSI for MSI routes is taken.
var ErrNoGSI = errors.New("no free GSI for an MSI route")

// gsiTable is the VM's GSI routing table: the PC's irqchip routes plus one
// MSI route per MSI-X vector in use. KVM only takes the whole table, so
// every change writes all of it.
type gsiTable struct {
	vm   *kvm.VM
	base []kvm.RoutingEntry

	mu   sync.Mutex
	msi  map[uint32]kvm.RoutingEntry
	free []uint32 // GSIs given back, reused first
	next uint32
}

func newGSITable(vm *kvm.VM, base []kvm.RoutingEntry) *gsiTable {
	return &gsiTable{vm: vm, base: base, msi: map[uint32]kvm.RoutingEntry{}, next: firstMSIGSI}
}

// commit writes the table to KVM. Call with mu held (or before anyone
// else can reach the table).
func (g *gsiTable) commit() error {
	routes := append([]kvm.RoutingEntry(nil), g.base...)
	gsis := make([]uint32, 0, len(g.msi))
	for gsi := range g.msi {
		gsis = append(gsis, gsi)
	}
	sort.Slice(gsis, func(i, j int) bool { return gsis[i] < gsis[j] })
	for _, gsi := range gsis {
		routes = append(routes, g.msi[gsi])
	}
	if err := g.vm.SetGSIRouting(routes); err != nil {
		return fmt.Errorf("GSI routing (%d routes): %w", len(routes), err)
	}
	return nil
}

func (g *gsiTable) allocGSI() (uint32, error) {
	if n := len(g.free); n > 0 {
		gsi := g.free[n-1]
		g.free = g.free[:n-1]
		return gsi, nil
	}
	if g.next >= maxGSI {
		return 0, ErrNoGSI
	}
	g.next++
	return g.next - 1, nil
}

// NewMSIRoute implements pcibus.MSIRouter: an eventfd bound by an irqfd
// to a fresh GSI whose route is msg, so raising the interrupt is one
// eventfd write and KVM injects it without a trip through wisp.
func (g *gsiTable) NewMSIRoute(msg pcibus.MSIMessage) (_ pcibus.MSIRoute, err error) {
	efd, err := virtio.NewEventFD()
	if err != nil {
		return nil, fmt.Errorf("MSI route: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gsi, err := g.allocGSI()
	if err != nil {
		_ = efd.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			delete(g.msi, gsi)
			g.free = append(g.free, gsi)
			_ = efd.Close()
		}
	}()
	g.msi[gsi] = kvm.MSIRoute(gsi, msg.Address, msg.Data)
	if err := g.commit(); err != nil {
		return nil, err
	}
	if err := g.vm.IRQFD(efd.Fd(), gsi); err != nil {
		return nil, fmt.Errorf("MSI route on GSI %d: %w", gsi, err)
	}
	return &msiRoute{g: g, gsi: gsi, efd: efd}, nil
}

// msiRoute is one MSI-X vector's GSI and the irqfd that raises it.
type msiRoute struct {
	g   *gsiTable
	gsi uint32
	efd *virtio.EventFD
}

func (r *msiRoute) Update(msg pcibus.MSIMessage) error {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	r.g.msi[r.gsi] = kvm.MSIRoute(r.gsi, msg.Address, msg.Data)
	return r.g.commit()
}

func (r *msiRoute) Trigger() error { return r.efd.Signal() }

func (r *msiRoute) Close() error {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	errs := []error{r.g.vm.IRQFDDeassign(r.efd.Fd(), r.gsi)}
	delete(r.g.msi, r.gsi)
	r.g.free = append(r.g.free, r.gsi)
	errs = append(errs, r.g.commit(), r.efd.Close())
	return errors.Join(errs...)
}

// ioeventfds registers queue notification addresses with KVM, so a
// guest's notify signals the kick eventfd without an exit.
type ioeventfds struct {
	vm *kvm.VM
	// length is 0 (any access width) where KVM supports it, else the 2
	// bytes a virtio driver writes; other widths then exit to WriteBAR.
	length uint32
}

func (r ioeventfds) RegisterNotify(addr uint64, kick *virtio.EventFD) error {
	return r.vm.IOEventFD(kick.Fd(), addr, r.length, false, nil)
}

func (r ioeventfds) UnregisterNotify(addr uint64, kick *virtio.EventFD) error {
	return r.vm.IOEventFDDeassign(kick.Fd(), addr, r.length, false, nil)
}

// addPCI builds PCI bus 0 (the host bridge and one virtio-pci function per
// Options.Virtio device, in order from slot 1) and puts its configuration
// mechanisms on the buses. The bus is there even without devices: the
// ACPI tables always describe it.
func (inst *instance) addPCI() error {
	mem, err := pcibus.NewAllocator(acpi.DefaultMMIO32Start, acpi.DefaultMMIO32End)
	if err != nil {
		return err
	}
	reserved := []pcibus.Range{{Base: acpi.DefaultECAMBase, Size: acpi.ECAMSize}}
	for _, d := range inst.opts.MMIO {
		reserved = append(reserved, pcibus.Range{Base: d.Base, Size: d.Length})
	}
	for _, r := range reserved {
		if err := mem.Reserve(r.Base, r.Size); err != nil {
			return fmt.Errorf("PCI window: %w", err)
		}
	}
	ports, err := pcibus.NewAllocator(pciIOStart, pciIOEnd)
	if err != nil {
		return err
	}
	inst.pci = pcibus.NewBus(inst.pio, inst.mmio, mem, ports)
	if err := inst.pio.Insert(inst.pci.ConfigIO(), pciConfigPort, pciConfigLen); err != nil {
		return fmt.Errorf("PCI configuration ports: %w", err)
	}
	if err := inst.mmio.Insert(inst.pci.ECAM(), acpi.DefaultECAMBase, acpi.ECAMSize); err != nil {
		return fmt.Errorf("PCI ECAM: %w", err)
	}
	notify := ioeventfds{vm: inst.vm}
	if n, err := inst.vm.CheckExtension(kvm.CapIOEventFDAnyLength); err != nil || n == 0 {
		notify.length = 2
	}
	for i, dev := range inst.opts.Virtio {
		t, err := vpci.New(dev, vpci.Options{Memory: inst.mem, MSI: inst.gsi, Notify: notify})
		if err != nil {
			return fmt.Errorf("virtio device %d: %w", i, err)
		}
		inst.transports = append(inst.transports, t)
		slot, err := inst.pci.Add(t)
		if err != nil {
			return fmt.Errorf("virtio device %d (%v): %w", i, dev.Type(), err)
		}
		fmt.Fprintf(inst.opts.Log, "wisp: virtio-%v at PCI 00:%02x.0, BAR 0 at %#x\n", dev.Type(), slot, t.Config().BARAddress(vpci.BARIndex))
	}
	return nil
}

// closePCI stops the virtio devices (their goroutines write guest memory,
// which is about to go) and releases the transports' eventfds and routes.
// The devices themselves stay open for the next boot.
func (inst *instance) closePCI() error {
	var errs []error
	for _, t := range inst.transports {
		errs = append(errs, t.Close())
	}
	if inst.pci != nil {
		errs = append(errs, inst.pci.Close())
	}
	return errors.Join(errs...)
}
