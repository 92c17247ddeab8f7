package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/vmm"
)

// configFlags maps vmm.Config's fields to the `wisp run` flags that set
// them. The library names fields so that programs embedding it can point
// at their own names; the CLI's users typed flags, so its errors name
// those. A field of a list ("Disks[1]") goes by the list's name.
func configFlags() map[string]string {
	return map[string]string{
		"CPUs":        "--cpus",
		"MemoryBytes": "--memory",
		"Kernel":      "--kernel",
		"Initrd":      "--initrd",
		"Cmdline":     "--cmdline",
		"Console":     "--console",
		"ConsolePath": "--console",
		"Accel":       "--accel",
		"OnReboot":    "--on-reboot",
		"Boot":        "--boot",
		"Disks":       "--disk",
		"Nets":        "--net",
		"StateDir":    "--state-dir",
	}
}

// flagFor returns the flag that sets a Config field path such as "CPUs",
// "Disks[1]" or "Disks[1].BackingDir".
func flagFor(field string) (string, bool) {
	name, _, _ := strings.Cut(field, "[")
	name, _, _ = strings.Cut(name, ".")
	flag, ok := configFlags()[name]
	return flag, ok
}

// cliMessage is err's text for the CLI: a *vmm.FieldError in it reads
// "FLAG VALUE: MSG" instead of "Config.FIELD VALUE: MSG", and whatever
// context wraps it stays as it is.
func cliMessage(err error) string {
	msg := err.Error()
	var fe *vmm.FieldError
	if !errors.As(err, &fe) {
		return msg
	}
	flag, ok := flagFor(fe.Field)
	if !ok {
		return msg // a field no flag sets: its own name is the best there is
	}
	value := fe.Value
	if fe.Field == "MemoryBytes" {
		// The library gives plain bytes; users typed a size like 256M.
		if n, perr := strconv.ParseUint(value, 10, 64); perr == nil {
			value = vmm.FormatSize(n)
		}
	}
	rendered := flag + ": " + fe.Msg
	if value != "" {
		rendered = flag + " " + value + ": " + fe.Msg
	}
	i := strings.LastIndex(msg, fe.Error())
	if i < 0 {
		// A wrapper that does not print its cause: leave its words alone.
		return msg
	}
	return msg[:i] + rendered + msg[i+len(fe.Error()):]
}
