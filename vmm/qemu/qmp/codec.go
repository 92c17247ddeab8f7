// Package qmp speaks the QEMU Machine Protocol: JSON objects over a stream
// socket, one per line. The codec in this file is pure (bytes in, values out)
// so it can be fuzzed; client.go adds the connection, command ids and the
// event channel.
package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// MaxLineBytes bounds one QMP message. QEMU's replies to the commands wisp
// sends are a few hundred bytes; the bound keeps a broken or hostile peer
// from making the reader buffer without end.
const MaxLineBytes = 1 << 20

// Errors the codec returns; test with errors.Is.
var (
	ErrMalformed = errors.New("malformed QMP message")
	ErrTooLong   = errors.New("QMP message too long")
)

// Kind says which of the three QMP message shapes a line holds.
type Kind int

// Message kinds.
const (
	KindGreeting Kind = iota + 1
	KindResponse
	KindEvent
)

func (k Kind) String() string {
	switch k {
	case KindGreeting:
		return "greeting"
	case KindResponse:
		return "response"
	case KindEvent:
		return "event"
	}
	return "unknown"
}

// Version is QEMU's version from the greeting.
type Version struct {
	Major   int
	Minor   int
	Micro   int
	Package string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d%s", v.Major, v.Minor, v.Micro, v.Package)
}

// Greeting is the first message QEMU sends on a new monitor connection.
type Greeting struct {
	Version      Version
	Capabilities []string
}

// Error is a command failure as QEMU reports it; it is a Go error so callers
// can errors.As it out of Execute's result.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp error %s: %s", e.Class, e.Desc)
}

// Response answers one command. ID is the id wisp sent with the command; a
// response without one (QEMU answers unparsable input that way) has HasID
// false.
type Response struct {
	ID     uint64
	HasID  bool
	Return json.RawMessage // nil when Err is set
	Err    *Error
}

// Event is an asynchronous notification such as SHUTDOWN or STOP.
type Event struct {
	Name string
	Data json.RawMessage // "{}" when QEMU sent no data
	// Time is the host time QEMU stamped on the event; zero if it sent none.
	Time time.Time
}

// Message is one decoded line: exactly one of the pointers is set, as Kind
// says.
type Message struct {
	Kind     Kind
	Greeting *Greeting
	Response *Response
	Event    *Event
}

// wire is the union of every top-level key QMP uses. Pointers and
// RawMessage distinguish "absent" from "null".
type wire struct {
	QMP       *wireGreeting   `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     json.RawMessage `json:"error"`
	Event     *string         `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *wireTimestamp  `json:"timestamp"`
	ID        json.RawMessage `json:"id"`
}

type wireGreeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

type wireTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// Decode parses one QMP message (one line, with or without its line end).
// Anything that is not exactly one greeting, response or event is an error
// wrapping ErrMalformed.
func Decode(line []byte) (Message, error) {
	line = bytes.TrimSpace(line)
	if len(line) > MaxLineBytes {
		return Message{}, fmt.Errorf("%d bytes: %w", len(line), ErrTooLong)
	}
	if len(line) == 0 || line[0] != '{' {
		return Message{}, fmt.Errorf("want a JSON object: %w", ErrMalformed)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&w); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return Message{}, fmt.Errorf("trailing data after the object: %w", ErrMalformed)
	}

	shapes := 0
	for _, present := range []bool{w.QMP != nil, w.Return != nil || w.Error != nil, w.Event != nil} {
		if present {
			shapes++
		}
	}
	if shapes != 1 {
		return Message{}, fmt.Errorf("want exactly one of QMP, return/error, event: %w", ErrMalformed)
	}

	switch {
	case w.QMP != nil:
		g := &Greeting{
			Version: Version{
				Major:   w.QMP.Version.QEMU.Major,
				Minor:   w.QMP.Version.QEMU.Minor,
				Micro:   w.QMP.Version.QEMU.Micro,
				Package: w.QMP.Version.Package,
			},
			Capabilities: w.QMP.Capabilities,
		}
		return Message{Kind: KindGreeting, Greeting: g}, nil
	case w.Event != nil:
		return decodeEvent(w)
	default:
		return decodeResponse(w)
	}
}

func decodeEvent(w wire) (Message, error) {
	if *w.Event == "" {
		return Message{}, fmt.Errorf("event without a name: %w", ErrMalformed)
	}
	ev := &Event{Name: *w.Event, Data: json.RawMessage("{}")}
	if w.Data != nil && !isNull(w.Data) {
		if !isObject(w.Data) {
			return Message{}, fmt.Errorf("event %s: data is not an object: %w", ev.Name, ErrMalformed)
		}
		ev.Data = w.Data
	}
	if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
		ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
	}
	return Message{Kind: KindEvent, Event: ev}, nil
}

func decodeResponse(w wire) (Message, error) {
	if w.Return != nil && w.Error != nil {
		return Message{}, fmt.Errorf("response has both return and error: %w", ErrMalformed)
	}
	r := &Response{}
	if w.ID != nil && !isNull(w.ID) {
		id, err := parseID(w.ID)
		if err != nil {
			return Message{}, err
		}
		r.ID, r.HasID = id, true
	}
	if w.Error != nil {
		var e Error
		if err := json.Unmarshal(w.Error, &e); err != nil {
			return Message{}, fmt.Errorf("error member: %w: %w", ErrMalformed, err)
		}
		if e.Class == "" {
			return Message{}, fmt.Errorf("error without a class: %w", ErrMalformed)
		}
		r.Err = &e
		return Message{Kind: KindResponse, Response: r}, nil
	}
	r.Return = w.Return
	return Message{Kind: KindResponse, Response: r}, nil
}

// parseID reads the ids wisp sends: non-negative integers. QEMU echoes the id
// verbatim, so anything else did not come from this client.
func parseID(raw json.RawMessage) (uint64, error) {
	id, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("id %.40s is not an id this client sends: %w", raw, ErrMalformed)
	}
	return id, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// command is what goes on the wire for Execute.
type command struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	ID        uint64          `json:"id"`
}

// EncodeCommand renders one command with its id, ending in a newline. args
// may be nil or anything encoding/json renders as an object (a nil map or
// pointer counts as no arguments).
func EncodeCommand(id uint64, name string, args any) ([]byte, error) {
	if name == "" {
		return nil, errors.New("qmp: empty command name")
	}
	cmd := command{Execute: name, ID: id}
	if args != nil {
		a, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("qmp: encode arguments of %s: %w", name, err)
		}
		switch {
		case isNull(a):
		case isObject(a):
			cmd.Arguments = a
		default:
			return nil, fmt.Errorf("qmp: %s: arguments must encode as a JSON object, not %.20s", name, a)
		}
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("qmp: encode %s: %w", name, err)
	}
	return append(b, '\n'), nil
}
