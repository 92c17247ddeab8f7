package kvm

import (
	"fmt"
	"slices"
)

// CPUIDEntry is struct kvm_cpuid_entry2: what CPUID returns for one
// function (leaf, EAX input) and index (subleaf, ECX input).
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32 // CPUIDFlag*
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDFlagSignificantIndex marks an entry whose Index matters
// (KVM_CPUID_FLAG_SIGNIFCANT_INDEX, sic); without it the entry answers
// every subleaf of its function.
const CPUIDFlagSignificantIndex = 1 << 0

// CPUIDRegister names one of the four output registers of CPUID.
type CPUIDRegister int

// CPUID output registers.
const (
	EAX CPUIDRegister = iota
	EBX
	ECX
	EDX
)

func (r CPUIDRegister) String() string {
	switch r {
	case EAX:
		return "EAX"
	case EBX:
		return "EBX"
	case ECX:
		return "ECX"
	case EDX:
		return "EDX"
	}
	return fmt.Sprintf("CPUIDRegister(%d)", int(r))
}

// reg points at the entry's field for r, or is nil for an invalid r.
func (e *CPUIDEntry) reg(r CPUIDRegister) *uint32 {
	switch r {
	case EAX:
		return &e.EAX
	case EBX:
		return &e.EBX
	case ECX:
		return &e.ECX
	case EDX:
		return &e.EDX
	}
	return nil
}

// Register returns the value of output register r (0 for an invalid r).
func (e *CPUIDEntry) Register(r CPUIDRegister) uint32 {
	if p := e.reg(r); p != nil {
		return *p
	}
	return 0
}

// Matches reports whether the entry answers CPUID(function, index): the
// function must be equal, and the index too if the entry says it matters.
func (e *CPUIDEntry) Matches(function, index uint32) bool {
	if e.Function != function {
		return false
	}
	return e.Flags&CPUIDFlagSignificantIndex == 0 || e.Index == index
}

// CPUID is a list of CPUID entries, as KVM_GET_SUPPORTED_CPUID returns and
// KVM_SET_CPUID2 takes. The methods edit it in place; they hold no policy
// about which features a guest should see.
type CPUID struct {
	Entries []CPUIDEntry
}

// Clone returns a deep copy, so one supported list can seed several vCPUs.
func (c *CPUID) Clone() *CPUID {
	return &CPUID{Entries: slices.Clone(c.Entries)}
}

// Find returns the entry that answers CPUID(function, index). The pointer
// stays valid until entries are added or removed.
func (c *CPUID) Find(function, index uint32) (*CPUIDEntry, bool) {
	for i := range c.Entries {
		if c.Entries[i].Matches(function, index) {
			return &c.Entries[i], true
		}
	}
	return nil, false
}

// Has reports whether all bits of mask are set in register reg of
// CPUID(function, index); false if there is no such entry.
func (c *CPUID) Has(function, index uint32, reg CPUIDRegister, mask uint32) bool {
	e, ok := c.Find(function, index)
	if !ok {
		return false
	}
	return e.Register(reg)&mask == mask
}

// SetBits sets the bits of mask in register reg of CPUID(function, index).
func (c *CPUID) SetBits(function, index uint32, reg CPUIDRegister, mask uint32) error {
	return c.update(function, index, reg, func(v uint32) uint32 { return v | mask })
}

// ClearBits clears the bits of mask in register reg of CPUID(function, index).
func (c *CPUID) ClearBits(function, index uint32, reg CPUIDRegister, mask uint32) error {
	return c.update(function, index, reg, func(v uint32) uint32 { return v &^ mask })
}

// SetRegister replaces register reg of CPUID(function, index) with value.
func (c *CPUID) SetRegister(function, index uint32, reg CPUIDRegister, value uint32) error {
	return c.update(function, index, reg, func(uint32) uint32 { return value })
}

func (c *CPUID) update(function, index uint32, reg CPUIDRegister, f func(uint32) uint32) error {
	e, ok := c.Find(function, index)
	if !ok {
		return fmt.Errorf("CPUID function %#x index %#x: %w", function, index, ErrNotFound)
	}
	p := e.reg(reg)
	if p == nil {
		return fmt.Errorf("CPUID function %#x index %#x register %v: %w", function, index, reg, ErrInvalidArgument)
	}
	*p = f(*p)
	return nil
}

// Set replaces the entry with the same function (and index, when either
// entry's index is significant) or appends e if there is none.
func (c *CPUID) Set(e CPUIDEntry) {
	for i := range c.Entries {
		old := &c.Entries[i]
		if old.Function != e.Function {
			continue
		}
		indexed := old.Flags&CPUIDFlagSignificantIndex != 0 || e.Flags&CPUIDFlagSignificantIndex != 0
		if !indexed || old.Index == e.Index {
			*old = e
			return
		}
	}
	c.Entries = append(c.Entries, e)
}

// Filter keeps the entries for which keep returns true, in order. keep gets
// a pointer and may modify the entry it keeps.
func (c *CPUID) Filter(keep func(e *CPUIDEntry) bool) {
	out := c.Entries[:0]
	for i := range c.Entries {
		e := c.Entries[i]
		if keep(&e) {
			out = append(out, e)
		}
	}
	clear(c.Entries[len(out):])
	c.Entries = out
}

// Remove drops every entry for function (all indices). It returns how many
// entries it removed.
func (c *CPUID) Remove(function uint32) int {
	n := len(c.Entries)
	c.Filter(func(e *CPUIDEntry) bool { return e.Function != function })
	return n - len(c.Entries)
}
