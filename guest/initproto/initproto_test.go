package initproto

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncodeDecodeCmd(t *testing.T) {
	tests := [][]string{
		{"true"},
		{"sh", "-c", "echo 'hello world' && exit 3"},
		{"printf", "%s\n", "quotes \" and spaces", "unicode ✓", "tab\tnewline\n", ""},
	}
	for _, argv := range tests {
		param, err := EncodeCmd(argv)
		require.NoError(t, err)
		assert.NotContains(t, param, " ")
		assert.NotContains(t, param, `"`)
		p, err := ParseCmdline("console=ttyS0 quiet " + param + " panic=-1")
		require.NoError(t, err)
		assert.Equal(t, argv, p.Argv)
	}
}

func TestEncodeCmdRejects(t *testing.T) {
	for _, argv := range [][]string{nil, {}, {""}, {"sh", "a\x00b"}} {
		_, err := EncodeCmd(argv)
		require.ErrorIs(t, err, ErrBadCmd, "%q", argv)
	}
}

func TestDecodeCmdAlphabets(t *testing.T) {
	j := []byte(`["a?>>","b"]`) // encodes with '+'/'/' in the standard alphabet
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		argv, err := DecodeCmd(enc.EncodeToString(j))
		require.NoError(t, err)
		assert.Equal(t, []string{"a?>>", "b"}, argv)
	}
}

func TestDecodeCmdRejects(t *testing.T) {
	tests := map[string]string{
		"not base64":    "!!!",
		"not JSON":      base64.RawURLEncoding.EncodeToString([]byte("sh -c x")),
		"JSON object":   base64.RawURLEncoding.EncodeToString([]byte(`{"argv":["sh"]}`)),
		"empty array":   base64.RawURLEncoding.EncodeToString([]byte(`[]`)),
		"empty program": base64.RawURLEncoding.EncodeToString([]byte(`[""]`)),
		"numbers":       base64.RawURLEncoding.EncodeToString([]byte(`[1,2]`)),
		"NUL":           base64.RawURLEncoding.EncodeToString([]byte(`["a\u0000b"]`)),
		"empty":         "",
	}
	for name, v := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeCmd(v)
			require.ErrorIs(t, err, ErrBadCmd)
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"console=ttyS0  quiet\n", []string{"console=ttyS0", "quiet"}},
		{`a="b c" d`, []string{"a=b c", "d"}},
		{`"x y"`, []string{"x y"}},
		{"\tpanic=-1 ", []string{"panic=-1"}},
		{`e=""`, []string{"e="}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, SplitCmdline(tc.in), "%q", tc.in)
	}
}

func TestParseCmdline(t *testing.T) {
	sh, err := EncodeCmd([]string{"sh"})
	require.NoError(t, err)
	ls, err := EncodeCmd([]string{"ls", "-l"})
	require.NoError(t, err)
	tests := []struct {
		name    string
		cmdline string
		want    Params
	}{
		{"no wisp params: shell", "console=ttyS0 panic=-1", Params{Quiet: true}},
		{"command", "console=ttyS0 " + sh, Params{Argv: []string{"sh"}, Quiet: true}},
		{"last wins", sh + " " + ls, Params{Argv: []string{"ls", "-l"}, Quiet: true}},
		{"raw tty", ls + " wisp.tty=raw", Params{Argv: []string{"ls", "-l"}, RawTTY: true, Quiet: true}},
		{"cooked tty", "wisp.tty=cooked", Params{Quiet: true}},
		{"loglevel asked", "loglevel=7 " + sh, Params{Argv: []string{"sh"}}},
		{"debug asked", "debug", Params{}},
		{"window size", Winsize(120, 40), Params{Cols: 120, Rows: 40, Quiet: true}},
		{"bad window size", "wisp.winsize=120 wisp.winsize=0x5", Params{Quiet: true}},
		{"huge window size", "wisp.winsize=70000x20", Params{Quiet: true}},
		{"similar names ignored", "wisp.cmdx=1 xwisp.cmd=2", Params{Quiet: true}},
		{"disk root", "root=/dev/vda rw rootfstype=ext4 rootflags=noatime init=/bin/sh", Params{
			Quiet: true, Root: "/dev/vda", RootRW: true, RootFSType: "ext4", RootFlags: "noatime", Init: "/bin/sh"}},
		{"root by label, ro wins last", "root=LABEL=rootfs rw ro", Params{Quiet: true, Root: "LABEL=rootfs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCmdline(tc.cmdline)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err = ParseCmdline("wisp.cmd=@@@")
	require.ErrorIs(t, err, ErrBadCmd)
}

func TestExitRecord(t *testing.T) {
	assert.Equal(t, "\x1b]wisp-exit-status;0\a", ExitRecord(0))
	assert.Equal(t, "\x1b]wisp-exit-status;137\a", ExitRecord(137))
	assert.Equal(t, "\x1b]wisp-exit-status;255\a", ExitRecord(256))
	assert.Equal(t, "\x1b]wisp-exit-status;255\a", ExitRecord(-1))
	assert.NotContains(t, ExitRecord(42), "\n")
}

// filterAll feeds chunks through a filter and flushes it.
func filterAll(t *testing.T, chunks ...string) (string, int, bool) {
	t.Helper()
	var out bytes.Buffer
	f := NewExitFilter(&out)
	for _, c := range chunks {
		n, err := f.Write([]byte(c))
		require.NoError(t, err)
		require.Equal(t, len(c), n)
	}
	require.NoError(t, f.Flush())
	status, ok := f.Status()
	return out.String(), status, ok
}

func TestExitFilter(t *testing.T) {
	const colored = "\x1b[1;31mred\x1b[0m\r\n"
	tests := []struct {
		name   string
		chunks []string
		out    string
		status int
		seen   bool
	}{
		{"plain output then record", []string{"hello\r\n" + ExitRecord(3)}, "hello\r\n", 3, true},
		{"no trailing newline", []string{"hello" + ExitRecord(0)}, "hello", 0, true},
		{"record split byte by byte", strings.Split("out"+ExitRecord(42)+"tail", ""), "out", 42, true},
		{"kernel lines after the record are dropped", []string{ExitRecord(1) + "[    1.2] reboot: Power down\r\n"}, "", 1, true},
		{"escape sequences pass through", []string{colored, ExitRecord(0)}, colored, 0, true},
		{"escape split across writes", []string{"a\x1b", "[0mb", ExitRecord(7)}, "a\x1b[0mb", 7, true},
		{"near miss is output", []string{"\x1b]wisp-exit-status;x\a" + ExitRecord(5)}, "\x1b]wisp-exit-status;x\a", 5, true},
		{"too many digits is output", []string{"\x1b]wisp-exit-status;1234\a"}, "\x1b]wisp-exit-status;1234\a", 0, false},
		{"over 255 is output", []string{"\x1b]wisp-exit-status;256\a"}, "\x1b]wisp-exit-status;256\a", 0, false},
		{"no digits is output", []string{"\x1b]wisp-exit-status;\a"}, "\x1b]wisp-exit-status;\a", 0, false},
		{"double escape then record", []string{"\x1b" + ExitRecord(9)}, "\x1b", 9, true},
		{"held prefix flushed when the guest dies", []string{"x\x1b]wisp-ex"}, "x\x1b]wisp-ex", 0, false},
		{"no record", []string{"just output\r\n"}, "just output\r\n", 0, false},
		{"only the first record counts", []string{ExitRecord(2) + ExitRecord(4)}, "", 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, status, seen := filterAll(t, tc.chunks...)
			assert.Equal(t, tc.out, out)
			assert.Equal(t, tc.seen, seen)
			assert.Equal(t, tc.status, status)
		})
	}
}

func TestExitFilterHoldsOnlyPossibleRecords(t *testing.T) {
	var out bytes.Buffer
	f := NewExitFilter(&out)
	_, err := f.Write([]byte("line\r\n"))
	require.NoError(t, err)
	assert.Equal(t, "line\r\n", out.String(), "ordinary output is not delayed")
	_, err = f.Write([]byte("\x1b]wisp"))
	require.NoError(t, err)
	assert.Equal(t, "line\r\n", out.String(), "a possible record start is held")
	_, err = f.Write([]byte("!"))
	require.NoError(t, err)
	assert.Equal(t, "line\r\n\x1b]wisp!", out.String(), "released as soon as it cannot be a record")
}

func FuzzExitFilter(f *testing.F) {
	f.Add([]byte("hello\r\n"), 3)
	f.Add([]byte("\x1b]wisp-exit-status;"), 0)
	f.Fuzz(func(t *testing.T, prefix []byte, status int) {
		// Whatever comes before the record is either passed through
		// unchanged, or contains a record itself; output never invents bytes.
		var out bytes.Buffer
		fl := NewExitFilter(&out)
		_, err := fl.Write(append(append([]byte(nil), prefix...), ExitRecord(status)...))
		require.NoError(t, err)
		require.NoError(t, fl.Flush())
		got, ok := fl.Status()
		require.True(t, ok)
		if !bytes.Contains(prefix, []byte(exitRecordPrefix)) {
			want := status
			if want < 0 || want > 255 {
				want = 255
			}
			require.Equal(t, want, got)
			require.Equal(t, string(prefix), out.String())
		}
		require.True(t, bytes.HasPrefix(prefix, out.Bytes()))
	})
}
