// Package probeguest names the codes that wisp's KVM usability probe guest
// (test/guests/src/probe.S, built as "probe.elf") writes to the marker port,
// and turns the codes a run produced into a verdict and a reason.
//
// It is a package of its own, apart from test/guests, so that the VMM's
// accelerator probe can import it without importing package testing.
//
// The guest writes a step's code before it tries the step. So if the VMM
// sees an emulation failure (or any other abnormal exit), the last code it
// saw names the step that could not run. After the last step the guest
// writes AllPassed and powers off. Failures the guest detects itself are
// written as their own codes (Exception|vector, WrongResult, TimerTimeout)
// just before it powers off.
package probeguest

import (
	"fmt"
	"strings"
)

// Step is one byte the probe guest writes to the marker port.
type Step uint8

// The steps, in the order the guest runs them. Steps whose CPUID feature
// bit is clear are not tried, and not written.
const (
	CPUID      Step = 0x01 // cpuid leaf 1
	XSAVE      Step = 0x02 // CR4.OSXSAVE, xgetbv, xsetbv, xsave, xrstor (if CPUID.1:ECX.XSAVE)
	Int3       Step = 0x03 // int3 through an IDT, handler returns with iretq
	POPCNT     Step = 0x04 // popcnt (if CPUID.1:ECX.POPCNT)
	CMPXCHG16B Step = 0x05 // lock cmpxchg16b (if CPUID.1:ECX.CX16)
	APICTimer  Step = 0x06 // one xAPIC timer interrupt, polled for with IF=1, then EOI

	// Exception is ORed with the vector of a CPU exception the guest took
	// during the step written before it (0x80..0x9f).
	Exception    Step = 0x80
	TimerTimeout Step = 0xfc // the APIC timer never fired within the guest's polling bound
	WrongResult  Step = 0xfd // an instruction ran but computed the wrong value
	AllPassed    Step = 0xff // every step ran; the guest powers off next
)

// TimerVector is the interrupt vector of the probe's APIC timer.
const TimerVector = 0x40

// Timer tuning, passed to the assembler: the initial count (divide by 1)
// and how many polling iterations the guest waits for the interrupt.
const (
	TimerCount = 0x1000
	TimerSpins = 0x1000000
)

// Macro pairs a code with the C macro the guest source uses for it.
type Macro struct {
	Step Step
	Name string
}

// Macros lists every code with its C macro. The Go package that builds the
// guest passes them as -D flags, so the constants above are the one
// definition of the numbers.
func Macros() []Macro {
	return []Macro{
		{CPUID, "PROBE_CPUID"},
		{XSAVE, "PROBE_XSAVE"},
		{Int3, "PROBE_INT3"},
		{POPCNT, "PROBE_POPCNT"},
		{CMPXCHG16B, "PROBE_CMPXCHG16B"},
		{APICTimer, "PROBE_APIC_TIMER"},
		{Exception, "PROBE_EXCEPTION_BASE"},
		{TimerTimeout, "PROBE_TIMER_TIMEOUT"},
		{WrongResult, "PROBE_WRONG_RESULT"},
		{AllPassed, "PROBE_ALL_PASSED"},
	}
}

// exceptionMnemonics holds the mnemonic of vector v at [3v, 3v+3); blank
// for reserved vectors.
const exceptionMnemonics = "#DE#DBNMI#BP#OF#BR#UD#NM#DF   #TS#NP#SS#GP#PF   #MF#AC#MC#XM#VE#CP"

// String names the step as a reason string can use it.
func (s Step) String() string {
	switch s {
	case CPUID:
		return "cpuid"
	case XSAVE:
		return "xsave/xrstor"
	case Int3:
		return "int3 through the IDT"
	case POPCNT:
		return "popcnt"
	case CMPXCHG16B:
		return "cmpxchg16b"
	case APICTimer:
		return "the APIC timer interrupt"
	case TimerTimeout:
		return "APIC timer never fired"
	case WrongResult:
		return "wrong result"
	case AllPassed:
		return "all passed"
	}
	if s&0xe0 == Exception {
		v := uint8(s &^ Exception)
		if end := 3*int(v) + 3; end <= len(exceptionMnemonics) {
			if n := strings.TrimSpace(exceptionMnemonics[end-3 : end]); n != "" {
				return fmt.Sprintf("exception %s (vector %d)", n, v)
			}
		}
		return fmt.Sprintf("exception vector %d", v)
	}
	return fmt.Sprintf("unknown probe code %#02x", uint8(s))
}

// IsStep reports whether s is one of the steps the guest tries (as opposed
// to a result code).
func (s Step) IsStep() bool { return s >= CPUID && s <= APICTimer }

// Summarize reads the codes the probe guest wrote, in order, and says
// whether it passed and, if not, why, naming the step that failed. The
// caller adds what the VMM saw (an emulation failure, a shutdown, a
// timeout): Summarize only knows the codes.
func Summarize(codes []byte) (passed bool, reason string) {
	if len(codes) == 0 {
		return false, "the probe guest wrote no step code (it never ran)"
	}
	last := Step(codes[len(codes)-1])
	var step Step // the last step started
	for _, c := range codes {
		if Step(c).IsStep() {
			step = Step(c)
		}
	}
	switch {
	case last == AllPassed:
		return true, "all probe steps passed (" + stepList(codes) + ")"
	case last.IsStep():
		return false, "stopped at " + last.String()
	case step == 0:
		return false, last.String() + " before any step"
	default:
		return false, last.String() + " at " + step.String()
	}
}

func stepList(codes []byte) string {
	var names []string
	for _, c := range codes {
		if Step(c).IsStep() {
			names = append(names, Step(c).String())
		}
	}
	return strings.Join(names, ", ")
}
