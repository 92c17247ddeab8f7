package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestConsoleDevice(t *testing.T) {
	tests := []struct{ active, want string }{
		{"ttyS0\n", "/dev/ttyS0"},
		{"tty0 ttyS0\n", "/dev/ttyS0"},
		{"ttyS0 hvc0", "/dev/hvc0"},
		{"", ""},
		{"\n", ""},
		{"../etc/passwd", ""},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, consoleDevice(tc.active), "%q", tc.active)
	}
}

func TestParseModules(t *testing.T) {
	specs, err := parseModules(`# virtio first
/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko

/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko  napi_tx=1 csum=0
`)
	require.NoError(t, err)
	assert.Equal(t, []moduleSpec{
		{path: "/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko"},
		{path: "/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko", params: "napi_tx=1 csum=0"},
	}, specs)

	_, err = parseModules("kernel/virtio.ko\n")
	require.ErrorContains(t, err, "not absolute")
}

func TestChildEnv(t *testing.T) {
	assert.Equal(t,
		[]string{"TERM=linux", "PATH=" + defaultPath, "HOME=/root"},
		childEnv([]string{"HOME=/", "TERM=linux"}))
	assert.Equal(t,
		[]string{"PATH=/bin", "LANG=C.UTF-8", "HOME=/root"},
		childEnv([]string{"PATH=/bin", "LANG=C.UTF-8"}))
	assert.Equal(t, "/bin", pathOf([]string{"X=1", "PATH=/bin"}))
	assert.Equal(t, defaultPath, pathOf(nil))
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		name string
		ws   unix.WaitStatus
		want int
	}{
		{"exit 0", unix.WaitStatus(0), 0},
		{"exit 3", unix.WaitStatus(3 << 8), 3},
		{"exit 255", unix.WaitStatus(255 << 8), 255},
		{"killed by SIGKILL", unix.WaitStatus(unix.SIGKILL), 128 + 9},
		{"killed by SIGSEGV with core", unix.WaitStatus(unix.SIGSEGV) | 0x80, 128 + 11},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, exitStatus(tc.ws), tc.name)
	}
}

func TestRawOutput(t *testing.T) {
	tio := unix.Termios{
		Lflag: unix.ECHO | unix.ECHOE | unix.ICANON | unix.ISIG,
		Oflag: unix.OPOST | unix.ONLCR,
	}
	rawOutput(&tio)
	assert.Zero(t, tio.Lflag&unix.ECHO, "no echo")
	assert.Zero(t, tio.Oflag&unix.OPOST, "no output processing")
	assert.NotZero(t, tio.Lflag&unix.ICANON, "line editing and ^D stay")
	assert.NotZero(t, tio.Lflag&unix.ISIG, "^C stays")
}
