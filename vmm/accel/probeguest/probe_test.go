package probeguest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name   string
		codes  []byte
		passed bool
		reason string
	}{
		{"nothing", nil, false, "the probe guest wrote no step code (it never ran)"},
		{"all", []byte{1, 2, 3, 4, 5, 6, 0xff}, true,
			"all probe steps passed (cpuid, xsave/xrstor, int3 through the IDT, popcnt, cmpxchg16b, the APIC timer interrupt)"},
		{"no xsave on this cpu", []byte{1, 3, 4, 5, 6, 0xff}, true,
			"all probe steps passed (cpuid, int3 through the IDT, popcnt, cmpxchg16b, the APIC timer interrupt)"},
		{"emulation failure at xrstor", []byte{1, 2}, false, "stopped at xsave/xrstor"},
		{"undefined opcode at popcnt", []byte{1, 2, 3, 4, 0x86}, false, "exception #UD (vector 6) at popcnt"},
		{"timer never fired", []byte{1, 2, 3, 4, 5, 6, 0xfc}, false, "APIC timer never fired at the APIC timer interrupt"},
		{"wrong cmpxchg16b", []byte{1, 2, 3, 4, 5, 0xfd}, false, "wrong result at cmpxchg16b"},
		{"exception before any step", []byte{0x8d}, false, "exception #GP (vector 13) before any step"},
		{"unknown", []byte{1, 0x42}, false, "unknown probe code 0x42 at cpuid"},
		{"page fault", []byte{1, 3, 0x8e}, false, "exception #PF (vector 14) at int3 through the IDT"},
		{"control protection", []byte{1, 0x95}, false, "exception #CP (vector 21) at cpuid"},
		{"reserved 15", []byte{1, 0x8f}, false, "exception vector 15 at cpuid"},
		{"reserved vector", []byte{1, 0x9f}, false, "exception vector 31 at cpuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			passed, reason := Summarize(tt.codes)
			assert.Equal(t, tt.passed, passed)
			assert.Equal(t, tt.reason, reason)
		})
	}
}

func TestStepsTableIsUnique(t *testing.T) {
	seenStep := map[Step]bool{}
	seenMacro := map[string]bool{}
	for _, m := range Macros() {
		assert.False(t, seenStep[m.Step], "step %#x twice", uint8(m.Step))
		assert.False(t, seenMacro[m.Name], "macro %s twice", m.Name)
		seenStep[m.Step], seenMacro[m.Name] = true, true
	}
}
