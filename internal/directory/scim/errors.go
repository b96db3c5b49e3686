package scim

import (
	"errors"
	"fmt"
	"net/http"
)

// scimType values (RFC 7644 §3.12, Table 9).
const (
	TypeInvalidFilter = "invalidFilter"
	TypeTooMany       = "tooMany"
	TypeUniqueness    = "uniqueness"
	TypeMutability    = "mutability"
	TypeInvalidSyntax = "invalidSyntax"
	TypeInvalidPath   = "invalidPath"
	TypeNoTarget      = "noTarget"
	TypeInvalidValue  = "invalidValue"
	TypeInvalidVers   = "invalidVers"
	TypeSensitive     = "sensitive"
)

// Error is a request the service provider refuses: an HTTP status, the
// scimType when RFC 7644 defines one for the case, and a detail that names
// the attribute and what to send instead. Nothing was changed for it.
type Error struct {
	Status   int
	ScimType string
	Detail   string
}

func (e *Error) Error() string {
	if e.ScimType != "" {
		return fmt.Sprintf("SCIM %d %s: %s", e.Status, e.ScimType, e.Detail)
	}
	return fmt.Sprintf("SCIM %d: %s", e.Status, e.Detail)
}

// Body is e in the SCIM error schema (RFC 7644 §3.12).
func (e *Error) Body() map[string]any {
	b := map[string]any{"schemas": []string{URNError}, "status": fmt.Sprint(e.Status), "detail": e.Detail}
	if e.ScimType != "" {
		b["scimType"] = e.ScimType
	}
	return b
}

func badRequest(scimType, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, ScimType: scimType, Detail: fmt.Sprintf(format, args...)}
}

func notFound(kind, id string) *Error {
	return &Error{Status: http.StatusNotFound, Detail: fmt.Sprintf("%s %q not found", kind, id)}
}

// AsError returns err's *Error, or nil when err is not a refusal (a
// database failure: the caller answers 500 or 503).
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
