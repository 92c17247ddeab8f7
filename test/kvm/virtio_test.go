package kvm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/devices/virtio/blk"
	"github.com/wisp-vmm/wisp/guest/initproto"
	"github.com/wisp-vmm/wisp/kvm"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/accel"
)

// What the disk test's guest and host leave for each other.
const (
	diskSectors   = 2048
	hostSector    = 16 // the host writes hostMessage here
	guestSector   = 8  // the guest writes guestMessage here
	hostMessage   = "wisp-host-sector"
	guestMessage  = "wisp-linux-wrote"
	diskDoneToken = "wisp-disk-done"
)

// TestMinimalLinuxUsesVirtioBlk boots the minimal kernel with a virtio-blk
// disk on wisp's virtio-pci: Linux must find the function through ACPI and
// ECAM, bind virtio_pci and virtio_blk with MSI-X vectors, read a sector
// the host wrote and write one the host then finds in the image.
func TestMinimalLinuxUsesVirtioBlk(t *testing.T) {
	sys, err := kvm.Open(vmm.DefaultKVM)
	if err != nil {
		t.Skipf("no usable /dev/kvm (%v): test/nested runs this test inside a VM with nested KVM", err)
	}
	sys.Close()
	if accel.DefaultHost("").KVMIsPVM() {
		t.Skip("KVM here is PVM, which cannot run Linux past its first lines (TestMinimalLinuxOnKVM covers that); the virtio disk needs a full boot")
	}
	vmlinux, initrd := minimalLinux(t)

	img := filepath.Join(t.TempDir(), "disk.img")
	image := make([]byte, diskSectors*512)
	copy(image[hostSector*512:], hostMessage)
	require.NoError(t, os.WriteFile(img, image, 0o600))

	script := strings.Join([]string{
		"cat /sys/block/vda/size",
		"dd if=/dev/vda bs=512 skip=16 count=1 2>/dev/null | head -c 16; echo",
		"printf " + guestMessage + " | dd of=/dev/vda bs=512 seek=8 conv=notrunc,sync 2>/dev/null",
		"sync",
		"grep virtio0 /proc/interrupts",
		"echo " + diskDoneToken,
	}, "; ")
	cmd, err := initproto.EncodeCmd([]string{"sh", "-c", script})
	require.NoError(t, err)
	cfg := vmm.Config{
		Kernel:  vmlinux,
		Initrd:  initrd,
		Cmdline: "console=ttyS0 noxsave reboot=k panic=-1 " + cmd,
		CPUs:    1,
	}.WithDefaults()

	console, st := bootLinuxWithDisk(t, cfg, img)
	if st.Reason == vmm.ExitReset && os.Getenv("WISP_NESTED_INSIDE") == "1" && !strings.Contains(console, diskDoneToken) {
		// Nested SVM under TCG resets a guest early now and then (see
		// TestMinimalLinuxOnKVM): one retry there.
		t.Logf("nested KVM: the guest reset before userspace (%s); booting once more. Its console:\n%s", st.Detail, console)
		console, st = bootLinuxWithDisk(t, cfg, img)
	}
	require.Equal(t, vmm.ExitPoweroff, st.Reason, "console:\n%s", console)
	t.Logf("PCI and virtio lines of the console:\n%s", grepLines(console, "pci", "PCI", "virtio", "vda"))
	assert.Contains(t, console, "virtio_blk virtio0: [vda] 2048 512-byte logical blocks")
	assert.Contains(t, console, "\n2048", "/sys/block/vda/size")
	assert.Contains(t, console, hostMessage, "the guest read the host's sector")
	assert.Contains(t, console, "virtio0-config", "MSI-X vector for configuration changes")
	assert.Contains(t, console, "virtio0-req.0", "MSI-X vector for the request queue")
	assert.Contains(t, console, diskDoneToken)
	status, ok := exitStatus(console)
	require.True(t, ok, "init reported the command's exit status; console:\n%s", console)
	assert.Equal(t, 0, status)

	got, err := os.ReadFile(img)
	require.NoError(t, err)
	assert.Equal(t, guestMessage, string(got[guestSector*512:guestSector*512+len(guestMessage)]), "the guest's sector reached the image")
}

// bootLinuxWithDisk boots cfg with a virtio-blk disk on img and returns
// the console and how the guest ended; the disk is closed when the test ends.
func bootLinuxWithDisk(t *testing.T, cfg vmm.Config, img string) (string, vmm.ExitStatus) {
	t.Helper()
	disk, err := blk.Open(blk.Options{Path: img, OnError: func(q int, err error) { t.Logf("disk queue %d: %v", q, err) }})
	require.NoError(t, err)
	console, st, _ := bootLinux(t, cfg, disk)
	return console, st
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
