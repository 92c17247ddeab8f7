package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/api"
	"github.com/wisp-vmm/wisp/vmm/console"
)

// API limits and media types.
const (
	// MaxBodyBytes bounds a request body: a VM spec is a few hundred
	// bytes, so anything near this is a mistake or an attack.
	MaxBodyBytes = 1 << 20
	// MaxStopTimeout bounds a stop's timeout_seconds, so a typo cannot
	// park a VM in "stopping" for years; it is what the VMM accepts.
	MaxStopTimeout = api.MaxStopTimeout
	// ConsoleProtocol is the Upgrade token of the console endpoint.
	ConsoleProtocol = "wisp-console"

	contentJSON   = "application/json"
	contentNDJSON = "application/x-ndjson"
	contentText   = "text/plain; charset=utf-8"

	// logPollInterval is how often a followed console log is looked at
	// for new bytes: the VMM appends to a plain file, which has no
	// change notification that works on every file system.
	logPollInterval = 200 * time.Millisecond
)

// ErrSocketInUse is an API socket another agent answers on.
var ErrSocketInUse = errors.New("socket in use")

// Error codes of the API's error body.
const (
	CodeNotFound         = "not_found"
	CodeExists           = "exists"
	CodeConflict         = "conflict"
	CodeInvalid          = "invalid"
	CodeBadRequest       = "bad_request"
	CodeTooLarge         = "too_large"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeUpgradeRequired  = "upgrade_required"
	CodeInternal         = "internal"
)

// ErrorBody is the JSON body of every failed request.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the request field at fault, for code "invalid".
	Field string `json:"field,omitempty"`
}

// OpRequest is the optional body of an operation (POST
// /v1/vms/{name}/{op}); force and timeout_seconds matter to stop and
// restart.
type OpRequest struct {
	Force          bool    `json:"force,omitempty"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}

// httpError is an error with the status and body the API answers it with.
type httpError struct {
	status int
	body   ErrorBody
}

func (e *httpError) Error() string { return e.body.Message }

func badRequest(format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, body: ErrorBody{Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}}
}

func invalidField(field, format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, body: ErrorBody{Code: CodeInvalid, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}}
}

// toHTTPError maps the agent's errors to statuses through model's
// sentinels; anything unexpected is a bug, 500.
func toHTTPError(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var fe *model.FieldError
	switch {
	case errors.As(err, &fe):
		return &httpError{status: http.StatusBadRequest, body: ErrorBody{Code: CodeInvalid, Field: fe.Field, Message: err.Error()}}
	case errors.Is(err, model.ErrInvalid):
		return &httpError{status: http.StatusBadRequest, body: ErrorBody{Code: CodeInvalid, Message: err.Error()}}
	case errors.Is(err, model.ErrNotFound):
		return &httpError{status: http.StatusNotFound, body: ErrorBody{Code: CodeNotFound, Message: err.Error()}}
	case errors.Is(err, model.ErrExists):
		return &httpError{status: http.StatusConflict, body: ErrorBody{Code: CodeExists, Message: err.Error()}}
	case errors.Is(err, model.ErrConflict):
		return &httpError{status: http.StatusConflict, body: ErrorBody{Code: CodeConflict, Message: conflictMessage(err)}}
	case errors.Is(err, console.ErrConsoleBusy), errors.Is(err, vmm.ErrBadTransition):
		// The VMM refused: another viewer types, or the VM moved on
		// since the agent last looked.
		return &httpError{status: http.StatusConflict, body: ErrorBody{Code: CodeConflict, Message: err.Error()}}
	}
	return &httpError{status: http.StatusInternalServerError, body: ErrorBody{Code: CodeInternal, Message: err.Error()}}
}

// conflictMessage is the refusal as the user should read it: the store
// prefixes "update vm X: ", which says nothing the refusal does not.
func conflictMessage(err error) string {
	var te *model.TransitionError
	if errors.As(err, &te) {
		return te.Error()
	}
	msg := err.Error()
	if i := strings.Index(msg, ": cannot "); i >= 0 && strings.HasPrefix(msg, "update vm ") {
		return msg[i+2:]
	}
	return msg
}

// newHTTPServer serves the agent's API. There is no WriteTimeout: console,
// logs and events stream for as long as the client stays. Shutdown ends
// those streams through the base context.
func newHTTPServer(a *Agent) *http.Server {
	base, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(cancel)
	return srv
}

// Handler is the agent's API: the routes of openapi.json.
func (a *Agent) Handler() http.Handler {
	h := &handlers{a: a}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vms", h.list)
	mux.HandleFunc("POST /v1/vms", h.create)
	mux.HandleFunc("GET /v1/vms/{name}", h.get)
	mux.HandleFunc("DELETE /v1/vms/{name}", h.delete)
	for _, op := range []model.Op{model.OpStart, model.OpStop, model.OpPause, model.OpResume, model.OpRestart} {
		mux.HandleFunc("POST /v1/vms/{name}/"+string(op), h.op(op))
	}
	mux.HandleFunc("GET /v1/vms/{name}/console", h.console)
	mux.HandleFunc("GET /v1/vms/{name}/logs", h.logs)
	mux.HandleFunc("GET /v1/vms/{name}/events", h.events)
	mux.HandleFunc("GET /v1/events", h.events)
	mux.HandleFunc("GET /v1/host", h.host)
	mux.HandleFunc("GET /openapi.json", h.openapi)
	h.scheduleRoutes(mux)
	h.costRoutes(mux)
	return &middleware{log: a.log, mux: mux}
}

// middleware logs each request, turns a panic into a 500, and answers
// unknown routes and methods in JSON rather than the mux's plain text.
type middleware struct {
	log *slog.Logger
	mux *http.ServeMux
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			m.log.Error(fmt.Sprintf("api: panic serving %s %s: %v", r.Method, r.URL.Path, p), "stack", string(debug.Stack()))
			if !sw.wroteHeader {
				writeError(sw, &httpError{status: http.StatusInternalServerError, body: ErrorBody{Code: CodeInternal, Message: "internal error; the agent's log has the details"}})
			}
		}
		m.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
			"status", sw.status(), "duration", time.Since(start))
	}()
	if _, pattern := m.mux.Handler(r); pattern == "" || !cleanPath(r.URL.EscapedPath()) {
		m.noRoute(sw, r)
		return
	}
	m.mux.ServeHTTP(sw, r)
}

// noRoute answers a request no pattern takes: 405 when the path exists
// with other methods, else 404. A path that is not clean ("..", "//") is
// 404 too, not the mux's redirect: an API client should not be sent
// elsewhere for a name it made up.
func (m *middleware) noRoute(w http.ResponseWriter, r *http.Request) {
	h, _ := m.mux.Handler(r)
	probe := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if cleanPath(r.URL.EscapedPath()) && probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		writeError(w, &httpError{status: http.StatusMethodNotAllowed, body: ErrorBody{Code: CodeMethodNotAllowed,
			Message: fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, probe.header.Get("Allow"))}})
		return
	}
	writeError(w, &httpError{status: http.StatusNotFound, body: ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)}})
}

// cleanPath reports whether p has no empty, "." or ".." segment: the mux
// would redirect such a path, and the API refuses it instead.
func cleanPath(p string) bool {
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// headerRecorder keeps what the mux's own 404/405 handler says, which is
// all noRoute needs from it.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }

// statusWriter remembers the status for the log; Unwrap lets
// http.ResponseController reach Flush and Hijack underneath.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.code, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if !s.wroteHeader {
		return 0
	}
	return s.code
}

// handlers holds the routes' functions.
type handlers struct {
	a *Agent
}

func (h *handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	he := toHTTPError(err)
	if he.status == http.StatusInternalServerError {
		h.a.log.Error("api: "+err.Error(), "method", r.Method, "path", r.URL.Path)
	}
	writeError(w, he)
}

func writeError(w http.ResponseWriter, he *httpError) {
	writeJSON(w, he.status, he.body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a type that cannot be JSON gets here: a bug.
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorBody{Code: CodeInternal, Message: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", contentJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decodeBody reads one JSON value into v: at most MaxBodyBytes, no
// unknown fields, nothing after it. An empty body is allowed only when
// optional.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		if optional {
			return nil
		}
		return badRequest("empty body; send a JSON object")
	}
	if err == nil {
		// One value only: trailing bytes are a client bug worth saying.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("data after the JSON object")
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	return bodyError(err)
}

// bodyError says what is wrong with a request body the decoder refused.
func bodyError(err error) error {
	if err == nil {
		return nil
	}
	var (
		mbe *http.MaxBytesError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.As(err, &mbe):
		return &httpError{status: http.StatusRequestEntityTooLarge, body: ErrorBody{Code: CodeTooLarge,
			Message: fmt.Sprintf("request body over %d bytes", mbe.Limit)}}
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			field = "body"
		}
		return invalidField(field, "want a JSON %s, got %s", ute.Type, ute.Value)
	case errors.As(err, &se):
		return badRequest("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: the body ends early")
	}
	// The decoder says `json: unknown field "x"` and has no type for it.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field := strings.Trim(name, `"`)
		return invalidField(field, "unknown field")
	}
	return badRequest("bad request body: %v", err)
}

// queryBool reads a true/false query parameter; absent is def.
func queryBool(r *http.Request, key string, def bool) (bool, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return def, invalidField(key, "%q is not true or false", s)
	}
	return v, nil
}

// queryUint reads a non-negative integer query parameter; absent is 0.
func queryUint(r *http.Request, key string) (uint64, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, invalidField(key, "%q is not a non-negative integer", s)
	}
	return v, nil
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) {
	vms, err := h.a.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vms)
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		h.fail(w, r, err)
		return
	}
	vm, err := h.a.Create(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/vms/"+vm.Name)
	writeJSON(w, http.StatusCreated, vm)
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) {
	vm, err := h.a.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (h *handlers) delete(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.a.Delete(r.Context(), r.PathValue("name"), force); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) op(op model.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		wait, err := queryBool(r, "wait", true)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		var req OpRequest
		if err := decodeBody(w, r, &req, true); err != nil {
			h.fail(w, r, err)
			return
		}
		if req.TimeoutSeconds < 0 || req.TimeoutSeconds > MaxStopTimeout.Seconds() {
			h.fail(w, r, invalidField("timeout_seconds", "%g; want 0 (the default, %s) to %g", req.TimeoutSeconds, DefaultStopTimeout, MaxStopTimeout.Seconds()))
			return
		}
		opts := OpOptions{
			Force:   req.Force,
			Timeout: time.Duration(req.TimeoutSeconds * float64(time.Second)),
			NoWait:  !wait,
		}
		vm, err := h.a.Do(r.Context(), r.PathValue("name"), op, opts)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		status := http.StatusOK
		if !wait {
			status = http.StatusAccepted
		}
		writeJSON(w, status, vm)
	}
}

func (h *handlers) host(w http.ResponseWriter, r *http.Request) {
	hi, err := h.a.Host(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hi)
}

func (h *handlers) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", contentJSON)
	_, _ = w.Write(OpenAPIDocument())
}

// events answers GET /v1/events and GET /v1/vms/{name}/events: the
// matching history as one JSON array, or with follow=true as NDJSON that
// goes on with new events until the client leaves or limit is reached.
func (h *handlers) events(w http.ResponseWriter, r *http.Request) {
	q, follow, err := eventQuery(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if !follow {
		evs, err := h.a.Events(ctx, q)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if evs == nil {
			evs = []model.Event{}
		}
		writeJSON(w, http.StatusOK, evs)
		return
	}
	// Subscribe before reading the history, so an event appended in
	// between wakes the loop instead of being missed.
	wake := h.a.Follow(ctx)
	left := q.Limit // 0: no end
	rc := http.NewResponseController(w)
	started := false
	for {
		if left > 0 {
			q.Limit = left
		}
		evs, err := h.a.Events(ctx, q)
		if err != nil {
			if !started {
				h.fail(w, r, err)
				return
			}
			h.a.log.Warn("api: events stream: "+err.Error(), "path", r.URL.Path)
			return
		}
		if !started {
			w.Header().Set("Content-Type", contentNDJSON)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		for _, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil {
				h.a.log.Error("api: encode event: " + err.Error())
				return
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return
			}
			q.AfterSeq = ev.Seq
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if q.Limit > 0 {
			if left -= len(evs); left <= 0 {
				return
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

func eventQuery(r *http.Request) (q store.EventQuery, follow bool, err error) {
	q.VM = r.PathValue("name")
	if q.VM == "" {
		q.VM = r.URL.Query().Get("vm")
	}
	if q.AfterSeq, err = queryUint(r, "after"); err != nil {
		return q, false, err
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return q, false, err
	}
	q.Limit = int(limit)
	follow, err = queryBool(r, "follow", false)
	return q, follow, err
}

// logs answers GET /v1/vms/{name}/logs: the VM's console log (its last
// tail bytes when asked), then with follow=true what is appended to it,
// until the client leaves or the VM is deleted.
func (h *handlers) logs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := model.ValidName(name); err != nil {
		h.fail(w, r, err)
		return
	}
	follow, err := queryBool(r, "follow", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	tail := int64(-1)
	if r.URL.Query().Has("tail") {
		n, err := queryUint(r, "tail")
		if err != nil {
			h.fail(w, r, err)
			return
		}
		tail = int64(n)
	}
	path, err := h.a.ConsoleLog(name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", contentText)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush() // the client knows the VM exists before any output

	var (
		f   *os.File
		off int64
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	tick := time.NewTicker(logPollInterval)
	defer tick.Stop()
	for {
		if f == nil {
			// A VM that never ran has no log yet; it appears at its
			// first start.
			f, err = os.Open(path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				h.a.log.Warn("api: console log: "+err.Error(), "vm", name)
				return
			}
			if f != nil && tail >= 0 {
				if fi, err := f.Stat(); err == nil && fi.Size() > tail {
					off = fi.Size() - tail
				}
			}
		}
		if f != nil {
			if fi, err := f.Stat(); err == nil && fi.Size() < off {
				off = 0 // truncated: start over
			}
			n, err := io.Copy(w, io.NewSectionReader(f, off, 1<<62))
			off += n
			if err != nil {
				return // the client went away
			}
			if n > 0 {
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
		if !follow {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := h.a.store.GetVM(name); errors.Is(err, model.ErrNotFound) {
			return
		}
	}
}

// console answers GET /v1/vms/{name}/console: after "101 Switching
// Protocols" the connection carries the VM's serial console both ways
// until either side closes it.
func (h *handlers) console(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", ConsoleProtocol) {
		w.Header().Set("Upgrade", ConsoleProtocol)
		w.Header().Set("Connection", "Upgrade")
		writeError(w, &httpError{status: http.StatusUpgradeRequired, body: ErrorBody{Code: CodeUpgradeRequired,
			Message: "the console is a raw byte stream: send Connection: Upgrade and Upgrade: " + ConsoleProtocol}})
		return
	}
	name := r.PathValue("name")
	if err := model.ValidName(name); err != nil {
		h.fail(w, r, err)
		return
	}
	write, err := queryBool(r, "write", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// Attach before the upgrade, so a VM that is not there or not
	// running is an ordinary JSON error.
	vmConn, err := h.a.Console(r.Context(), name, write)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer vmConn.Close()
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.fail(w, r, fmt.Errorf("console: take over the connection: %w", err))
		return
	}
	defer client.Close()
	if _, err := io.WriteString(client, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+ConsoleProtocol+"\r\n\r\n"); err != nil {
		return
	}
	h.a.log.Debug("console attached", "vm", name, "write", write)
	proxy(r.Context(), client, buf.Reader, vmConn)
	h.a.log.Debug("console detached", "vm", name)
}

// proxy copies between the client and the VM's console until either side
// ends or ctx does, then closes both. fromClient holds what the server
// already read past the request.
func proxy(ctx context.Context, client net.Conn, fromClient *bufio.Reader, vm net.Conn) {
	closeBoth := func() {
		client.Close()
		vm.Close()
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(vm, fromClient)
		closeBoth()
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, vm)
		closeBoth()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// headerHasToken reports whether a comma-separated header holds token,
// case-insensitively ("Connection: keep-alive, Upgrade").
func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// listen opens the API socket at cfg.Socket: root:Group 0660 when the
// group exists, else 0600. The socket is made in a private directory and
// renamed into place once its mode and group are right, so there is no
// moment when anyone may connect.
func (a *Agent) listen() (net.Listener, error) {
	path := a.cfg.Socket
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("api socket directory: %w", err)
	}
	if err := clearSocket(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".s")
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	// The listener must not unlink the name it was made under at Close;
	// Run removes the real one.
	ln.SetUnlinkOnClose(false)
	if err := a.secureSocket(tmp); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	return ln, nil
}

// secureSocket gives the socket to Group with mode 0660, or keeps it the
// agent user's alone when there is no such group.
func (a *Agent) secureSocket(path string) error {
	mode := os.FileMode(0o600)
	if g, err := user.LookupGroup(a.cfg.Group); err != nil {
		a.log.Warn(fmt.Sprintf("api socket %s is root's alone (mode 0600): group %q: %v; create the group to let its members use wisp vm", a.cfg.Socket, a.cfg.Group, err))
	} else if gid, err := strconv.Atoi(g.Gid); err != nil {
		a.log.Warn(fmt.Sprintf("api socket %s is root's alone (mode 0600): group %q has gid %q", a.cfg.Socket, a.cfg.Group, g.Gid))
	} else if err := os.Lchown(path, -1, gid); err != nil {
		a.log.Warn(fmt.Sprintf("api socket %s is root's alone (mode 0600): give it to group %q: %v", a.cfg.Socket, a.cfg.Group, err))
	} else {
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("api socket %s: %w", a.cfg.Socket, err)
	}
	return nil
}

// clearSocket makes way for a new socket at path: nothing there is fine, a
// socket nobody answers on (left by an agent that died) is removed, a live
// one or anything that is not a socket is refused.
func clearSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api socket %s exists and is not a socket (%s); move it away: %w", path, fi.Mode().Type(), model.ErrExists)
	}
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another agent listens on %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket %s: is another agent there? %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale api socket %s: %w", path, err)
	}
	return nil
}
