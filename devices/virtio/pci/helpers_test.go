package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	pcibus "github.com/wisp-vmm/wisp/devices/pci"
	"github.com/wisp-vmm/wisp/devices/virtio"
)

// sliceMemory is guest RAM as a byte slice from guest address 0.
type sliceMemory []byte

var errOutside = errors.New("outside guest memory")

func (m sliceMemory) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m)) || n > uint64(len(m))-gpa {
		return nil, fmt.Errorf("[%#x, +%#x): %w", gpa, n, errOutside)
	}
	return m[gpa : gpa+n : gpa+n], nil
}

// echoDevice is a small virtio device: each request's writable bytes are
// filled with fill, and the request completes. Its workers are the real
// virtio.Workers.
type echoDevice struct {
	typ      virtio.DeviceType
	features uint64
	sizes    []uint16
	fill     byte
	config   []byte

	mu          sync.Mutex
	workers     *virtio.Workers
	activations []virtio.Activation
	resets      int
	activateErr error
	errs        []error
}

func newEchoDevice() *echoDevice {
	return &echoDevice{
		typ:      virtio.TypeRNG,
		features: virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingPacked | 1<<0,
		sizes:    []uint16{256, 16},
		fill:     0xab,
		config:   []byte{1, 2, 3, 4, 5, 6, 7, 8},
	}
}

func (d *echoDevice) Type() virtio.DeviceType { return d.typ }
func (d *echoDevice) Features() uint64        { return d.features }
func (d *echoDevice) QueueSizes() []uint16    { return d.sizes }

func (d *echoDevice) ReadConfig(offset uint64, data []byte) error {
	if offset > uint64(len(d.config)) || uint64(len(data)) > uint64(len(d.config))-offset {
		return virtio.ErrBadConfig
	}
	copy(data, d.config[offset:])
	return nil
}

func (d *echoDevice) WriteConfig(offset uint64, data []byte) error {
	if offset > uint64(len(d.config)) || uint64(len(data)) > uint64(len(d.config))-offset {
		return virtio.ErrBadConfig
	}
	copy(d.config[offset:], data)
	return nil
}

func (d *echoDevice) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.activateErr != nil {
		return d.activateErr
	}
	d.activations = append(d.activations, a)
	w, err := virtio.NewWorkers(func(_ int, err error) {
		d.mu.Lock()
		d.errs = append(d.errs, err)
		d.mu.Unlock()
	})
	if err != nil {
		return err
	}
	d.workers = w
	for i, aq := range a.Queues {
		if aq.Queue == nil {
			continue
		}
		w.Serve(i, aq, func(c *virtio.Chain) (uint32, error) {
			wr := c.Writer()
			buf := make([]byte, wr.Remaining())
			for j := range buf {
				buf[j] = d.fill
			}
			n, err := wr.Write(buf)
			return uint32(n), err
		})
	}
	return nil
}

func (d *echoDevice) Reset() error {
	d.mu.Lock()
	w := d.workers
	d.workers = nil
	d.resets++
	d.mu.Unlock()
	if w != nil {
		return w.Stop()
	}
	return nil
}

func (d *echoDevice) Close() error { return d.Reset() }

func (d *echoDevice) lastActivation(t *testing.T) virtio.Activation {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	require.NotEmpty(t, d.activations, "device activated")
	return d.activations[len(d.activations)-1]
}

// msiRouter records routes and sends each interrupt on fired.
type msiRouter struct {
	mu     sync.Mutex
	log    []string
	fired  chan pcibus.MSIMessage
	closed int
}

func newMSIRouter() *msiRouter { return &msiRouter{fired: make(chan pcibus.MSIMessage, 64)} }

type msiRoute struct {
	r   *msiRouter
	mu  sync.Mutex
	msg pcibus.MSIMessage
}

func (r *msiRouter) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *msiRouter) NewMSIRoute(msg pcibus.MSIMessage) (pcibus.MSIRoute, error) {
	r.add(fmt.Sprintf("route %#x/%#x", msg.Address, msg.Data))
	return &msiRoute{r: r, msg: msg}, nil
}

func (rt *msiRoute) Update(msg pcibus.MSIMessage) error {
	rt.mu.Lock()
	rt.msg = msg
	rt.mu.Unlock()
	rt.r.add(fmt.Sprintf("update %#x/%#x", msg.Address, msg.Data))
	return nil
}

func (rt *msiRoute) Trigger() error {
	rt.mu.Lock()
	msg := rt.msg
	rt.mu.Unlock()
	rt.r.fired <- msg
	return nil
}

func (rt *msiRoute) Close() error {
	rt.r.mu.Lock()
	defer rt.r.mu.Unlock()
	rt.r.closed++
	return nil
}

// notifyRecorder records notification registrations.
type notifyRecorder struct {
	mu   sync.Mutex
	live map[uint64]*virtio.EventFD
	log  []string
	fail bool
}

func newNotifyRecorder() *notifyRecorder {
	return &notifyRecorder{live: map[uint64]*virtio.EventFD{}}
}

func (n *notifyRecorder) RegisterNotify(addr uint64, kick *virtio.EventFD) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail {
		return errors.New("injected")
	}
	n.live[addr] = kick
	n.log = append(n.log, fmt.Sprintf("+%#x", addr))
	return nil
}

func (n *notifyRecorder) UnregisterNotify(addr uint64, kick *virtio.EventFD) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.live[addr] != kick {
		return fmt.Errorf("unregister %#x: not registered", addr)
	}
	delete(n.live, addr)
	n.log = append(n.log, fmt.Sprintf("-%#x", addr))
	return nil
}

func (n *notifyRecorder) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.log
	n.log = nil
	return l
}

// fixture is a transport over an echo device, with 1 MiB of guest memory.
type fixture struct {
	t      *Transport
	dev    *echoDevice
	mem    sliceMemory
	router *msiRouter
	notify *notifyRecorder
}

func newFixture(t *testing.T, dev *echoDevice) *fixture {
	t.Helper()
	f := &fixture{dev: dev, mem: make(sliceMemory, 1<<20), router: newMSIRouter(), notify: newNotifyRecorder()}
	tr, err := New(dev, Options{Memory: f.mem, MSI: f.router, Notify: f.notify})
	require.NoError(t, err)
	f.t = tr
	t.Cleanup(func() { _ = tr.Close() })
	return f
}

func (f *fixture) read(t *testing.T, off uint64, n int) uint64 {
	t.Helper()
	data := make([]byte, n)
	require.NoError(t, f.t.ReadBAR(BARIndex, off, data))
	return getBytes(data)
}

func (f *fixture) write(t *testing.T, off uint64, n int, v uint64) {
	t.Helper()
	data := make([]byte, n)
	putBytes(data, v)
	require.NoError(t, f.t.WriteBAR(BARIndex, off, data))
}

func (f *fixture) status(t *testing.T) uint8 { return uint8(f.read(t, regDeviceStatus, 1)) }

// Ring layout the tests' driver uses for queue 0: 16 entries.
const (
	ringSize  = 16
	descAddr  = 0x10000
	availAddr = 0x11000
	usedAddr  = 0x12000
	bufAddr   = 0x20000
)

// negotiate does what Linux does up to FEATURES_OK and returns the status.
func (f *fixture) negotiate(t *testing.T, features uint64) uint8 {
	t.Helper()
	f.write(t, regDeviceStatus, 1, 0)
	f.write(t, regDeviceStatus, 1, uint64(virtio.StatusAcknowledge))
	f.write(t, regDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	f.write(t, regDriverFeatureSelect, 4, 0)
	f.write(t, regDriverFeature, 4, features&0xffffffff)
	f.write(t, regDriverFeatureSelect, 4, 1)
	f.write(t, regDriverFeature, 4, features>>32)
	f.write(t, regDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK))
	return f.status(t)
}

// setupQueue0 programs queue 0's ring at the fixed addresses.
func (f *fixture) setupQueue0(t *testing.T, vector uint16) {
	t.Helper()
	f.write(t, regQueueSelect, 2, 0)
	f.write(t, regQueueSize, 2, ringSize)
	f.write(t, regQueueMSIXVector, 2, uint64(vector))
	// 64-bit registers as two dwords, low first, like Linux's
	// vp_iowrite64_twopart.
	for _, r := range []struct{ reg, addr uint64 }{{regQueueDesc, descAddr}, {regQueueDriver, availAddr}, {regQueueDevice, usedAddr}} {
		f.write(t, r.reg, 4, r.addr&0xffffffff)
		f.write(t, r.reg+4, 4, r.addr>>32)
	}
	f.write(t, regQueueEnable, 2, 1)
}

// enableMSIX turns MSI-X on and programs vector v with message data
// 0x40+v, unmasked.
func (f *fixture) enableMSIX(t *testing.T, vectors ...int) {
	t.Helper()
	ctrl := f.t.MSIX().CapabilityOffset() + 2
	require.NoError(t, f.t.WriteConfig(ctrl, []byte{0, 0x80}))
	for _, v := range vectors {
		base := MSIXTableOffset + uint64(v)*16
		f.write(t, base, 4, 0xfee00000)
		f.write(t, base+4, 4, 0)
		f.write(t, base+8, 4, uint64(0x40+v))
		f.write(t, base+12, 4, 0)
	}
}

// submit puts one request on queue 0: a device-writable buffer of n bytes
// at bufAddr, as available-ring entry idx.
func (f *fixture) submit(t *testing.T, idx uint16, n uint32) {
	t.Helper()
	le := binary.LittleEndian
	d := f.mem[descAddr+16*uint64(idx%ringSize):]
	le.PutUint64(d, bufAddr)
	le.PutUint32(d[8:], n)
	le.PutUint16(d[12:], 2) // VIRTQ_DESC_F_WRITE
	le.PutUint16(d[14:], 0)
	le.PutUint16(f.mem[availAddr+4+2*uint64(idx%ringSize):], idx%ringSize)
	// used_event (with VIRTIO_F_EVENT_IDX): interrupt once this request
	// is used.
	le.PutUint16(f.mem[availAddr+4+2*ringSize:], idx)
	le.PutUint16(f.mem[availAddr+2:], idx+1)
}

func (f *fixture) usedIdx() uint16 { return binary.LittleEndian.Uint16(f.mem[usedAddr+2:]) }
