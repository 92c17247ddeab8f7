package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wisp-vmm/wisp/vmm/console"
)

// Server serves a VM's control API.
type Server struct {
	ctl    Controller
	hub    *console.Hub
	log    *slog.Logger
	routes map[string]map[string]handler // path → method → handler
	http   *http.Server

	// life ends when the server is closed; work a client started (a stop)
	// runs until then even if the client goes away.
	life    context.Context
	endLife context.CancelFunc

	mu       sync.Mutex
	sessions map[net.Conn]struct{} // hijacked console connections
	closing  bool
	wg       sync.WaitGroup // console sessions
}

// handler serves one route. body is the request body, already read and
// bounded by MaxBodyBytes.
type handler func(w http.ResponseWriter, r *http.Request, body []byte) error

// NewServer returns a server for ctl. hub is the VM's console; nil: the
// console route answers 404. log may be nil.
func NewServer(ctl Controller, hub *console.Hub, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{ctl: ctl, hub: hub, log: log, sessions: map[net.Conn]struct{}{}}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.routes = map[string]map[string]handler{
		"/v1/status": {http.MethodGet: s.status},
		"/v1/pause":  {http.MethodPost: s.pause},
		"/v1/resume": {http.MethodPost: s.resume},
		"/v1/stop":   {http.MethodPost: s.stop},
		consolePath:  {http.MethodGet: s.console},
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts connections on ln until the server is closed; then it
// returns http.ErrServerClosed, like http.Server.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(ln)
}

// Close stops the server at once: listeners, requests and console sessions.
func (s *Server) Close() error {
	s.endLife()
	err := s.http.Close()
	s.endSessions()
	return err
}

// Shutdown stops accepting, waits for requests in flight until ctx ends,
// and ends console sessions (they are streams with no natural end).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.endLife()
	s.endSessions()
	return err
}

func (s *Server) endSessions() {
	s.mu.Lock()
	s.closing = true
	for c := range s.sessions {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// ServeHTTP routes a request and turns a handler's error into the JSON
// error response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := s.route(w, r)
	if err == nil {
		return
	}
	e := asError(err)
	if e.Code == CodeInternal {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("api request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if e.Code == CodeMethodNotAllowed {
		w.Header().Set("Allow", strings.Join(slices.Sorted(maps.Keys(s.routes[r.URL.Path])), ", "))
	}
	writeJSON(w, e.Status, e)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) error {
	methods, ok := s.routes[r.URL.Path]
	if !ok {
		return newError(CodeNotFound, "no route %s", r.URL.Path)
	}
	h, ok := methods[r.Method]
	if !ok {
		return newError(CodeMethodNotAllowed, "%s does not take %s", r.URL.Path, r.Method)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError(CodeTooLarge, "request body over %d bytes", MaxBodyBytes)
		}
		return newError(CodeBadRequest, "read request body: %v", err)
	}
	return h(w, r, body)
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request, _ []byte) error {
	writeJSON(w, http.StatusOK, s.ctl.Status())
	return nil
}

func (s *Server) pause(w http.ResponseWriter, _ *http.Request, _ []byte) error {
	if err := s.ctl.Pause(); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	writeJSON(w, http.StatusOK, s.ctl.Status())
	return nil
}

func (s *Server) resume(w http.ResponseWriter, _ *http.Request, _ []byte) error {
	if err := s.ctl.Resume(); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	writeJSON(w, http.StatusOK, s.ctl.Status())
	return nil
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, body []byte) error {
	opts, err := decodeStop(body)
	if err != nil {
		return err
	}
	// A stop, once asked for, is carried out even if the client hangs up
	// (it cannot be taken back halfway); only closing the server cuts it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	if err := s.ctl.Stop(ctx, opts); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	writeJSON(w, http.StatusOK, s.ctl.Status())
	return nil
}

// decodeStop reads POST /v1/stop's body; an empty body is a graceful stop
// with the default timeout.
func decodeStop(body []byte) (StopOptions, error) {
	var req stopRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return StopOptions{}, newError(CodeBadRequest, "stop request: %v", err)
		}
		if dec.More() {
			return StopOptions{}, newError(CodeBadRequest, "stop request: data after the JSON object")
		}
	}
	switch max := MaxStopTimeout.Seconds(); {
	case req.TimeoutSeconds < 0:
		return StopOptions{}, newError(CodeBadRequest, "timeout_seconds %g is negative", req.TimeoutSeconds)
	case req.TimeoutSeconds > max || math.IsNaN(req.TimeoutSeconds):
		return StopOptions{}, newError(CodeBadRequest, "timeout_seconds %g is over the maximum of %g", req.TimeoutSeconds, max)
	}
	opts := StopOptions{Force: req.Force, Timeout: time.Duration(req.TimeoutSeconds * float64(time.Second))}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultStopTimeout
	}
	return opts, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status line is out; a client that went away is not our error.
	_ = json.NewEncoder(w).Encode(v)
}
