package kvm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The ABI test compiles a C program against the kernel's own
// <linux/kvm.h> (Debian package linux-libc-dev) and compares every struct
// size, field offset, kvm_run offset, constant and ioctl request number
// this package hard-codes with what gcc computes from the header.

// abiStruct pairs a Go struct with the C struct it mirrors.
type abiStruct struct {
	c      string            // C struct name without "struct "
	goType reflect.Type      // Go mirror
	rename map[string]string // Go field name -> C field name, where snake case is not it
	flex   string            // the C flexible array member, for headers
}

func abiStructs() []abiStruct {
	typ := func(v any) reflect.Type { return reflect.TypeOf(v) }
	return []abiStruct{
		{c: "kvm_regs", goType: typ(Regs{}), rename: map[string]string{"RFlags": "rflags"}},
		{c: "kvm_segment", goType: typ(Segment{})},
		{c: "kvm_dtable", goType: typ(DTable{})},
		{c: "kvm_sregs", goType: typ(Sregs{})},
		{c: "kvm_fpu", goType: typ(FPU{})},
		{c: "kvm_msr_entry", goType: typ(MSR{})},
		{c: "kvm_lapic_state", goType: typ(LAPICState{})},
		{c: "kvm_cpuid_entry2", goType: typ(CPUIDEntry{})},
		{c: "kvm_userspace_memory_region", goType: typ(kvmUserspaceMemoryRegion{})},
		{c: "kvm_irq_level", goType: typ(kvmIRQLevel{})},
		{c: "kvm_pit_config", goType: typ(kvmPITConfig{})},
		{c: "kvm_irqfd", goType: typ(kvmIRQFD{}), rename: map[string]string{"ResampleFD": "resamplefd"}},
		{c: "kvm_ioeventfd", goType: typ(kvmIOEventFD{})},
		{c: "kvm_msi", goType: typ(kvmMSI{}), rename: map[string]string{"DevID": "devid"}},
		{c: "kvm_irq_routing", goType: typ(kvmIRQRoutingHeader{}), flex: "entries"},
		{c: "kvm_irq_routing_entry", goType: typ(kvmIRQRoutingEntry{})},
		{c: "kvm_cpuid2", goType: typ(kvmCPUID2Header{}), flex: "entries"},
		{c: "kvm_msrs", goType: typ(kvmMSRsHeader{}), rename: map[string]string{"NMSRs": "nmsrs"}, flex: "entries"},
		{c: "kvm_msr_list", goType: typ(kvmMSRListHeader{}), rename: map[string]string{"NMSRs": "nmsrs"}, flex: "indices"},
		{c: "kvm_translation", goType: typ(kvmTranslation{})},
	}
}

// snake turns a Go field name into the kernel's: GuestPhysAddr ->
// guest_phys_addr, APICBase -> apic_base, CR0 -> cr0.
func snake(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) {
			prevLower := unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"GuestPhysAddr": "guest_phys_addr", "APICBase": "apic_base", "CR0": "cr0",
		"R10": "r10", "LastIP": "last_ip", "EAX": "eax", "InterruptBitmap": "interrupt_bitmap",
	} {
		assert.Equal(t, want, snake(in), in)
	}
}

// runField is one kvm_run field this package reads at a fixed offset.
type runField struct {
	c      string // member designator for offsetof(struct kvm_run, ...)
	offset int
	size   int
}

func runFields() []runField {
	return []runField{
		{"request_interrupt_window", runRequestInterruptWindow, 1},
		{"immediate_exit", runImmediateExit, 1},
		{"exit_reason", runExitReason, 4},
		{"ready_for_interrupt_injection", runReadyForInterruptInjection, 1},
		{"if_flag", runIFFlag, 1},
		{"cr8", runCR8, 8},
		{"apic_base", runAPICBase, 8},
		{"hw", runExit, 8},
		{"padding", runExit, runExitSize},
		{"io.direction", runIODirection, 1},
		{"io.size", runIOSize, 1},
		{"io.port", runIOPort, 2},
		{"io.count", runIOCount, 4},
		{"io.data_offset", runIODataOffset, 8},
		{"mmio.phys_addr", runMMIOPhysAddr, 8},
		{"mmio.data", runMMIOData, 8},
		{"mmio.len", runMMIOLen, 4},
		{"mmio.is_write", runMMIOIsWrite, 1},
		{"fail_entry.hardware_entry_failure_reason", runFailEntryReason, 8},
		{"fail_entry.cpu", runFailEntryCPU, 4},
		{"debug.arch.exception", runDebugException, 4},
		{"debug.arch.pc", runDebugPC, 8},
		{"debug.arch.dr6", runDebugDR6, 8},
		{"debug.arch.dr7", runDebugDR7, 8},
		{"internal.suberror", runInternalSuberror, 4},
		{"internal.ndata", runInternalNData, 4},
		{"internal.data", runInternalData, 8 * runInternalMaxData},
		{"emulation_failure.flags", runInternalData, 8},
		{"emulation_failure.insn_size", runInternalData + 8, 1},
		{"emulation_failure.insn_bytes", runInternalData + 9, 15},
		{"system_event.type", runSystemEventType, 4},
		{"system_event.ndata", runSystemEventNData, 4},
		{"system_event.flags", runSystemEventData, 8},
		{"system_event.data", runSystemEventData, 8 * runSystemEventMax},
	}
}

// abiConstants are the C macros this package hard-codes, with Go's value.
func abiConstants() map[string]uint64 {
	m := map[string]uint64{
		"KVM_API_VERSION":                 APIVersion,
		"KVM_EXIT_IO_IN":                  uint64(IOIn),
		"KVM_EXIT_IO_OUT":                 uint64(IOOut),
		"KVM_APIC_REG_SIZE":               LAPICRegsSize,
		"KVM_CPUID_FLAG_SIGNIFCANT_INDEX": CPUIDFlagSignificantIndex,
		"KVM_MEM_LOG_DIRTY_PAGES":         uint64(MemLogDirtyPages),
		"KVM_MEM_READONLY":                uint64(MemReadonly),
		"KVM_PIT_SPEAKER_DUMMY":           PITSpeakerDummy,
		"KVM_IRQFD_FLAG_DEASSIGN":         irqfdFlagDeassign,
		"KVM_IRQFD_FLAG_RESAMPLE":         irqfdFlagResample,
		"KVM_IOEVENTFD_FLAG_DATAMATCH":    ioeventfdFlagDatamatch,
		"KVM_IOEVENTFD_FLAG_PIO":          ioeventfdFlagPIO,
		"KVM_IOEVENTFD_FLAG_DEASSIGN":     ioeventfdFlagDeassign,
		"KVM_IRQ_ROUTING_IRQCHIP":         uint64(RoutingIRQChip),
		"KVM_IRQ_ROUTING_MSI":             uint64(RoutingMSI),
		"KVM_IRQCHIP_PIC_MASTER":          IRQChipPICMaster,
		"KVM_IRQCHIP_PIC_SLAVE":           IRQChipPICSlave,
		"KVM_IRQCHIP_IOAPIC":              IRQChipIOAPIC,

		"KVM_INTERNAL_ERROR_EMULATION":                        uint64(InternalErrorEmulation),
		"KVM_INTERNAL_ERROR_SIMUL_EX":                         uint64(InternalErrorSimultaneousEx),
		"KVM_INTERNAL_ERROR_DELIVERY_EV":                      uint64(InternalErrorDeliveryEvent),
		"KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON":           uint64(InternalErrorUnexpectedExitReason),
		"KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES": internalErrorFlagInstructionBytes,

		"KVM_SYSTEM_EVENT_SHUTDOWN": uint64(SystemEventShutdown),
		"KVM_SYSTEM_EVENT_RESET":    uint64(SystemEventReset),
		"KVM_SYSTEM_EVENT_CRASH":    uint64(SystemEventCrash),
		"KVM_SYSTEM_EVENT_WAKEUP":   uint64(SystemEventWakeup),
		"KVM_SYSTEM_EVENT_SUSPEND":  uint64(SystemEventSuspend),
		"KVM_SYSTEM_EVENT_SEV_TERM": uint64(SystemEventSEVTerm),
	}
	for _, r := range allRequests() {
		m[r.name] = uint64(r.req)
	}
	// String gives each named exit reason and capability its C name, so a
	// wrong number or a wrong name both show up here.
	for r := ExitReason(0); r < 64; r++ {
		if name := r.String(); !strings.HasPrefix(name, "ExitReason(") {
			m["KVM_EXIT_"+name] = uint64(r)
		}
	}
	for c := Cap(0); c < 300; c++ {
		if name := c.String(); !strings.HasPrefix(name, "KVM_CAP(") {
			m[name] = uint64(c)
		}
	}
	return m
}

// cProgram prints "key value" lines for everything the Go side checks.
func cProgram() string {
	var b strings.Builder
	b.WriteString(`#include <stddef.h>
#include <stdio.h>
#include <linux/kvm.h>

#define SIZE(s) printf("sizeof %s %zu\n", #s, sizeof(struct s));
#define FIELD(s, f) printf("field %s.%s %zu %zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f));
#define RUN(f) printf("run %s %zu %zu\n", #f, offsetof(struct kvm_run, f), sizeof(((struct kvm_run *)0)->f));
#define CONST(c) printf("const %s %llu\n", #c, (unsigned long long)(c));
#define MISSING(c) printf("missing %s\n", #c);

int main(void) {
	SIZE(kvm_run)
`)
	for _, s := range abiStructs() {
		fmt.Fprintf(&b, "\tSIZE(%s)\n", s.c)
		for _, f := range goFields(s) {
			fmt.Fprintf(&b, "\tFIELD(%s, %s)\n", s.c, f.c)
		}
		if s.flex != "" {
			fmt.Fprintf(&b, "\tprintf(\"flex %s %%zu\\n\", offsetof(struct %s, %s));\n", s.c, s.c, s.flex)
		}
	}
	for _, f := range runFields() {
		fmt.Fprintf(&b, "\tRUN(%s)\n", f.c)
	}
	for name := range abiConstants() {
		// #ifdef catches a name this kernel header does not know.
		fmt.Fprintf(&b, "#ifdef %s\n\tCONST(%s)\n#else\n\tMISSING(%s)\n#endif\n", name, name, name)
	}
	b.WriteString("\treturn 0;\n}\n")
	return b.String()
}

type goField struct {
	c            string
	offset, size uintptr
}

// goFields lists the non-blank fields of s's Go type with their C names.
func goFields(s abiStruct) []goField {
	var out []goField
	for i := range s.goType.NumField() {
		f := s.goType.Field(i)
		if f.Name == "_" {
			continue
		}
		c, ok := s.rename[f.Name]
		if !ok {
			c = snake(f.Name)
		}
		out = append(out, goField{c: c, offset: f.Offset, size: f.Type.Size()})
	}
	return out
}

// cFacts compiles and runs cProgram and returns its output as a map from
// "kind name" to the numbers that follow.
func cFacts(t *testing.T) map[string][]uint64 {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("SKIPPING the ABI check against <linux/kvm.h>: gcc not found (%v); install Debian package gcc", err)
	}
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Skipf("SKIPPING the ABI check: /usr/include/linux/kvm.h missing (%v); install Debian package linux-libc-dev", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "abi.c")
	bin := filepath.Join(dir, "abi")
	require.NoError(t, os.WriteFile(src, []byte(cProgram()), 0o644))
	out, err := exec.Command(gcc, "-Wall", "-o", bin, src).CombinedOutput()
	require.NoError(t, err, "gcc: %s", out)
	out, err = exec.Command(bin).Output()
	require.NoError(t, err)

	facts := map[string][]uint64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		require.GreaterOrEqual(t, len(fs), 2, "line %q", sc.Text())
		var nums []uint64
		for _, f := range fs[2:] {
			n, err := strconv.ParseUint(f, 10, 64)
			require.NoError(t, err, "line %q", sc.Text())
			nums = append(nums, n)
		}
		facts[fs[0]+" "+fs[1]] = nums
	}
	require.NoError(t, sc.Err())
	return facts
}

func TestABIMatchesKernelHeaders(t *testing.T) {
	facts := cFacts(t)
	fact := func(key string, n int) []uint64 {
		t.Helper()
		v, ok := facts[key]
		require.True(t, ok, "C program printed no %q", key)
		require.Len(t, v, n, key)
		return v
	}

	t.Run("structs", func(t *testing.T) {
		for _, s := range abiStructs() {
			assert.Equal(t, uint64(s.goType.Size()), fact("sizeof "+s.c, 1)[0], "sizeof(struct %s) vs %v", s.c, s.goType)
			for _, f := range goFields(s) {
				v := fact("field "+s.c+"."+f.c, 2)
				assert.Equal(t, uint64(f.offset), v[0], "offsetof(struct %s, %s)", s.c, f.c)
				assert.Equal(t, uint64(f.size), v[1], "sizeof(struct %s.%s)", s.c, f.c)
			}
			if s.flex != "" {
				// flexBuffer puts the entries right after the header.
				assert.Equal(t, uint64(s.goType.Size()), fact("flex "+s.c, 1)[0], "offsetof(struct %s, %s)", s.c, s.flex)
			}
		}
	})

	t.Run("kvm_run", func(t *testing.T) {
		size := fact("sizeof kvm_run", 1)[0]
		assert.LessOrEqual(t, uint64(runMinSize), size, "runMinSize must lie inside struct kvm_run")
		for _, f := range runFields() {
			v := fact("run "+f.c, 2)
			assert.Equal(t, uint64(f.offset), v[0], "offsetof(struct kvm_run, %s)", f.c)
			assert.Equal(t, uint64(f.size), v[1], "sizeof(kvm_run.%s)", f.c)
		}
	})

	t.Run("constants and ioctls", func(t *testing.T) {
		consts := abiConstants()
		require.Greater(t, len(allRequests()), 30)
		for name, want := range consts {
			_, missing := facts["missing "+name]
			if !assert.False(t, missing, "%s is not defined by this <linux/kvm.h>", name) {
				continue
			}
			assert.Equal(t, want, fact("const "+name, 1)[0], "%s", name)
		}
	})
}

func TestRequestString(t *testing.T) {
	assert.Equal(t, "KVM_CREATE_VCPU", reqCreateVCPU.String())
	assert.Equal(t, "KVM_RUN", reqRun.String())
	assert.Equal(t, "ioctl(0x1234)", request(0x1234).String())
	seen := map[request]string{}
	for _, r := range allRequests() {
		prev, dup := seen[r.req]
		assert.False(t, dup, "%s and %s share request %#x", prev, r.name, r.req)
		seen[r.req] = r.name
	}
}
