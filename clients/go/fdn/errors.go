package fdn

// errors.go: the protocol's status codes (section 9) and the error type of every call.

import "fmt"

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

// Error is every failure of this package: a protocol code, a message, the request it belongs to.
type Error struct {
	Code      Status
	Message   string
	RequestID uint64
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

func fail(code Status, rid uint64, format string, args ...interface{}) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), RequestID: rid}
}

// CodeOf is the protocol code of err (OK for nil, INTERNAL for errors of other kinds).
func CodeOf(err error) Status {
	if err == nil {
		return OK
	}
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	return Internal
}
