package policy

import "fmt"

// FieldError is a configuration error of one field: its path in Envoy's terms (e.g.
// "outlier_detection.interval") and the reason. Validate methods return it so that a caller places the
// error by its Field (proxy/config joins it to the cluster's path) without parsing the message, as
// go-control-plane's generated validators do (Field(), Reason()). Error() reads "field: reason".
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
