package fdn

// errors.go: the protocol's status codes (section 9) and the error type of every call.

import (
	"errors"
	"fmt"
)

// Status is an error code of the protocol (section 9).
type Status uint32

// The codes of section 9.
const (
	OK Status = iota
	BadMagic
	BadVersion
	BadChecksum
	ModelNotFound
	InvalidInput
	TooLarge
	DeadlineExceeded
	Overloaded
	HandlerError
	ServerUnavailable
	ShuttingDown
	CudaUnavailable
	Internal
)

var statusNames = [...]string{"OK", "BAD_MAGIC", "BAD_VERSION", "BAD_CHECKSUM", "MODEL_NOT_FOUND",
	"INVALID_INPUT", "TOO_LARGE", "DEADLINE_EXCEEDED", "OVERLOADED", "HANDLER_ERROR",
	"SERVER_UNAVAILABLE", "SHUTTING_DOWN", "CUDA_UNAVAILABLE", "INTERNAL"}

// String is the code's name; unknown codes read as INTERNAL.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "INTERNAL"
}

// Error is every failure of this package: a protocol code, a message, and the call it belongs
// to. Every error of a call (Infer, InferCall, LoanBegin, LoanInfer) names the model it was made
// for in Model (but a name over its 63-byte field, which the message names), and the request in
// RequestID once one was sent (0 for a call refused before it sent anything, such as a bad
// argument); errors of no call (Connect, Close, the codec) leave Model empty.
type Error struct {
	Code      Status
	Message   string // the server's message for errors it reported, this package's otherwise
	RequestID uint64
	Model     string
	cause     error // what ended a call of a context (ctx.Err()): Unwrap gives it
	// unsent: the server died (spec 10.3) with the request published but never dispatched, so
	// no handler ran it and it may be sent again
	unsent bool
	// gone: a connect found the server gone (its region names a dead process, spec 10.3); a pool's
	// call that connected a client for itself then says nothing was sent (Pool.InferCall)
	gone bool
}

// Unwrap is the error that ended a call of a context (InferContext, Pool.Infer):
// context.Canceled or context.DeadlineExceeded, so errors.Is(err, context.Canceled) holds; nil
// for every other error.
func (e *Error) Unwrap() error { return e.cause }

// Error is "CODE: message"; for an error of a call, `CODE: model "NAME" (request N): message`
// (without the request before one was sent).
func (e *Error) Error() string {
	switch {
	case e.Model != "" && e.RequestID != 0:
		return fmt.Sprintf("%s: model %q (request %d): %s", e.Code, e.Model, e.RequestID, e.Message)
	case e.Model != "":
		return fmt.Sprintf("%s: model %q: %s", e.Code, e.Model, e.Message)
	}
	return e.Code.String() + ": " + e.Message
}

// withCall names the call err failed where it does not yet: the model, and the request id once
// one was sent (rid 0: none). It returns err. A model name over its field (63 bytes; the call is
// INVALID_INPUT, its message naming it) is not copied: a megabyte of it would be the error text.
func withCall(err error, model string, rid uint64) error {
	if e, ok := err.(*Error); ok {
		if e.Model == "" && len(model) < NameSize {
			e.Model = model
		}
		if e.RequestID == 0 {
			e.RequestID = rid
		}
	}
	return err
}

func fail(code Status, rid uint64, format string, args ...interface{}) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), RequestID: rid}
}

// CodeOf is the protocol code of err, also of an *Error wrapped by the caller (fmt.Errorf %w);
// OK for nil, INTERNAL for errors of other kinds.
func CodeOf(err error) Status {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
