package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/wisp-vmm/wisp/vmm/console"
)

// console upgrades GET /v1/console to the raw console stream. The viewer is
// attached before the upgrade so that a busy console is a plain 409.
func (s *Server) console(w http.ResponseWriter, r *http.Request, _ []byte) error {
	if s.hub == nil {
		return newError(CodeNotFound, "this VM has no console")
	}
	write := false
	if q := r.URL.Query().Get("write"); q != "" {
		var err error
		if write, err = strconv.ParseBool(q); err != nil {
			return newError(CodeBadRequest, "write=%q is not a boolean", q)
		}
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", ConsoleProtocol) {
		return newError(CodeBadRequest, "the console needs Connection: Upgrade and Upgrade: %s", ConsoleProtocol)
	}
	v, err := s.hub.Attach(write)
	if err != nil {
		return fmt.Errorf("attach console: %w", err)
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = v.Close()
		return fmt.Errorf("take over the console connection: %w", err)
	}
	if !s.addSession(conn) {
		_ = v.Close()
		_ = conn.Close()
		return nil
	}
	defer s.endSession(conn)
	_, err = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + ConsoleProtocol + "\r\n\r\n")
	if err == nil {
		err = rw.Flush()
	}
	if err != nil {
		_ = v.Close()
		_ = conn.Close()
		s.log.Debug("console client gone before the upgrade", "err", err)
		return nil
	}
	s.log.Info("console attached", "write", write)
	s.stream(conn, rw.Reader, v)
	s.log.Info("console detached", "write", write, "dropped_bytes", v.Dropped())
	return nil
}

// stream pumps console output to conn and conn's bytes to the guest (for
// a writer; a watcher's are read and dropped) until either side ends: the
// hub closes, or the client closes or half-closes its connection. A viewer
// whose client stops reading only falls behind in the hub; it never slows
// the guest. in is conn's reader holding what the client sent with its
// request.
func (s *Server) stream(conn net.Conn, in *bufio.Reader, v *console.Viewer) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(conn, v)
		done <- struct{}{}
	}()
	go func() {
		dst := io.Discard
		if v.Writer() {
			dst = v
		}
		_, _ = io.Copy(dst, in)
		done <- struct{}{}
	}()
	<-done
	_ = v.Close()
	_ = conn.Close()
	<-done
}

func (s *Server) addSession(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) endSession(c net.Conn) {
	s.mu.Lock()
	delete(s.sessions, c)
	s.mu.Unlock()
	s.wg.Done()
}

// headerHasToken reports whether header name lists token (case-insensitive),
// as in "Connection: keep-alive, Upgrade".
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
