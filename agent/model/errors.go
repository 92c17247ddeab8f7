package model

import "errors"

// Sentinels the agent's layers wrap; the HTTP layer maps them to statuses
// (ErrNotFound 404, ErrExists and ErrConflict 409, ErrInvalid 400).
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// FieldError is invalid input, naming the field so the client can point at
// it (e.g. "disks[1]"). It matches ErrInvalid.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }
