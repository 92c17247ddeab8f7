// Package initproto is the small protocol between the host (`wisp run`)
// and wisp's guest init (guest/init): how the host asks for a command on
// the kernel command line, and how init reports the command's exit status
// on the console so the host can strip it and exit with it.
//
// Host side:
//
//	param, _ := initproto.EncodeCmd([]string{"sh", "-c", "exit 3"})
//	cmdline := "console=ttyS0 quiet " + param
//	f := initproto.NewExitFilter(os.Stdout) // console output goes through f
//	... guest runs and powers off ...
//	f.Flush()
//	status, ok := f.Status() // 3, true
//
// Guest side (init): ParseCmdline(/proc/cmdline), run Params.Argv on the
// console, then write ExitRecord(status) to the console and power off.
package initproto

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kernel command line parameters init understands. They contain a dot, so
// the kernel treats them as (unknown) module parameters and neither passes
// them to init's argv/environment nor complains; init reads /proc/cmdline.
const (
	// ParamCmd carries the command to run instead of a shell:
	// wisp.cmd=<base64url(JSON array of strings)>.
	ParamCmd = "wisp.cmd"
	// ParamTTY selects the console's line discipline for the command:
	// "raw" turns off echo and output post-processing (no "\n" -> "\r\n"),
	// which a host whose stdin/stdout are pipes wants; the default keeps
	// the console a normal cooked terminal, which a host terminal in raw
	// mode wants.
	ParamTTY = "wisp.tty"
	// ParamWinsize gives the console's size as COLSxROWS (e.g. 120x40):
	// a serial console has no size of its own, and full-screen programs
	// need one.
	ParamWinsize = "wisp.winsize"
	// ParamPowerButton sets what init does when the ACPI power button is
	// pressed (a VMM's graceful stop). By default init ends the command or
	// shell and every other process (SIGTERM, a short grace, SIGKILL),
	// syncs and powers off; "ignore" makes it ignore the button, like a
	// guest without ACPI support, so a host can test its forced-stop
	// fallback: wisp.powerbutton=ignore.
	ParamPowerButton = "wisp.powerbutton"
)

// MaxCmdline is the x86 kernel's command line limit (COMMAND_LINE_SIZE
// 2048, including the terminating NUL).
const MaxCmdline = 2047

// ModulesFile lists, one per line and in load order, the kernel modules
// init loads before anything else: an absolute path inside the initramfs,
// optionally followed by whitespace and module parameters. Blank lines and
// lines starting with '#' are ignored.
const ModulesFile = "/etc/wisp/modules"

// ErrBadCmd: the wisp.cmd parameter does not decode to a non-empty argv.
var ErrBadCmd = errors.New("bad " + ParamCmd + " parameter")

// EncodeCmd returns the kernel command line parameter asking init to run
// argv: "wisp.cmd=" + base64url (unpadded) of the JSON array. The encoding
// has no spaces or quotes, so it survives the kernel's parameter parser.
func EncodeCmd(argv []string) (string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return "", fmt.Errorf("%w: empty command", ErrBadCmd)
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("%w: argument %d contains a NUL byte", ErrBadCmd, i)
		}
	}
	j, err := json.Marshal(argv)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadCmd, err)
	}
	return ParamCmd + "=" + base64.RawURLEncoding.EncodeToString(j), nil
}

// DecodeCmd decodes the value of a wisp.cmd parameter. It accepts the
// standard and URL base64 alphabets, padded or not.
func DecodeCmd(value string) ([]string, error) {
	v := strings.TrimRight(value, "=")
	v = strings.NewReplacer("+", "-", "/", "_").Replace(v)
	j, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %w", ErrBadCmd, err)
	}
	var argv []string
	if err := json.Unmarshal(j, &argv); err != nil {
		return nil, fmt.Errorf("%w: want a JSON array of strings: %w", ErrBadCmd, err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("%w: empty command", ErrBadCmd)
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("%w: argument %d contains a NUL byte", ErrBadCmd, i)
		}
	}
	return argv, nil
}

// SplitCmdline splits a kernel command line into parameters the way the
// kernel does (lib/cmdline.c next_arg): whitespace separates parameters,
// double quotes group text containing spaces and are removed.
func SplitCmdline(cmdline string) []string {
	var (
		params []string
		cur    strings.Builder
		inQ    bool
		any    bool
	)
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQ = !inQ
			any = true
		case !inQ && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if any {
				params = append(params, cur.String())
				cur.Reset()
				any = false
			}
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		params = append(params, cur.String())
	}
	return params
}

// Params are the wisp parameters found on a kernel command line.
type Params struct {
	// Argv is the command to run; nil means start an interactive shell.
	Argv []string
	// RawTTY asks for echo and output processing off on the console.
	RawTTY bool
	// Cols and Rows are the console size from wisp.winsize (0 if absent
	// or malformed).
	Cols, Rows uint16
	// Quiet is false when the user asked for kernel messages (a
	// "loglevel=", "debug" or "ignore_loglevel" parameter), so init must
	// not turn the console's log level down while the command runs.
	Quiet bool
	// Root is the kernel's root= parameter: a disk (/dev/vda, LABEL=x,
	// UUID=y) init mounts and switches to, running the command there or
	// handing over to the disk's own init. Empty keeps the initramfs.
	Root string
	// RootFSType and RootFlags are rootfstype= and rootflags=.
	RootFSType, RootFlags string
	// RootRW mounts the root read-write ("rw"); the kernel's default,
	// and "ro", mount it read-only.
	RootRW bool
	// Init is init=: the program that takes over PID 1 in the new root
	// (default /sbin/init).
	Init string
}

// ParseCmdline extracts Params from /proc/cmdline's contents. When a
// parameter repeats, the last one wins, as for the kernel's own.
func ParseCmdline(cmdline string) (Params, error) {
	p := Params{Quiet: true}
	for _, param := range SplitCmdline(cmdline) {
		key, value, _ := strings.Cut(param, "=")
		switch key {
		case ParamCmd:
			argv, err := DecodeCmd(value)
			if err != nil {
				return Params{}, err
			}
			p.Argv = argv
		case ParamTTY:
			p.RawTTY = value == "raw"
		case ParamWinsize:
			p.Cols, p.Rows = parseWinsize(value)
		case "loglevel", "debug", "ignore_loglevel":
			p.Quiet = false
		case "root":
			p.Root = value
		case "rootfstype":
			p.RootFSType = value
		case "rootflags":
			p.RootFlags = value
		case "rw":
			p.RootRW = true
		case "ro":
			p.RootRW = false
		case "init":
			p.Init = value
		}
	}
	return p, nil
}

// Winsize formats a wisp.winsize parameter.
func Winsize(cols, rows uint16) string {
	return fmt.Sprintf("%s=%dx%d", ParamWinsize, cols, rows)
}

// parseWinsize reads "COLSxROWS"; anything malformed or zero gives 0, 0.
func parseWinsize(v string) (cols, rows uint16) {
	cs, rs, ok := strings.Cut(v, "x")
	if !ok {
		return 0, 0
	}
	c, err1 := strconv.ParseUint(cs, 10, 16)
	r, err2 := strconv.ParseUint(rs, 10, 16)
	if err1 != nil || err2 != nil || c == 0 || r == 0 {
		return 0, 0
	}
	return uint16(c), uint16(r)
}
