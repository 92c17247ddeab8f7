package virtio

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const allRingFeatures = FeatureVersion1 | FeatureRingIndirectDesc | FeatureRingEventIdx

func TestNewQueueRejectsBadRings(t *testing.T) {
	good := QueueConfig{Size: 256, DescAddr: testDesc, AvailAddr: testAvail, UsedAddr: testUsed}
	tests := []struct {
		name   string
		mutate func(*QueueConfig)
	}{
		{"size zero", func(c *QueueConfig) { c.Size = 0 }},
		{"size not a power of two", func(c *QueueConfig) { c.Size = 3 }},
		{"size 255", func(c *QueueConfig) { c.Size = 255 }},
		{"size above the spec's maximum", func(c *QueueConfig) { c.Size = 65535 }},
		{"descriptor table misaligned", func(c *QueueConfig) { c.DescAddr += 8 }},
		{"available ring misaligned", func(c *QueueConfig) { c.AvailAddr++ }},
		{"used ring misaligned", func(c *QueueConfig) { c.UsedAddr += 2 }},
		{"descriptor table below memory", func(c *QueueConfig) { c.DescAddr = 0 }},
		{"descriptor table across the end", func(c *QueueConfig) { c.DescAddr = testMemLimit - 0x800 }},
		{"available ring across the end", func(c *QueueConfig) { c.AvailAddr = testMemLimit - 0x100 }},
		{"used ring across the end", func(c *QueueConfig) { c.UsedAddr = testMemLimit - 0x100 }},
		{"used ring at the top of the address space", func(c *QueueConfig) { c.UsedAddr = ^uint64(0) - 3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := &fakeMemory{base: testBase, buf: make([]byte, testMemSize)}
			cfg := good
			tt.mutate(&cfg)
			q, err := NewQueue(mem, cfg, allRingFeatures, 0)
			require.ErrorIs(t, err, ErrBadRing)
			assert.Nil(t, q)
		})
	}
	t.Run("good config", func(t *testing.T) {
		mem := &fakeMemory{base: testBase, buf: make([]byte, testMemSize)}
		q, err := NewQueue(mem, good, allRingFeatures, 0)
		require.NoError(t, err)
		assert.Equal(t, uint16(256), q.Size())
	})
}

func TestDirectChain(t *testing.T) {
	r := newTestRing(t, 8)
	q := r.queue(FeatureVersion1)
	copy(r.at(testData), "header..")
	copy(r.at(testData+0x100), "payload")
	r.desc(0, testData, 8, descFNext, 5)
	r.desc(5, testData+0x100, 7, descFNext, 2)
	r.desc(2, testData+0x200, 0, descFNext|descFWrite, 3) // empty: skipped
	r.desc(3, testData+0x300, 16, descFWrite|descFNext, 7)
	r.desc(7, testData+0x400, 1, descFWrite, 0)
	r.push(0)

	require.True(t, q.HasAvailable())
	c, err := q.Next()
	require.NoError(t, err)
	require.NotNil(t, c)
	assert.Equal(t, uint16(0), c.Head)
	require.Len(t, c.Readable, 2)
	require.Len(t, c.Writable, 2)
	assert.Equal(t, uint64(15), c.ReadableLen())
	assert.Equal(t, uint64(17), c.WritableLen())

	got, err := io.ReadAll(c.Reader())
	require.NoError(t, err)
	assert.Equal(t, "header..payload", string(got))

	// The writable buffers alias guest memory.
	w := c.Writer()
	n, err := w.Write(bytes.Repeat([]byte{0xaa}, 17))
	require.NoError(t, err)
	assert.Equal(t, 17, n)
	assert.Equal(t, bytes.Repeat([]byte{0xaa}, 16), r.at(testData + 0x300)[:16])
	assert.Equal(t, byte(0xaa), r.at(testData + 0x400)[0])
	_, err = w.Write([]byte{1})
	require.ErrorIs(t, err, io.ErrShortWrite)

	require.NoError(t, q.Complete(c, 17))
	assert.Equal(t, uint16(1), r.usedIdx())
	id, ln := r.usedElem(0)
	assert.Equal(t, uint32(0), id)
	assert.Equal(t, uint32(17), ln)
	assert.Equal(t, uint16(1), q.NextAvail())

	assert.False(t, q.HasAvailable())
	c, err = q.Next()
	require.NoError(t, err)
	assert.Nil(t, c, "empty ring")
}

func TestIndirectChain(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(FeatureVersion1 | FeatureRingIndirectDesc)
	const table = testData + 0x1000
	copy(r.at(testData), "req")
	r.putDesc(table, 0, testData, 3, descFNext, 2)
	r.putDesc(table, 2, testData+0x100, 64, descFWrite|descFNext, 1)
	r.putDesc(table, 1, testData+0x200, 1, descFWrite, 0)
	// The WRITE flag of the indirect descriptor itself is ignored.
	r.desc(3, table, 3*descSize, descFIndir|descFWrite, 0)
	r.push(3)

	c, err := q.Next()
	require.NoError(t, err)
	assert.Equal(t, uint16(3), c.Head)
	require.Len(t, c.Readable, 1)
	assert.Equal(t, "req", string(c.Readable[0]))
	require.Len(t, c.Writable, 2)
	assert.Len(t, c.Writable[0], 64)
	assert.Len(t, c.Writable[1], 1)
	require.NoError(t, q.Complete(c, 65))
	id, ln := r.usedElem(0)
	assert.Equal(t, uint32(3), id)
	assert.Equal(t, uint32(65), ln)
}

// A malformed chain is refused with ErrBadChain, handed back with its head
// (so the device can return it to the driver) and leaves the queue usable.
func TestMalformedChains(t *testing.T) {
	const table = testData + 0x1000
	tests := []struct {
		name     string
		features uint64
		setup    func(r *testRing)
	}{
		{"loop of two", 0, func(r *testRing) {
			r.desc(0, testData, 1, descFNext, 1)
			r.desc(1, testData, 1, descFNext, 0)
		}},
		{"self loop", 0, func(r *testRing) { r.desc(0, testData, 1, descFNext, 0) }},
		{"self loop of empty descriptors", 0, func(r *testRing) { r.desc(0, 0, 0, descFNext, 0) }},
		{"next out of range", 0, func(r *testRing) { r.desc(0, testData, 1, descFNext, 8) }},
		{"next far out of range", 0, func(r *testRing) { r.desc(0, testData, 1, descFNext, 0xffff) }},
		{"buffer below memory", 0, func(r *testRing) { r.desc(0, 0x1000, 16, 0, 0) }},
		{"buffer across the end of memory", 0, func(r *testRing) { r.desc(0, testMemLimit-8, 16, 0, 0) }},
		{"buffer past the end of memory", 0, func(r *testRing) { r.desc(0, testMemLimit, 1, descFWrite, 0) }},
		{"buffer wrapping the address space", 0, func(r *testRing) { r.desc(0, ^uint64(0)-3, 16, 0, 0) }},
		{"buffer of 4 GiB - 1", 0, func(r *testRing) { r.desc(0, testData, ^uint32(0), 0, 0) }},
		{"readable after writable", 0, func(r *testRing) {
			r.desc(0, testData, 4, descFWrite|descFNext, 1)
			r.desc(1, testData+0x100, 4, 0, 0)
		}},
		{"indirect without the feature", FeatureVersion1, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, 0, 0)
			r.desc(0, table, descSize, descFIndir, 0)
		}},
		{"indirect with next", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, 0, 0)
			r.desc(0, table, descSize, descFIndir|descFNext, 1)
			r.desc(1, testData, 4, 0, 0)
		}},
		{"indirect after a direct descriptor", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, 0, 0)
			r.desc(0, testData, 4, descFNext, 1)
			r.desc(1, table, descSize, descFIndir, 0)
		}},
		{"nested indirect", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table+0x100, 0, testData, 4, 0, 0)
			r.putDesc(table, 0, table+0x100, descSize, descFIndir, 0)
			r.desc(0, table, descSize, descFIndir, 0)
		}},
		{"indirect table of zero bytes", FeatureRingIndirectDesc, func(r *testRing) {
			r.desc(0, table, 0, descFIndir, 0)
		}},
		{"indirect table of 8 bytes", FeatureRingIndirectDesc, func(r *testRing) {
			r.desc(0, table, 8, descFIndir, 0)
		}},
		{"indirect table of 17 bytes", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, 0, 0)
			r.desc(0, table, 17, descFIndir, 0)
		}},
		{"indirect table too long", FeatureRingIndirectDesc, func(r *testRing) {
			r.desc(0, testData, (maxIndirect+1)*descSize, descFIndir, 0)
		}},
		{"indirect table outside memory", FeatureRingIndirectDesc, func(r *testRing) {
			r.desc(0, testMemLimit-descSize, 2*descSize, descFIndir, 0)
		}},
		{"loop inside an indirect table", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, descFNext, 1)
			r.putDesc(table, 1, testData, 4, descFNext, 0)
			r.desc(0, table, 2*descSize, descFIndir, 0)
		}},
		{"next out of the indirect table", FeatureRingIndirectDesc, func(r *testRing) {
			// next 2 is inside the ring's range but not the table's.
			r.putDesc(table, 0, testData, 4, descFNext, 2)
			r.putDesc(table, 1, testData, 4, 0, 0)
			r.desc(0, table, 2*descSize, descFIndir, 0)
		}},
		{"buffer outside memory inside an indirect table", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testMemLimit, 4, 0, 0)
			r.desc(0, table, descSize, descFIndir, 0)
		}},
		{"readable after writable inside an indirect table", FeatureRingIndirectDesc, func(r *testRing) {
			r.putDesc(table, 0, testData, 4, descFWrite|descFNext, 1)
			r.putDesc(table, 1, testData, 4, 0, 0)
			r.desc(0, table, 2*descSize, descFIndir, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRing(t, 8)
			q := r.queue(tt.features)
			tt.setup(r)
			r.push(0)

			c, err := q.Next()
			require.ErrorIs(t, err, ErrBadChain)
			require.NotNil(t, c, "a bad chain is handed back so the driver gets it back")
			assert.Equal(t, uint16(0), c.Head)
			assert.Empty(t, c.Readable)
			assert.Empty(t, c.Writable)
			require.NoError(t, q.Complete(c, 0))
			assert.Equal(t, uint16(1), r.usedIdx())

			// The queue goes on serving well-formed chains.
			r.desc(4, testData, 4, 0, 0)
			r.push(4)
			c, err = q.Next()
			require.NoError(t, err)
			assert.Equal(t, uint16(4), c.Head)
		})
	}
}

// A broken ring (impossible available index or head) is an error with no
// chain: the queue cannot go on.
func TestBrokenRing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *testRing)
	}{
		{"head out of range", func(r *testRing) { r.push(8) }},
		{"head 0xffff", func(r *testRing) { r.push(0xffff) }},
		{"available index more than a ring ahead", func(r *testRing) { r.setAvailIdx(9) }},
		{"available index behind", func(r *testRing) { r.setAvailIdx(0xffff) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRing(t, 8)
			q := r.queue(allRingFeatures)
			tt.setup(r)
			c, err := q.Next()
			require.ErrorIs(t, err, ErrBadRing)
			assert.Nil(t, c)
		})
	}
}

func TestAvailableIndexExactlyARingAhead(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(0)
	for i := range 4 {
		r.desc(i, testData+uint64(i)*0x10, 4, 0, 0)
		r.push(uint16(3 - i))
	}
	for i := range 4 {
		c, err := q.Next()
		require.NoError(t, err)
		assert.Equal(t, uint16(3-i), c.Head)
	}
	c, err := q.Next()
	require.NoError(t, err)
	assert.Nil(t, c)
}

// The 16-bit free-running indices wrap: a queue resumed at 0xfffe serves
// chains across the wrap into the right ring slots.
func TestIndexWrapAround(t *testing.T) {
	r := newTestRing(t, 4)
	r.availIdx = 0xfffe
	r.setAvailIdx(0xfffe)
	r.setUsedIdx(0xfffe)
	q := r.queue(FeatureRingEventIdx)
	assert.Equal(t, uint16(0xfffe), q.NextAvail())
	for i := range 4 {
		r.desc(i, testData, 4, descFWrite, 0)
		r.push(uint16(i))
	}
	assert.Equal(t, uint16(2), r.availIdx)
	for i := range 4 {
		c, err := q.Next()
		require.NoError(t, err)
		require.NotNil(t, c)
		assert.Equal(t, uint16(i), c.Head)
		require.NoError(t, q.Complete(c, uint32(i)))
	}
	assert.Equal(t, uint16(2), q.NextAvail())
	assert.Equal(t, uint16(2), r.usedIdx())
	for i := range 4 {
		id, ln := r.usedElem(0xfffe + uint16(i))
		assert.Equal(t, uint32(i), id)
		assert.Equal(t, uint32(i), ln)
	}
	q.SetNotify(true)
	assert.Equal(t, uint16(2), r.availEvent())
}

func TestNoInterruptFlag(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(FeatureVersion1) // no event index: the flag rules
	r.desc(0, testData, 4, 0, 0)
	r.push(0)
	c, err := q.Next()
	require.NoError(t, err)
	require.NoError(t, q.Complete(c, 0))
	assert.True(t, q.NeedsInterrupt())
	r.setAvailFlags(availFNoIRQ)
	assert.False(t, q.NeedsInterrupt())
	r.setAvailFlags(0)
	assert.True(t, q.NeedsInterrupt())
}

func TestEventIndexInterrupts(t *testing.T) {
	// Each step completes some chains, sets used_event and asks.
	type step struct {
		complete  int
		usedEvent uint16
		want      bool
	}
	tests := []struct {
		name     string
		startIdx uint16
		steps    []step
	}{
		{"first decision always interrupts", 0, []step{{1, 100, true}}},
		{"used_event reached", 0, []step{{1, 0, true}, {1, 1, true}}},
		{"used_event not reached", 0, []step{{1, 0, true}, {1, 5, false}, {3, 5, false}, {1, 5, true}}},
		{"used_event passed within a batch", 0, []step{{1, 0, true}, {4, 2, true}}},
		{"used_event already behind", 0, []step{{2, 0, true}, {1, 0, false}}},
		{"NO_INTERRUPT flag is ignored", 0, []step{{1, 0, true}, {1, 1, true}}},
		{"across the 16-bit wrap", 0xfffd, []step{{1, 0, true}, {4, 0xffff, true}, {2, 0, false}, {1, 2, false}, {1, 5, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRing(t, 16)
			r.availIdx = tt.startIdx
			r.setAvailIdx(tt.startIdx)
			r.setUsedIdx(tt.startIdx)
			r.setAvailFlags(availFNoIRQ) // must not matter with the event index
			q := r.queue(FeatureRingEventIdx)
			r.desc(0, testData, 4, 0, 0)
			for i, s := range tt.steps {
				for range s.complete {
					r.push(0)
					c, err := q.Next()
					require.NoError(t, err)
					require.NoError(t, q.Complete(c, 0))
				}
				r.setUsedEvent(s.usedEvent)
				assert.Equal(t, s.want, q.NeedsInterrupt(), "step %d (used idx %d)", i, r.usedIdx())
			}
		})
	}
}

func TestSetNotify(t *testing.T) {
	t.Run("flags without event index", func(t *testing.T) {
		r := newTestRing(t, 4)
		q := r.queue(FeatureVersion1)
		q.SetNotify(false)
		assert.Equal(t, usedFNoKick, int(r.usedFlags()))
		q.SetNotify(true)
		assert.Equal(t, 0, int(r.usedFlags()))
		assert.Equal(t, uint16(0), r.availEvent(), "avail_event untouched")
	})
	t.Run("avail_event with event index", func(t *testing.T) {
		r := newTestRing(t, 4)
		q := r.queue(FeatureRingEventIdx)
		r.desc(0, testData, 4, 0, 0)
		r.push(0)
		r.push(0)
		_, err := q.Next()
		require.NoError(t, err)
		q.SetNotify(true)
		assert.Equal(t, uint16(1), r.availEvent())
		_, err = q.Next()
		require.NoError(t, err)
		q.SetNotify(false) // cannot be expressed with the event index: no change
		assert.Equal(t, uint16(1), r.availEvent())
		assert.Equal(t, uint16(0), r.usedFlags(), "flags untouched")
		q.SetNotify(true)
		assert.Equal(t, uint16(2), r.availEvent())
	})
}

func TestResumeOnSameRing(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(0)
	r.desc(0, testData, 4, 0, 0)
	r.push(0)
	r.push(0)
	c, err := q.Next()
	require.NoError(t, err)
	require.NoError(t, q.Complete(c, 0))

	// A new Queue (after a vhost-user reconnect) continues at the restored
	// available index and the used index found in the ring.
	q2, err := NewQueue(r.mem, r.cfg, 0, q.NextAvail())
	require.NoError(t, err)
	c, err = q2.Next()
	require.NoError(t, err)
	require.NotNil(t, c)
	require.NoError(t, q2.Complete(c, 0))
	assert.Equal(t, uint16(2), r.usedIdx())
}

func TestCompleteRejectsUnknownChains(t *testing.T) {
	r := newTestRing(t, 4)
	q := r.queue(0)
	require.ErrorIs(t, q.Complete(nil, 0), ErrBadChain)
	require.ErrorIs(t, q.Complete(&Chain{Head: 4}, 0), ErrBadChain)
	assert.Equal(t, uint16(0), r.usedIdx())
}

func TestSegmentReader(t *testing.T) {
	c := &Chain{Readable: [][]byte{[]byte("ab"), []byte("cde"), []byte("f")}}
	rd := c.Reader()
	assert.Equal(t, uint64(6), rd.Remaining())
	buf := make([]byte, 3)
	n, err := rd.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(buf[:n]))
	assert.Equal(t, uint64(3), rd.Remaining())
	assert.Equal(t, [][]byte{[]byte("de"), []byte("f")}, rd.Segments())
	n, err = rd.Read(make([]byte, 10))
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	_, err = rd.Read(buf)
	require.ErrorIs(t, err, io.EOF)
	assert.Nil(t, rd.Segments())
}

func TestSegmentWriterSkip(t *testing.T) {
	a, b := make([]byte, 4), make([]byte, 4)
	c := &Chain{Writable: [][]byte{a, b}}
	w := c.Writer()
	require.NoError(t, w.Skip(3))
	segs := w.Segments()
	require.Len(t, segs, 2)
	assert.Len(t, segs[0], 1)
	_, err := w.Write([]byte("xyz"))
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 0, 0, 'x'}, a)
	assert.Equal(t, []byte{'y', 'z', 0, 0}, b)
	assert.Equal(t, uint64(6), w.Written())
	require.ErrorIs(t, w.Skip(3), io.ErrShortWrite)
	require.NoError(t, w.Skip(2))
	assert.Equal(t, uint64(0), w.Remaining())
	assert.Nil(t, w.Segments())
}
