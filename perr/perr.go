// Package perr is the one error shape Polos uses everywhere a person or a
// program may read an error: a stable, grep-able code, what was expected,
// what happened, and how to fix it.
//
// Render: "[POLOS-<CODE>] <what happened>: <detail> (fix: <fix>)".
// Programs branch on the code with errors.As / perr.CodeOf, never on text.
package perr

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a stable error code. Codes are part of the public contract:
// never renumber or reuse one.
type Code string

// Error is a coded Polos error.
type Error struct {
	Code  Code   // stable identifier, e.g. "NONDETERMINISM"
	Msg   string // what was expected and what happened
	Fix   string // one line: what to do about it (may be empty)
	Cause error  // wrapped cause (may be nil)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("[POLOS-")
	b.WriteString(string(e.Code))
	b.WriteString("] ")
	b.WriteString(e.Msg)
	if e.Cause != nil {
		b.WriteString(": ")
		b.WriteString(e.Cause.Error())
	}
	if e.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Fix)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Cause }

// Is makes errors.Is(err, &perr.Error{Code: X}) match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code && t.Msg == ""
	}
	return false
}

// New returns a coded error. msg says what was expected and what happened;
// fix says what to do.
func New(code Code, fix, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Fix: fix}
}

// Wrap returns a coded error around cause.
func Wrap(cause error, code Code, fix, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Fix: fix, Cause: cause}
}

// CodeOf returns the code of the first coded error in err's chain, or "".
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Has reports whether err carries code anywhere in its chain.
func Has(err error, code Code) bool {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return false
		}
		if e.Code == code {
			return true
		}
		err = e.Cause
	}
	return false
}
