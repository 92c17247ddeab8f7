package virtio

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// oddMemory is fakeMemory whose guest address testBase sits shift bytes
// past a 4-aligned host address (as a vhost-user region with an odd mmap
// offset would map it) and which ends trim bytes early.
func oddMemory(shift, trim int) *fakeMemory {
	buf := make([]byte, testMemSize+4)
	return &fakeMemory{base: testBase, buf: buf[shift : shift+testMemSize-trim]}
}

func TestNewQueueAlignment(t *testing.T) {
	const size = 8
	n := uint64(size)
	good := QueueConfig{Size: size, DescAddr: testDesc, AvailAddr: testAvail, UsedAddr: testUsed}
	tests := []struct {
		name   string
		shift  int // host misalignment of guest memory
		trim   int // bytes taken off the end of guest memory
		mutate func(*QueueConfig)
		ok     bool
	}{
		{"aligned", 0, 0, func(*QueueConfig) {}, true},
		{"available ring 2-aligned", 0, 0, func(c *QueueConfig) { c.AvailAddr += 2 }, true},
		// Aligned as the spec says, a ring that fits in memory with 4-aligned
		// bounds has its shared words in it too.
		{"available ring at the end of memory", 0, 0, func(c *QueueConfig) { c.AvailAddr = testMemLimit - (6 + 2*n) - 2 }, true},
		{"2-aligned available ring at the end of memory", 0, 0, func(c *QueueConfig) { c.AvailAddr = testMemLimit - (6 + 2*n) }, true},
		{"used ring at the end of memory", 0, 0, func(c *QueueConfig) { c.UsedAddr = testMemLimit - (6 + 8*n) - 2 }, true},
		{"2-aligned available ring at the start of memory", 0, 0, func(c *QueueConfig) { c.AvailAddr = testBase + 2; c.DescAddr = testData }, true},
		{"descriptor table 8-aligned", 0, 0, func(c *QueueConfig) { c.DescAddr += 8 }, false},
		{"descriptor table odd", 0, 0, func(c *QueueConfig) { c.DescAddr++ }, false},
		{"available ring odd", 0, 0, func(c *QueueConfig) { c.AvailAddr++ }, false},
		{"available ring 2-aligned, odd", 0, 0, func(c *QueueConfig) { c.AvailAddr += 3 }, false},
		{"used ring 2-aligned", 0, 0, func(c *QueueConfig) { c.UsedAddr += 2 }, false},
		{"used ring odd", 0, 0, func(c *QueueConfig) { c.UsedAddr++ }, false},
		{"used ring at the top of the address space", 0, 0, func(c *QueueConfig) { c.UsedAddr = ^uint64(0) &^ 3 }, false},
		{"available ring at the top of the address space", 0, 0, func(c *QueueConfig) { c.AvailAddr = ^uint64(0) &^ 1 }, false},
		// Memory ending 2 bytes past a word boundary: the used ring fits,
		// but its last shared word does not, and the device would touch
		// memory outside guest RAM.
		{"used ring's last word past memory", 0, 2, func(c *QueueConfig) { c.UsedAddr = testMemLimit - 2 - (6 + 8*n) }, false},
		{"used ring fits a memory with an odd end", 0, 2, func(c *QueueConfig) { c.UsedAddr = testMemLimit - 4 - (6 + 8*n) - 2 }, true},
		{"host mapping shifted by 1", 1, 0, func(*QueueConfig) {}, false},
		{"host mapping shifted by 2", 2, 0, func(*QueueConfig) {}, false},
		{"host mapping shifted by 3", 3, 0, func(*QueueConfig) {}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			q, err := NewQueue(oddMemory(tt.shift, tt.trim), cfg, allRingFeatures, 0)
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, uint16(size), q.Size())
				return
			}
			require.ErrorIs(t, err, ErrBadRing)
			assert.Nil(t, q)
		})
	}
}

// TestSharedFieldsKeepNeighbours runs a ring whose shared words reach past
// the ring (a 2-aligned available ring, avail_event and used_event at the
// ends) and checks that each field reads and writes right while the
// driver's bytes beside it stay as they were.
func TestSharedFieldsKeepNeighbours(t *testing.T) {
	const size = 8
	tests := []struct {
		name     string
		availOff uint64
		features uint64
	}{
		{"4-aligned available ring, event index", 0, FeatureRingEventIdx},
		{"2-aligned available ring, event index", 2, FeatureRingEventIdx},
		{"4-aligned available ring, flags", 0, 0},
		{"2-aligned available ring, flags", 2, 0},
	}
	const sentinel = 0xa55a
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRing(t, size)
			r.cfg.AvailAddr += tt.availOff
			n := uint64(size)
			// The driver's bytes that share a word with a ring field.
			neighbours := []uint64{
				r.cfg.AvailAddr - 2,       // before the available ring
				r.cfg.AvailAddr + 6 + 2*n, // after used_event
				r.cfg.UsedAddr + 6 + 8*n,  // after avail_event
			}
			for _, gpa := range neighbours {
				binary.LittleEndian.PutUint16(r.at(gpa), sentinel)
			}
			r.setAvailFlags(availFNoIRQ)
			q := r.queue(tt.features)
			r.desc(0, testData, 4, 0, 0)
			r.desc(1, testData, 4, 0, 0)
			r.push(0)
			r.push(1)

			assert.True(t, q.HasAvailable())
			for head := range uint16(2) {
				c, err := q.Next()
				require.NoError(t, err)
				require.Equal(t, head, c.Head)
				require.NoError(t, q.Complete(c, 0))
			}
			assert.False(t, q.HasAvailable())
			assert.Equal(t, uint16(2), r.usedIdx())
			r.setUsedEvent(5)
			if tt.features&FeatureRingEventIdx != 0 {
				assert.True(t, q.NeedsInterrupt(), "the first decision interrupts")
				q.SetNotify(true)
				assert.Equal(t, uint16(2), r.availEvent())
			} else {
				assert.False(t, q.NeedsInterrupt(), "NO_INTERRUPT is read")
				q.SetNotify(false)
				assert.Equal(t, uint16(usedFNoKick), r.usedFlags())
				q.SetNotify(true)
				assert.Equal(t, uint16(0), r.usedFlags())
				assert.Equal(t, uint16(2), r.usedIdx(), "flags are stored with the index")
			}
			for _, gpa := range neighbours {
				assert.Equal(t, uint16(sentinel), binary.LittleEndian.Uint16(r.at(gpa)), "driver bytes at %#x", gpa)
			}
		})
	}
}

// TestUsedFlagsSurviveRestart: a queue made again on the same ring picks up
// the used flags the previous one left with the used index.
func TestUsedFlagsSurviveRestart(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(FeatureVersion1)
	q.SetNotify(false)
	r.desc(0, testData, 4, 0, 0)
	r.push(0)
	c, err := q.Next()
	require.NoError(t, err)
	require.NoError(t, q.Complete(c, 0))

	q2, err := NewQueue(r.mem, r.cfg, FeatureVersion1, q.NextAvail())
	require.NoError(t, err)
	r.push(0)
	c, err = q2.Next()
	require.NoError(t, err)
	require.NoError(t, q2.Complete(c, 0))
	assert.Equal(t, uint16(2), r.usedIdx())
	assert.Equal(t, uint16(usedFNoKick), r.usedFlags())
}
