// Package field holds the error a Validate method returns for one invalid field: a value with the
// field's path and the reason, several joined with errors.Join, as protoc-gen-validate's errors are
// (go-control-plane's *.pb.validate.go: Field(), Reason()). A caller that knows where the validated
// value came from (a scenario file, a bootstrap) places each error by its Field, never by parsing
// the message apart.
//
// Paths use the names of the validated value's fields, dot-separated, with list indices:
// "abort.status", "toxics[0].rate". The path is relative to the value whose Validate returned the
// error; a caller that validates a value inside another one puts the value's own path in front with
// Within.
package field

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one invalid field.
type Error struct {
	path   string   // "" = the validated value itself
	among  []string // set: the reason is about these fields of path together ("none set")
	reason string
	cause  error // the error the reason wraps, if any
}

// Errorf returns the error of the field at path, its reason formatted as fmt.Errorf does (a %w verb
// makes the wrapped error the Error's cause).
func Errorf(path, format string, args ...any) *Error {
	wrapped := fmt.Errorf(format, args...)
	return &Error{path: path, reason: wrapped.Error(), cause: errors.Unwrap(wrapped)}
}

// Among returns the error of several fields of the value at path taken together, such as "set
// exactly one of": its Field is path, and Among lists the fields.
func Among(path string, fields []string, format string, args ...any) *Error {
	return &Error{path: path, among: fields, reason: fmt.Sprintf(format, args...)}
}

// Field is the path of the invalid field relative to the validated value ("abort.status"); "" is
// the value itself. For an error Among fields, the path of the value that holds them.
func (e *Error) Field() string { return e.path }

// Reason says what is wrong and what is accepted ("120 is out of range, want 0..100").
func (e *Error) Reason() string { return e.reason }

// Among lists the fields, below Field, that the reason is about together; nil for one field.
func (e *Error) Among() []string { return e.among }

// Unwrap returns the error the reason wraps, if any.
func (e *Error) Unwrap() error { return e.cause }

// Error formats the error as "path: reason", or "path.{a,b}: reason" for an error among fields.
func (e *Error) Error() string {
	path := e.path
	if len(e.among) > 0 {
		path = Join(path, "{"+strings.Join(e.among, ",")+"}")
	}
	if path == "" {
		return e.reason
	}
	return path + ": " + e.reason
}

// Join joins two paths: Join("faults[0]", "abort.status") is "faults[0].abort.status", and an index
// attaches without a dot (Join("toxics", "[1].rate")).
func Join(parent, child string) string {
	switch {
	case parent == "":
		return child
	case child == "":
		return parent
	case strings.HasPrefix(child, "["):
		return parent + child
	}
	return parent + "." + child
}

// Within returns the field errors of err, a value at path inside the one being validated, with
// path in front of each. An error that is not an *Error becomes the error of path itself.
func Within(path string, err error) []error {
	var out []error
	for _, e := range All(err) {
		c := *e
		c.path = Join(path, e.path)
		out = append(out, &c)
	}
	return out
}

// All lists the field errors joined in err (by errors.Join or several %w): each *Error once, in
// order. An error that is neither joined nor an *Error becomes an *Error of the validated value
// itself (Field "") with its message as the reason.
func All(err error) []*Error {
	if err == nil {
		return nil
	}
	if fe, ok := err.(*Error); ok {
		return []*Error{fe}
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range joined.Unwrap() {
			out = append(out, All(e)...)
		}
		return out
	}
	return []*Error{{reason: err.Error(), cause: err}}
}
