package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"
)

// Error is an OpenAI-style API error: it carries the HTTP status and the
// four fields of OpenAI's error object. Handlers return it; the central
// error handler writes it, so every error leaves the server in one shape.
//
// Only the four OpenAI fields reach the client. Cause and RequestID are for
// the server side: both go to the request's log line (fields error and
// request_id), and Go code that handles the error reads them directly or
// through errors.Is and errors.As, which see Cause through Unwrap.
type Error struct {
	Status  int
	Message string
	Type    string
	Param   string // "" is written as null
	Code    string // "" is written as null
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int
	// NoRetry sends x-should-retry: false, telling the OpenAI SDKs not to
	// retry a server error that will fail again.
	NoRetry bool
	// Cause is the error this one reports, if any: a scheduler sentinel
	// (sched.ErrQueueFull, ...), a JSON decoding error, a recovered panic.
	// It is logged, never sent: the client sees Message alone.
	Cause error
	// RequestID is the id of the request the error answers (the
	// X-Request-Id the server echoes). Handlers build errors without it;
	// the server sets it on every error a request's handler chain returns,
	// before the error is written and logged.
	RequestID string
}

// Error describes the error for logs and Go callers: status, type, message
// and, when there is one, the cause.
func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Type, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// Unwrap returns the cause, so errors.Is and errors.As look through an API
// error to what made it.
func (e *Error) Unwrap() error { return e.Cause }

// withCause sets the cause and returns e, for chaining onto a constructor.
func (e *Error) withCause(err error) *Error {
	e.Cause = err
	return e
}

// errorBody is OpenAI's wire shape; all four keys are always present.
type errorBody struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *Error) body() errorBody {
	o := errorObject{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		o.Param = &e.Param
	}
	if e.Code != "" {
		o.Code = &e.Code
	}
	return errorBody{Error: o}
}

// invalid is a 400 for anything the client can fix.
func invalid(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

// unsupported is a 400 for a valid OpenAI parameter this server cannot
// honour (yet): refused, never silently ignored.
func unsupported(param, format string, args ...any) *Error {
	return invalid(param, "unsupported_parameter", format, args...)
}

func overloaded(msg string, retryAfter int) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "server_overloaded", Message: msg, RetryAfter: retryAfter}
}

// requestError turns whatever a request's handler chain returned into the
// API error that answers it: an *Error found in err's chain as it is, an
// echo.HTTPError (routing, body limit) by its status, anything else a 500
// whose Cause is err. The result carries the request's id; when the *Error
// found lacks it, the result is a copy, so that an *Error value shared
// between requests is never written to.
func (s *Server) requestError(c echo.Context, err error) *Error {
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = fromEchoError(he, c)
	default:
		s.log.Error("unhandled error", zap.String("request_id", requestID(c)), zap.Error(err))
		ae = &Error{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error",
			Message: "The server had an error while processing your request.", Cause: err}
	}
	if id := requestID(c); ae.RequestID != id {
		cp := *ae
		cp.RequestID = id
		ae = &cp
	}
	return ae
}

// errorHandler is Echo's central HTTPErrorHandler: it turns whatever a
// handler or middleware returned into an OpenAI error object, and keeps it
// for the request's log line.
func (s *Server) errorHandler(err error, c echo.Context) {
	ae := s.requestError(c, err)
	setInfo(c, func(i *reqInfo) { i.errCode, i.err = ae.Code, ae })
	if c.Response().Committed {
		// A stream already started; the handler reported the error in-band.
		return
	}
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.NoRetry {
		c.Response().Header().Set("x-should-retry", "false")
	}
	if ae.Status == http.StatusUnauthorized && c.Response().Header().Get("WWW-Authenticate") == "" {
		// Every 401 names the scheme to use (RFC 9110 §11.6.1).
		c.Response().Header().Set("WWW-Authenticate", bearerChallenge)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if werr := c.JSON(ae.Status, ae.body()); werr != nil {
		s.log.Debug("writing error response", zap.String("request_id", ae.RequestID), zap.Error(werr))
	}
}

// fromEchoError maps an Echo error (routing, body limit, ...) to its API
// error; the Echo error is its cause.
func fromEchoError(he *echo.HTTPError, c echo.Context) *Error {
	msg := fmt.Sprint(he.Message)
	var ae *Error
	switch he.Code {
	case http.StatusNotFound:
		ae = &Error{Status: 404, Type: "invalid_request_error", Code: "unknown_url",
			Message: fmt.Sprintf("Unknown request URL: %s %s.", c.Request().Method, c.Request().URL.Path)}
	case http.StatusMethodNotAllowed:
		ae = &Error{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: fmt.Sprintf("Method %s is not allowed for %s.", c.Request().Method, c.Request().URL.Path)}
	case http.StatusRequestEntityTooLarge:
		ae = &Error{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
			Message: "The request body is larger than this server accepts."}
	case http.StatusUnauthorized:
		ae = &Error{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key", Message: msg}
	default:
		typ := "invalid_request_error"
		if he.Code >= 500 {
			typ = "server_error"
		}
		ae = &Error{Status: he.Code, Type: typ, Message: msg}
	}
	return ae.withCause(he)
}
