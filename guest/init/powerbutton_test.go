package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawEvent lays out one struct input_event the way x86-64 evdev writes it,
// field by field, independently of inputEvent.
func rawEvent(sec, usec int64, typ, code uint16, value int32) []byte {
	b := make([]byte, 24)
	binary.LittleEndian.PutUint64(b[0:], uint64(sec))
	binary.LittleEndian.PutUint64(b[8:], uint64(usec))
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], code)
	binary.LittleEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestInputEventSize(t *testing.T) {
	assert.Equal(t, 24, inputEventSize, "sizeof(struct input_event) on x86-64")
}

func TestDecodeInputEvents(t *testing.T) {
	const evSyn, evMsc, keyA = 0, 4, 30
	// What the ACPI button driver sends for one press: key down, sync,
	// key up, sync.
	press := bytes.Join([][]byte{
		rawEvent(1700000000, 12, evKey, keyPower, 1),
		rawEvent(1700000000, 12, evSyn, 0, 0),
		rawEvent(1700000000, 13, evKey, keyPower, 0),
		rawEvent(1700000000, 13, evSyn, 0, 0),
	}, nil)
	tests := []struct {
		name    string
		in      []byte
		events  int
		presses int
	}{
		{"one press: down, sync, up, sync", press, 4, 1},
		{"two presses in one read", append(append([]byte(nil), press...), press...), 8, 2},
		{"key release only", rawEvent(1, 0, evKey, keyPower, 0), 1, 0},
		{"autorepeat is not a press", rawEvent(1, 0, evKey, keyPower, 2), 1, 0},
		{"another key", rawEvent(1, 0, evKey, keyA, 1), 1, 0},
		{"power code under another type", rawEvent(1, 0, evMsc, keyPower, 1), 1, 0},
		{"short tail ignored", append(rawEvent(1, 0, evKey, keyPower, 1), 1, 2, 3), 1, 1},
		{"less than one event", []byte{1, 2, 3}, 0, 0},
		{"nothing", nil, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events := decodeInputEvents(tc.in)
			assert.Len(t, events, tc.events)
			presses := 0
			for _, e := range events {
				if e.isPowerPress() {
					presses++
				}
			}
			assert.Equal(t, tc.presses, presses)
		})
	}

	got := decodeInputEvents(rawEvent(1700000000, 999999, evKey, keyPower, -1))
	require.Len(t, got, 1)
	assert.Equal(t, inputEvent{Sec: 1700000000, Usec: 999999, Type: evKey, Code: keyPower, Value: -1}, got[0])
}

// fakeInput is one /sys/class/input entry of a fake sysfs tree.
type fakeInput struct {
	dir      string   // input0, event0, mice
	name     string   // contents of its name file; "" for none
	handlers []string // child handler directories: event0, mouse0
}

func writeFakeSysfs(t *testing.T, root string, inputs []fakeInput) {
	t.Helper()
	for _, in := range inputs {
		dir := filepath.Join(root, "sys/class/input", in.dir)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		if in.name != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "name"), []byte(in.name+"\n"), 0o444))
		}
		for _, h := range in.handlers {
			require.NoError(t, os.MkdirAll(filepath.Join(dir, h), 0o755))
		}
	}
}

func TestFindPowerButtons(t *testing.T) {
	// The event handler directories the class also lists (event0, mice)
	// have no name file of their own.
	handlers := []fakeInput{{dir: "event0"}, {dir: "event1"}, {dir: "event3"}, {dir: "mice"}}
	tests := []struct {
		name   string
		inputs []fakeInput
		want   []string // relative to the root
	}{
		{"fixed-feature and PNP0C0C buttons", append([]fakeInput{
			{dir: "input0", name: "Power Button", handlers: []string{"event0"}},
			{dir: "input1", name: "AT Translated Set 2 keyboard", handlers: []string{"event1"}},
			{dir: "input3", name: "Power Button", handlers: []string{"event3"}},
		}, handlers...), []string{"dev/input/event0", "dev/input/event3"}},
		{"only the fixed-feature button", []fakeInput{
			{dir: "input0", name: "Power Button", handlers: []string{"event0"}},
			{dir: "event0"},
		}, []string{"dev/input/event0"}},
		{"a button besides a mouse handler", []fakeInput{
			{dir: "input2", name: "Power Button", handlers: []string{"mouse0", "event2"}},
		}, []string{"dev/input/event2"}},
		{"no evdev: a button without event device", []fakeInput{
			{dir: "input0", name: "Power Button"},
		}, nil},
		{"sleep button and keyboard only", []fakeInput{
			{dir: "input0", name: "Sleep Button", handlers: []string{"event0"}},
			{dir: "input1", name: "AT Translated Set 2 keyboard", handlers: []string{"event1"}},
		}, nil},
		{"no input devices", []fakeInput{}, nil},
		{"no input class (kernel without input)", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.inputs != nil {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "sys/class/input"), 0o755))
			}
			writeFakeSysfs(t, root, tc.inputs)
			got, err := findPowerButtons(root)
			require.NoError(t, err)
			var want []string
			for _, w := range tc.want {
				want = append(want, filepath.Join(root, w))
			}
			assert.Equal(t, want, got)
		})
	}
}

// TestFindPowerButtonsThroughSymlinks lays the tree out as sysfs does:
// the class directory holds symlinks into /sys/devices.
func TestFindPowerButtonsThroughSymlinks(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "sys/devices/LNXSYSTM:00/LNXPWRBN:00/input/input0")
	require.NoError(t, os.MkdirAll(filepath.Join(dev, "event0"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dev, "name"), []byte("Power Button\n"), 0o444))
	class := filepath.Join(root, "sys/class/input")
	require.NoError(t, os.MkdirAll(class, 0o755))
	require.NoError(t, os.Symlink("../../devices/LNXSYSTM:00/LNXPWRBN:00/input/input0", filepath.Join(class, "input0")))
	require.NoError(t, os.Symlink("../../devices/LNXSYSTM:00/LNXPWRBN:00/input/input0/event0", filepath.Join(class, "event0")))

	got, err := findPowerButtons(root)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(root, "dev/input/event0")}, got)
}

func TestIgnoresPowerButton(t *testing.T) {
	tests := []struct {
		cmdline string
		want    bool
	}{
		{"console=ttyS0 panic=-1", false},
		{"console=ttyS0 wisp.powerbutton=ignore quiet\n", true},
		{"wisp.powerbutton=poweroff", false},
		{"wisp.powerbutton=ignore wisp.powerbutton=poweroff", false},
		{"wisp.powerbutton=poweroff wisp.powerbutton=ignore", true},
		{`wisp.powerbutton="ignore"`, true},
		{"xwisp.powerbutton=ignore wisp.powerbuttonx=ignore", false},
		{"wisp.powerbutton", false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, ignoresPowerButton(tc.cmdline), "%q", tc.cmdline)
	}
}
