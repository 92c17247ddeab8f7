package vhostdevs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio"
	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/devices/virtio/rng"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/test/fixtures"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/qemu"
)

// hangGuard bounds one booted test so a broken device plane fails it
// instead of hanging the suite. It is not a performance assertion: a TCG
// boot takes seconds, more on a loaded host.
const hangGuard = 4 * time.Minute

// syncBuffer collects console output written by the backend's relay.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bootResult is how a booted guest ended.
type bootResult struct {
	status  vmm.ExitStatus
	code    int  // the command's exit status
	coded   bool // the guest reported it
	console string
	trace   string // every vhost-user message, in order
	errs    []error
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP (-short): boots Linux under QEMU TCG")
	}
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		t.Skipf("SKIP: %v", qemu.ErrNotInstalled)
	}
}

// boot runs script (sh -c) in wisp's default guest on the minimal kernel,
// with devs attached over vhost-user, and returns once the VM has ended
// and the backend has cleaned up.
func boot(t *testing.T, devs []virtio.Device, script string) bootResult {
	t.Helper()
	requireQEMU(t)
	kern := fixtures.MinimalKernel(t)
	initrd := fixtures.DefaultInitramfs(t, kern)
	param, err := initproto.EncodeCmd([]string{"sh", "-c", script})
	require.NoError(t, err)
	cfg := vmm.Config{
		Kernel:      kern.Image,
		Initrd:      initrd,
		Cmdline:     "console=ttyS0 reboot=k panic=-1 quiet " + initproto.ParamTTY + "=raw " + param,
		CPUs:        1,
		MemoryBytes: 256 << 20,
		Console:     vmm.ConsoleStdio,
		Accel:       vmm.AccelTCG,
		OnReboot:    vmm.RebootExit,
	}
	// Socket paths are limited to 107 bytes: a short runtime directory.
	dir, err := os.MkdirTemp("", "wvu")
	require.NoError(t, err)
	defer os.RemoveAll(dir)

	var (
		mu    sync.Mutex
		trace strings.Builder
		errs  []error
	)
	out := &syncBuffer{}
	filter := initproto.NewExitFilter(out)
	b, err := qemu.New(cfg, vmm.Console{Out: filter}, qemu.Options{
		RuntimeDir: dir,
		Log:        t.Output(),
		Devices: Attach(devs, Options{
			OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
			Trace:   func(line string) { mu.Lock(); trace.WriteString(line + "\n"); mu.Unlock() },
		}),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	require.NoError(t, b.Start(ctx))
	st, err := b.Wait()
	require.NoError(t, err)
	require.NoError(t, filter.Flush())
	code, coded := filter.Status()

	// Everything is gone once Wait returned: the sockets with the
	// runtime directory, and every goroutine of the servers and devices.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "runtime dir %s not cleaned", dir)
	requireNoGoroutine(t, "vhostuser.", "virtio.(*Workers)")

	mu.Lock()
	defer mu.Unlock()
	r := bootResult{status: st, code: code, coded: coded, console: out.String(), trace: trace.String(), errs: errs}
	if t.Failed() || testing.Verbose() {
		t.Logf("vhost-user messages:\n%s", r.trace)
		t.Logf("guest console:\n%s", r.console)
	}
	return r
}

// requireNoGoroutine fails if a goroutine runs code of the named
// functions.
func requireNoGoroutine(t *testing.T, names ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, n := range names {
			assert.NotContains(t, g, n, "a goroutine is left behind:\n%s", g)
		}
	}
}

// TestBootBlockAndRNG boots a guest with wisp's real devices: two disks
// and the entropy device. The guest reads what the host put on the first
// disk, writes both, and reads /dev/hwrng; the host then finds the
// guest's data in the images. The serials prove the order: the first disk
// given is /dev/vda. The first disk has two queues of which the
// single-CPU guest uses one, so QEMU starts only some of its rings.
func TestBootBlockAndRNG(t *testing.T) {
	dir := t.TempDir()
	imgA, imgB := dir+"/a.img", dir+"/b.img"
	a := make([]byte, 1<<20)
	copy(a[8*512:], "hello-from-host")
	require.NoError(t, os.WriteFile(imgA, a, 0o600))
	require.NoError(t, os.WriteFile(imgB, make([]byte, 1<<20), 0o600))

	diskA, err := blk.Open(blk.Options{Path: imgA, Serial: "wisp-disk-a", Queues: 2})
	require.NoError(t, err)
	defer diskA.Close()
	diskB, err := blk.Open(blk.Options{Path: imgB, Serial: "wisp-disk-b"})
	require.NoError(t, err)
	defer diskB.Close()
	entropy := rng.New()
	defer entropy.Close()

	r := boot(t, []virtio.Device{diskA, entropy, diskB}, strings.Join([]string{
		"echo serials: $(cat /sys/block/vda/serial) $(cat /sys/block/vdb/serial)",
		"echo read: $(dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | head -c 15)",
		"echo guest-wrote-a | dd of=/dev/vda bs=512 seek=1 conv=sync,fsync 2>/dev/null",
		"echo guest-wrote-b | dd of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null",
		"echo rng: $(cat /sys/class/misc/hw_random/rng_current)",
		"echo entropy: $(head -c 64 /dev/hwrng | od -An -v -tx1) :end",
	}, " && "))
	assert.Equal(t, vmm.ExitPoweroff, r.status.Reason, r.status.Detail)
	require.True(t, r.coded, "the guest reported no exit status")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.console, "serials: wisp-disk-a wisp-disk-b")
	assert.Contains(t, r.console, "read: hello-from-host")
	assert.Contains(t, r.console, "rng: virtio_rng.0")
	assert.Empty(t, r.errs)

	// 64 bytes came from /dev/hwrng, and not all the same.
	_, after, ok := strings.Cut(r.console, "entropy: ")
	require.True(t, ok)
	hex, _, ok := strings.Cut(after, " :end")
	require.True(t, ok)
	words := strings.Fields(hex)
	assert.Len(t, words, 64)
	distinct := map[string]bool{}
	for _, w := range words {
		distinct[w] = true
	}
	assert.Greater(t, len(distinct), 8, "64 random bytes: %s", hex)

	gotA, err := os.ReadFile(imgA)
	require.NoError(t, err)
	assert.Equal(t, "guest-wrote-a\n", string(gotA[512:512+14]))
	assert.Equal(t, "hello-from-host", string(gotA[8*512:8*512+15]), "untouched")
	gotB, err := os.ReadFile(imgB)
	require.NoError(t, err)
	assert.Equal(t, "guest-wrote-b\n", string(gotB[:14]))
}

// sinkNet is the tests' own network device: it announces a MAC address,
// never receives, and records the source address and type of every frame
// the guest transmits.
type sinkNet struct {
	mac net.HardwareAddr

	mu      sync.Mutex
	workers *virtio.Workers
	frames  []string // "src type" of each transmitted frame
}

// virtioNetHdrLen is struct virtio_net_hdr with VERSION_1 (num_buffers
// included).
const virtioNetHdrLen = 12

func (d *sinkNet) Type() virtio.DeviceType { return virtio.TypeNet }
func (d *sinkNet) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | netFeatureMAC
}
func (d *sinkNet) QueueSizes() []uint16 { return []uint16{256, 256} }
func (d *sinkNet) ReadConfig(off uint64, data []byte) error {
	if off > 6 || uint64(len(data)) > 6-off {
		return fmt.Errorf("net config [%d, +%d): %w", off, len(data), virtio.ErrBadConfig)
	}
	copy(data, d.mac[off:])
	return nil
}
func (d *sinkNet) WriteConfig(off uint64, data []byte) error {
	return fmt.Errorf("net config is read-only: %w", virtio.ErrBadConfig)
}

func (d *sinkNet) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workers != nil {
		return fmt.Errorf("already active")
	}
	w, err := virtio.NewWorkers(nil)
	if err != nil {
		return err
	}
	// Queue 0 receives: the guest's buffers stay there. Queue 1
	// transmits.
	if len(a.Queues) > 1 && a.Queues[1].Queue != nil {
		w.Serve(1, a.Queues[1], d.transmit)
	}
	d.workers = w
	return nil
}

func (d *sinkNet) transmit(c *virtio.Chain) (uint32, error) {
	frame, err := io.ReadAll(c.Reader())
	if err != nil {
		return 0, err
	}
	if len(frame) < virtioNetHdrLen+14 {
		return 0, fmt.Errorf("short frame of %d bytes: %w", len(frame), virtio.ErrBadRequest)
	}
	eth := frame[virtioNetHdrLen:]
	d.mu.Lock()
	d.frames = append(d.frames, fmt.Sprintf("%s %02x%02x", net.HardwareAddr(eth[6:12]), eth[12], eth[13]))
	d.mu.Unlock()
	return 0, nil
}

func (d *sinkNet) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.workers == nil {
		return nil
	}
	err := d.workers.Stop()
	d.workers = nil
	return err
}

func (d *sinkNet) Close() error { return d.Reset() }

func (d *sinkNet) active() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.workers != nil
}

func (d *sinkNet) sent() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.frames...)
}

// TestBootNet boots a guest with the test's own net device behind QEMU's
// vhost-user netdev and virtio-net-pci: the guest sees the device's MAC
// address, and the ARP request of its ping reaches the device.
func TestBootNet(t *testing.T) {
	dev := &sinkNet{mac: net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x1e, 0x55}}
	r := boot(t, []virtio.Device{dev}, strings.Join([]string{
		"echo mac: $(cat /sys/class/net/eth0/address)",
		"ip link set eth0 up",
		"ip addr add 10.0.2.15/24 dev eth0",
		"ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1; true",
	}, " && "))
	assert.Equal(t, vmm.ExitPoweroff, r.status.Reason, r.status.Detail)
	require.True(t, r.coded, "the guest reported no exit status")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.console, "mac: 52:54:00:77:1e:55")
	assert.Contains(t, dev.sent(), "52:54:00:77:1e:55 0806", "the guest's ARP request")
	assert.Empty(t, r.errs)
	assert.False(t, dev.active(), "the device is reset when the VM ends")
}
