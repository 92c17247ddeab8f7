package kvm

import "fmt"

// Cap is a KVM capability number for KVM_CHECK_EXTENSION. Only the ones
// wisp asks about are named; any other number from <linux/kvm.h> works too.
type Cap uint32

// Capabilities (KVM_CAP_*).
const (
	CapIRQChip            Cap = 0   // in-kernel PIC/IOAPIC/LAPIC
	CapHLT                Cap = 1   // HLT exits to user space without an irqchip
	CapUserMemory         Cap = 3   // KVM_SET_USER_MEMORY_REGION
	CapSetTSSAddr         Cap = 4   // KVM_SET_TSS_ADDR
	CapExtCPUID           Cap = 7   // KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2
	CapNrVCPUs            Cap = 9   // recommended max vCPUs per VM
	CapNrMemslots         Cap = 10  // max memory slots per VM
	CapSyncMMU            Cap = 16  // host mapping changes reach the guest
	CapIRQRouting         Cap = 25  // KVM_SET_GSI_ROUTING
	CapIRQFD              Cap = 32  // KVM_IRQFD
	CapPIT2               Cap = 33  // KVM_CREATE_PIT2
	CapIOEventFD          Cap = 36  // KVM_IOEVENTFD
	CapSetIdentityMapAddr Cap = 37  // KVM_SET_IDENTITY_MAP_ADDR
	CapXSave              Cap = 55  // KVM_GET/SET_XSAVE
	CapMaxVCPUs           Cap = 66  // hard max vCPUs per VM
	CapTSCDeadlineTimer   Cap = 72  // LAPIC TSC-deadline mode
	CapSignalMSI          Cap = 77  // KVM_SIGNAL_MSI
	CapReadonlyMem        Cap = 81  // KVM_MEM_READONLY slots
	CapSplitIRQChip       Cap = 121 // LAPIC in kernel, IOAPIC/PIC in user space
	CapIOEventFDAnyLength Cap = 122 // ioeventfd with length 0
	CapMaxVCPUID          Cap = 128 // largest vCPU id + 1
	CapX2APICAPI          Cap = 129 // 32-bit APIC ids in routes and MSIs
	CapImmediateExit      Cap = 136 // kvm_run.immediate_exit
)

func (c Cap) String() string {
	switch c {
	case CapIRQChip:
		return "KVM_CAP_IRQCHIP"
	case CapHLT:
		return "KVM_CAP_HLT"
	case CapUserMemory:
		return "KVM_CAP_USER_MEMORY"
	case CapSetTSSAddr:
		return "KVM_CAP_SET_TSS_ADDR"
	case CapExtCPUID:
		return "KVM_CAP_EXT_CPUID"
	case CapNrVCPUs:
		return "KVM_CAP_NR_VCPUS"
	case CapNrMemslots:
		return "KVM_CAP_NR_MEMSLOTS"
	case CapSyncMMU:
		return "KVM_CAP_SYNC_MMU"
	case CapIRQRouting:
		return "KVM_CAP_IRQ_ROUTING"
	case CapIRQFD:
		return "KVM_CAP_IRQFD"
	case CapPIT2:
		return "KVM_CAP_PIT2"
	case CapIOEventFD:
		return "KVM_CAP_IOEVENTFD"
	case CapSetIdentityMapAddr:
		return "KVM_CAP_SET_IDENTITY_MAP_ADDR"
	case CapXSave:
		return "KVM_CAP_XSAVE"
	case CapMaxVCPUs:
		return "KVM_CAP_MAX_VCPUS"
	case CapTSCDeadlineTimer:
		return "KVM_CAP_TSC_DEADLINE_TIMER"
	case CapSignalMSI:
		return "KVM_CAP_SIGNAL_MSI"
	case CapReadonlyMem:
		return "KVM_CAP_READONLY_MEM"
	case CapSplitIRQChip:
		return "KVM_CAP_SPLIT_IRQCHIP"
	case CapIOEventFDAnyLength:
		return "KVM_CAP_IOEVENTFD_ANY_LENGTH"
	case CapMaxVCPUID:
		return "KVM_CAP_MAX_VCPU_ID"
	case CapX2APICAPI:
		return "KVM_CAP_X2APIC_API"
	case CapImmediateExit:
		return "KVM_CAP_IMMEDIATE_EXIT"
	}
	return fmt.Sprintf("KVM_CAP(%d)", uint32(c))
}
