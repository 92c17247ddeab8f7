package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wisp-vmm/wisp/guest/initproto"
)

// The ACPI button driver (drivers/acpi/button.c) registers each power
// button as an input device of this name: the fixed-feature button
// (LNXPWRBN) and a PNP0C0C device, when the firmware describes one. A VMM's
// graceful stop (QEMU's system_powerdown, wisp's PM device) presses it.
const powerButtonName = "Power Button"

// Input event codes from linux/input-event-codes.h.
const (
	evKey    = 1   // EV_KEY
	keyPower = 116 // KEY_POWER
)

// powerButtonIgnore is the value of initproto.ParamPowerButton that makes
// init ignore the button, so a host can test its forced-stop fallback.
const powerButtonIgnore = "ignore"

// inputEvent is struct input_event as evdev delivers it on a 64-bit kernel
// (init is built for amd64): a struct timeval of two 64-bit fields, then
// type, code and value. Host byte order.
type inputEvent struct {
	Sec, Usec int64
	Type      uint16
	Code      uint16
	Value     int32
}

// inputEventSize is sizeof(struct input_event): 24 bytes.
var inputEventSize = binary.Size(inputEvent{})

// isPowerPress reports whether e is the power key going down (value 1;
// 0 is its release, 2 an autorepeat).
func (e inputEvent) isPowerPress() bool {
	return e.Type == evKey && e.Code == keyPower && e.Value == 1
}

// decodeInputEvents decodes the whole events in b. evdev's read returns
// whole events only, so a short tail (which it never sends) is ignored.
func decodeInputEvents(b []byte) []inputEvent {
	events := make([]inputEvent, 0, len(b)/inputEventSize)
	for len(b) >= inputEventSize {
		var e inputEvent
		if _, err := binary.Decode(b[:inputEventSize], binary.NativeEndian, &e); err != nil {
			break // cannot happen: the slice is exactly one event long
		}
		events = append(events, e)
		b = b[inputEventSize:]
	}
	return events
}

// findPowerButtons returns the event device nodes (root/dev/input/eventN)
// of every input device named "Power Button" in root/sys/class/input.
// An input device lists its event handler as a child directory eventN
// (there is none without the evdev driver). No input class at all (a
// kernel without input support) is no buttons, not an error.
func findPowerButtons(root string) ([]string, error) {
	class := filepath.Join(root, "sys/class/input")
	entries, err := os.ReadDir(class)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find power buttons: %w", err)
	}
	var devs []string
	for _, e := range entries {
		name, err := os.ReadFile(filepath.Join(class, e.Name(), "name"))
		if err != nil || strings.TrimSpace(string(name)) != powerButtonName {
			continue // event and mouse handlers have no name file of their own
		}
		children, err := os.ReadDir(filepath.Join(class, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("find power buttons: %w", err)
		}
		for _, c := range children {
			if strings.HasPrefix(c.Name(), "event") {
				devs = append(devs, filepath.Join(root, "dev/input", c.Name()))
			}
		}
	}
	sort.Strings(devs)
	return devs, nil
}

// ignoresPowerButton reports whether the kernel command line asks init to
// ignore the power button (wisp.powerbutton=ignore; the last one wins).
func ignoresPowerButton(cmdline string) bool {
	ignore := false
	for _, p := range initproto.SplitCmdline(cmdline) {
		if v, ok := strings.CutPrefix(p, initproto.ParamPowerButton+"="); ok {
			ignore = v == powerButtonIgnore
		}
	}
	return ignore
}

// watchPowerButtons opens every power button's event device under root and
// returns a channel that receives once per press (a press while one is
// still pending is dropped: one is enough). The devices are opened before
// init reports userspace, so a host pressing the button as soon as it sees
// the boot marker is heard; evdev queues events only for open readers.
// Without a button (no driver, no ACPI) the channel is nil, which blocks
// forever in a select, and nothing is said: the guest just cannot be
// stopped gracefully.
func watchPowerButtons(log *logger, root string) <-chan struct{} {
	devs, err := findPowerButtons(root)
	if err != nil {
		log.errorf("%v", err)
		return nil
	}
	var pressed chan struct{}
	for _, dev := range devs {
		f, err := os.Open(dev)
		if err != nil {
			log.errorf("open power button %s: %v", dev, err)
			continue
		}
		if pressed == nil {
			pressed = make(chan struct{}, 1)
		}
		go readPowerButton(log, f, pressed)
	}
	return pressed
}

// readPowerButton reads events from one button until the device fails.
func readPowerButton(log *logger, f *os.File, pressed chan<- struct{}) {
	defer f.Close()
	buf := make([]byte, 64*inputEventSize)
	for {
		n, err := f.Read(buf)
		if err != nil {
			log.errorf("read power button %s: %v", f.Name(), err)
			return
		}
		for _, e := range decodeInputEvents(buf[:n]) {
			if !e.isPowerPress() {
				continue
			}
			select {
			case pressed <- struct{}{}:
			default:
			}
		}
	}
}
