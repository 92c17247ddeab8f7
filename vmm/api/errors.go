package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/wisp-vmm/wisp/vmm"
	"github.com/wisp-vmm/wisp/vmm/console"
)

// Code is an error's machine-readable kind, as sent in the JSON body.
type Code string

// Error codes and the HTTP status each goes with.
const (
	CodeBadRequest       Code = "bad_request"        // 400: malformed JSON, unknown field, bad value
	CodeNotFound         Code = "not_found"          // 404: no such route
	CodeMethodNotAllowed Code = "method_not_allowed" // 405
	CodeConflict         Code = "conflict"           // 409: the VM's state does not allow it
	CodeConsoleBusy      Code = "console_busy"       // 409: another viewer is writing
	CodeTooLarge         Code = "too_large"          // 413: body over MaxBodyBytes
	CodeInternal         Code = "internal"           // 500: anything else
)

// Sentinels for the codes; an *Error matches its code's with errors.Is.
var (
	ErrBadRequest       = errors.New("bad request")
	ErrNotFound         = errors.New("not found")
	ErrMethodNotAllowed = errors.New("method not allowed")
	ErrTooLarge         = errors.New("request body too large")
	ErrInternal         = errors.New("internal error")
	// A conflict is the VM refusing a state change: it matches
	// vmm.ErrBadTransition, on the client as on the server.
	ErrConflict = vmm.ErrBadTransition
	// A busy console matches console.ErrConsoleBusy.
	ErrConsoleBusy = console.ErrConsoleBusy
)

var codeSentinels = map[Code]error{
	CodeBadRequest:       ErrBadRequest,
	CodeNotFound:         ErrNotFound,
	CodeMethodNotAllowed: ErrMethodNotAllowed,
	CodeConflict:         ErrConflict,
	CodeConsoleBusy:      ErrConsoleBusy,
	CodeTooLarge:         ErrTooLarge,
	CodeInternal:         ErrInternal,
}

var codeStatus = map[Code]int{
	CodeBadRequest:       http.StatusBadRequest,
	CodeNotFound:         http.StatusNotFound,
	CodeMethodNotAllowed: http.StatusMethodNotAllowed,
	CodeConflict:         http.StatusConflict,
	CodeConsoleBusy:      http.StatusConflict,
	CodeTooLarge:         http.StatusRequestEntityTooLarge,
	CodeInternal:         http.StatusInternalServerError,
}

// Error is a failed request, as the server sends it and the client returns
// it. errors.Is matches its code's sentinel (ErrConflict, ErrNotFound, ...).
type Error struct {
	// Status is the HTTP status; on the server it follows from Code.
	Status  int    `json:"-"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := codeSentinels[e.Code]
	return ok && s == target
}

func newError(code Code, format string, args ...any) *Error {
	return &Error{Status: codeStatus[code], Code: code, Message: fmt.Sprintf(format, args...)}
}

// asError turns whatever a handler or the Controller returned into the
// error sent to the client.
func asError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		c := *e
		if c.Status == 0 {
			c.Status = codeStatus[c.Code]
		}
		return &c
	case errors.Is(err, vmm.ErrBadTransition):
		return newError(CodeConflict, "%s", err.Error())
	case errors.Is(err, console.ErrConsoleBusy):
		return newError(CodeConsoleBusy, "%s", err.Error())
	}
	return newError(CodeInternal, "%s", err.Error())
}

// codeFor guesses the code of an error response whose body was not ours
// (a proxy, a crashed handler).
func codeFor(status int) Code {
	for c, s := range codeStatus {
		if s == status && c != CodeConsoleBusy {
			return c
		}
	}
	if status >= 400 && status < 500 {
		return CodeBadRequest
	}
	return CodeInternal
}
