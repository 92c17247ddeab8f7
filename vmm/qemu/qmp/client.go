package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by Execute once the connection is gone; the error
// also says why the reader stopped (EOF when QEMU exited).
var ErrClosed = errors.New("qmp connection closed")

// eventBuffer is how many events may wait for the consumer before the reader
// blocks. QEMU sends a handful per VM lifetime.
const eventBuffer = 64

// Client is one negotiated QMP connection. Commands may be executed from
// several goroutines; replies are matched to commands by id.
type Client struct {
	conn     net.Conn
	reader   *bufio.Reader
	greeting Greeting

	wmu sync.Mutex // one command on the wire at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *Response
	readErr error

	events    chan Event
	done      chan struct{} // closed when the reader has stopped
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
}

// Handshake reads QEMU's greeting on conn, leaves capabilities negotiation
// mode with qmp_capabilities and starts reading replies and events. ctx
// bounds the handshake only. On error conn is closed.
func Handshake(ctx context.Context, conn net.Conn) (*Client, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	c, err := handshake(conn)
	if !stop() || err != nil {
		// The handshake raced with ctx: the deadline may be set, so the
		// connection is unusable either way.
		_ = conn.Close()
		if err == nil || ctx.Err() != nil {
			err = fmt.Errorf("qmp handshake: %w", context.Cause(ctx))
		}
		return nil, err
	}
	c.start()
	return c, nil
}

func handshake(conn net.Conn) (*Client, error) {
	c := &Client{
		conn:    conn,
		nextID:  1,
		pending: make(map[uint64]chan *Response),
		events:  make(chan Event, eventBuffer),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	msg, err := readMessage(br)
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if msg.Kind != KindGreeting {
		return nil, fmt.Errorf("qmp greeting: got a %s first: %w", msg.Kind, ErrMalformed)
	}
	c.greeting = *msg.Greeting

	line, err := EncodeCommand(0, "qmp_capabilities", nil)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(line); err != nil {
		return nil, fmt.Errorf("qmp_capabilities: write: %w", err)
	}
	for {
		msg, err := readMessage(br)
		if err != nil {
			return nil, fmt.Errorf("qmp_capabilities: %w", err)
		}
		if msg.Kind == KindEvent {
			select {
			case c.events <- *msg.Event:
			default:
				return nil, fmt.Errorf("qmp_capabilities: flood of events before the reply: %w", ErrMalformed)
			}
			continue
		}
		if msg.Kind != KindResponse || !msg.Response.HasID || msg.Response.ID != 0 {
			return nil, fmt.Errorf("qmp_capabilities: unexpected %s: %w", msg.Kind, ErrMalformed)
		}
		if msg.Response.Err != nil {
			return nil, fmt.Errorf("qmp_capabilities: %w", msg.Response.Err)
		}
		break
	}
	c.reader = br
	return c, nil
}

// Greeting is what QEMU announced on connect.
func (c *Client) Greeting() Greeting { return c.greeting }

// Events delivers asynchronous events in order. It is closed when the
// connection ends. The consumer must keep draining it: the reader waits for
// room, and replies to commands wait behind it.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended (QEMU exited, Close, or a
// protocol error); Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the reader stopped (io.EOF when QEMU closed the socket), or nil
// while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// Close ends the connection and waits for the reader to stop.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closing)
		err = c.conn.Close()
	})
	<-c.done
	return err
}

// Execute runs one command and decodes its "return" member into result
// (unless result is nil). A QMP-level failure comes back as *Error.
func (c *Client) Execute(ctx context.Context, name string, args, result any) error {
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return fmt.Errorf("%s: %w (%w)", name, ErrClosed, err)
	}
	id := c.nextID
	c.nextID++
	reply := make(chan *Response, 1)
	c.pending[id] = reply
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	line, err := EncodeCommand(id, name, args)
	if err != nil {
		return err
	}
	if err := c.write(ctx, line); err != nil {
		return fmt.Errorf("%s: write: %w", name, err)
	}

	select {
	case r := <-reply:
		if r.Err != nil {
			return fmt.Errorf("%s: %w", name, r.Err)
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(r.Return, result); err != nil {
			return fmt.Errorf("%s: decode return value: %w", name, err)
		}
		return nil
	case <-c.done:
		// The reply may have been delivered just before the reader stopped.
		select {
		case r := <-reply:
			if r.Err != nil {
				return fmt.Errorf("%s: %w", name, r.Err)
			}
			if result != nil {
				if err := json.Unmarshal(r.Return, result); err != nil {
					return fmt.Errorf("%s: decode return value: %w", name, err)
				}
			}
			return nil
		default:
		}
		return fmt.Errorf("%s: %w (%w)", name, ErrClosed, c.Err())
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", name, context.Cause(ctx))
	}
}

func (c *Client) write(ctx context.Context, line []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := c.conn.Write(line)
	if !stop() {
		// ctx fired: clear the deadline for the next writer.
		_ = c.conn.SetWriteDeadline(time.Time{})
		if err == nil {
			return nil
		}
		return context.Cause(ctx)
	}
	return err
}

func (c *Client) start() {
	go c.readLoop()
}

func (c *Client) readLoop() {
	err := c.readAll()
	c.mu.Lock()
	c.readErr = err
	c.mu.Unlock()
	close(c.done)
	close(c.events)
	_ = c.conn.Close()
}

func (c *Client) readAll() error {
	for {
		msg, err := readMessage(c.reader)
		if err != nil {
			return err
		}
		switch msg.Kind {
		case KindEvent:
			select {
			case c.events <- *msg.Event:
			case <-c.closing:
				return net.ErrClosed
			}
		case KindResponse:
			r := msg.Response
			if !r.HasID {
				// QEMU answers input it could not parse without an id.
				// wisp only sends what EncodeCommand made, so this is a
				// broken peer.
				return fmt.Errorf("response without an id (%v): %w", r.Err, ErrMalformed)
			}
			c.mu.Lock()
			reply, ok := c.pending[r.ID]
			c.mu.Unlock()
			if ok {
				reply <- r // buffered; at most one reply per id
			}
			// A reply nobody waits for belongs to a command whose
			// context ended; drop it.
		case KindGreeting:
			return fmt.Errorf("second greeting: %w", ErrMalformed)
		}
	}
}

// readMessage reads one line of at most MaxLineBytes and decodes it.
func readMessage(br *bufio.Reader) (Message, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLineBytes {
			return Message{}, ErrTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return Message{}, fmt.Errorf("connection ended inside a message: %w", io.ErrUnexpectedEOF)
		default:
			return Message{}, err
		}
		if len(bytesTrim(line)) == 0 {
			line = line[:0]
			continue // blank line
		}
		return Decode(line)
	}
}

func bytesTrim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// Status is the answer to query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "shutdown", "guest-panicked", ...
}

// QueryStatus asks whether the VM's CPUs run.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the VM's CPUs.
func (c *Client) Stop(ctx context.Context) error { return c.Execute(ctx, "stop", nil, nil) }

// Cont resumes the VM's CPUs.
func (c *Client) Cont(ctx context.Context) error { return c.Execute(ctx, "cont", nil, nil) }

// SystemPowerdown presses the ACPI power button; the guest decides what to
// do about it.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once. QEMU may close the socket before its reply
// arrives; that counts as success.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}
