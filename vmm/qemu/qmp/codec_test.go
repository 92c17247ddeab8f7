package qmp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// greeting72 is what QEMU 7.2 from Debian 12 sends.
const greeting72 = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": ["oob"]}}` + "\r\n"

func TestDecodeGreeting(t *testing.T) {
	m, err := Decode([]byte(greeting72))
	require.NoError(t, err)
	require.Equal(t, KindGreeting, m.Kind)
	require.NotNil(t, m.Greeting)
	assert.Equal(t, Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian 1:7.2+dfsg-7+deb12u18"}, m.Greeting.Version)
	assert.Equal(t, []string{"oob"}, m.Greeting.Capabilities)
	assert.Equal(t, "7.2.22Debian 1:7.2+dfsg-7+deb12u18", m.Greeting.Version.String())
}

func TestDecodeResponses(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		id     uint64
		hasID  bool
		ret    string
		errCls string
	}{
		{"empty return", `{"return": {}, "id": 7}`, 7, true, `{}`, ""},
		{"status", `{"return": {"status": "running", "singlestep": false, "running": true}, "id": 12}`, 12, true,
			`{"status": "running", "singlestep": false, "running": true}`, ""},
		{"array return", `{"return": [1, 2], "id": 0}`, 0, true, `[1, 2]`, ""},
		{"null return", `{"return": null, "id": 3}`, 3, true, `null`, ""},
		{"error with id", `{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": 4}`, 4, true, "", "CommandNotFound"},
		{"error without id", `{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`, 0, false, "", "GenericError"},
		{"null id", `{"return": {}, "id": null}`, 0, false, `{}`, ""},
		{"max id", `{"return": {}, "id": 18446744073709551615}`, 18446744073709551615, true, `{}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.line))
			require.NoError(t, err)
			require.Equal(t, KindResponse, m.Kind)
			r := m.Response
			assert.Equal(t, tt.id, r.ID)
			assert.Equal(t, tt.hasID, r.HasID)
			if tt.errCls != "" {
				require.NotNil(t, r.Err)
				assert.Equal(t, tt.errCls, r.Err.Class)
				assert.Contains(t, r.Err.Error(), tt.errCls)
				assert.Nil(t, r.Return)
				return
			}
			assert.Nil(t, r.Err)
			assert.JSONEq(t, tt.ret, string(r.Return))
		})
	}
}

func TestDecodeEvents(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string // event name
		data string
		time time.Time
	}{
		{"shutdown", `{"timestamp": {"seconds": 1732566000, "microseconds": 123456}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`,
			"SHUTDOWN", `{"guest": true, "reason": "guest-shutdown"}`, time.Unix(1732566000, 123456000)},
		{"no data", `{"timestamp": {"seconds": 5, "microseconds": 0}, "event": "STOP"}`, "STOP", `{}`, time.Unix(5, 0)},
		{"null data", `{"event": "RESUME", "data": null}`, "RESUME", `{}`, time.Time{}},
		{"bad timestamp ignored", `{"event": "RESET", "timestamp": {"seconds": -1, "microseconds": 5}, "data": {"guest": true, "reason": "guest-reset"}}`,
			"RESET", `{"guest": true, "reason": "guest-reset"}`, time.Time{}},
		{"panicked", `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "GUEST_PANICKED", "data": {"action": "pause"}}`,
			"GUEST_PANICKED", `{"action": "pause"}`, time.Unix(1, 2000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.line))
			require.NoError(t, err)
			require.Equal(t, KindEvent, m.Kind)
			assert.Equal(t, tt.want, m.Event.Name)
			assert.JSONEq(t, tt.data, string(m.Event.Data))
			assert.True(t, tt.time.Equal(m.Event.Time), "time %v, want %v", m.Event.Time, tt.time)
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"empty", ``},
		{"blank", "  \r\n"},
		{"not an object", `[1,2]`},
		{"string", `"QMP"`},
		{"truncated", `{"return": {}, "id": 1`},
		{"two objects", `{"return": {}, "id": 1}{"return": {}, "id": 2}`},
		{"no known member", `{"foo": 1}`},
		{"return and error", `{"return": {}, "error": {"class": "X", "desc": ""}, "id": 1}`},
		{"event and return", `{"event": "STOP", "return": {}}`},
		{"greeting and event", `{"QMP": {}, "event": "STOP"}`},
		{"empty event name", `{"event": ""}`},
		{"event name not string", `{"event": 5}`},
		{"event data not object", `{"event": "STOP", "data": [1]}`},
		{"error not object", `{"error": "boom", "id": 1}`},
		{"error without class", `{"error": {"desc": "x"}, "id": 1}`},
		{"string id", `{"return": {}, "id": "abc"}`},
		{"negative id", `{"return": {}, "id": -1}`},
		{"fraction id", `{"return": {}, "id": 1.5}`},
		{"object id", `{"return": {}, "id": {}}`},
		{"huge id", `{"return": {}, "id": 18446744073709551616}`},
		{"greeting wrong types", `{"QMP": {"version": {"qemu": {"major": "seven"}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.line))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
		})
	}
}

func TestDecodeTooLong(t *testing.T) {
	line := `{"return": "` + strings.Repeat("x", MaxLineBytes) + `", "id": 1}`
	_, err := Decode([]byte(line))
	require.ErrorIs(t, err, ErrTooLong)
}

func TestEncodeCommand(t *testing.T) {
	tests := []struct {
		name string
		id   uint64
		cmd  string
		args any
		want string
	}{
		{"no args", 1, "query-status", nil, `{"execute":"query-status","id":1}`},
		{"map args", 2, "human-monitor-command", map[string]string{"command-line": "info mtree"},
			`{"execute":"human-monitor-command","arguments":{"command-line":"info mtree"},"id":2}`},
		{"struct args", 3, "system_reset", struct {
			A int `json:"a"`
		}{5}, `{"execute":"system_reset","arguments":{"a":5},"id":3}`},
		{"nil map is no args", 4, "cont", map[string]any(nil), `{"execute":"cont","id":4}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeCommand(tt.id, tt.cmd, tt.args)
			require.NoError(t, err)
			require.True(t, strings.HasSuffix(string(b), "\n"))
			assert.JSONEq(t, tt.want, string(b))
		})
	}
}

func TestEncodeCommandRejects(t *testing.T) {
	_, err := EncodeCommand(1, "", nil)
	require.Error(t, err)
	_, err = EncodeCommand(1, "x", []int{1})
	require.Error(t, err)
	_, err = EncodeCommand(1, "x", "string")
	require.Error(t, err)
	_, err = EncodeCommand(1, "x", make(chan int))
	require.Error(t, err)
}

// An encoded command is what QEMU parses; the id must come back in the
// reply exactly, so check the round trip through a reply.
func TestEncodeDecodeIDRoundTrip(t *testing.T) {
	for _, id := range []uint64{0, 1, 1 << 53, 1<<64 - 1} {
		b, err := EncodeCommand(id, "cont", nil)
		require.NoError(t, err)
		var cmd struct {
			ID json.RawMessage `json:"id"`
		}
		require.NoError(t, json.Unmarshal(b, &cmd))
		m, err := Decode([]byte(`{"return": {}, "id": ` + string(cmd.ID) + `}`))
		require.NoError(t, err)
		assert.Equal(t, id, m.Response.ID)
		assert.True(t, m.Response.HasID)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		greeting72,
		`{"return": {}, "id": 1}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": 2}`,
		`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
		`{"return": {}, "error": {}}`,
		`{"id": 1}`,
		`{`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := Decode(line)
		if err != nil {
			return
		}
		// A decoded message has exactly the member its kind says.
		switch m.Kind {
		case KindGreeting:
			if m.Greeting == nil || m.Response != nil || m.Event != nil {
				t.Fatalf("greeting with wrong members: %+v", m)
			}
		case KindResponse:
			if m.Response == nil || m.Greeting != nil || m.Event != nil {
				t.Fatalf("response with wrong members: %+v", m)
			}
			if (m.Response.Err == nil) == (m.Response.Return == nil) {
				t.Fatalf("response must have exactly one of return and error: %+v", m.Response)
			}
		case KindEvent:
			if m.Event == nil || m.Greeting != nil || m.Response != nil || m.Event.Name == "" {
				t.Fatalf("event with wrong members: %+v", m)
			}
			if !json.Valid(m.Event.Data) {
				t.Fatalf("event data is not JSON: %q", m.Event.Data)
			}
		default:
			t.Fatalf("unknown kind %d", m.Kind)
		}
	})
}
