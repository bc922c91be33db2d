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
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

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

// errorHandler is Echo's central HTTPErrorHandler: it turns whatever a
// handler or middleware returned into an OpenAI error object.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		// A stream already started; the handler reported the error in-band.
		return
	}
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = fromEchoError(he, c)
	default:
		s.log.Error("unhandled error", zap.String("request_id", requestID(c)), zap.Error(err))
		ae = &Error{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: "The server had an error while processing your request."}
	}
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.NoRetry {
		c.Response().Header().Set("x-should-retry", "false")
	}
	setInfo(c, func(i *reqInfo) { i.errCode = ae.Code })
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if werr := c.JSON(ae.Status, ae.body()); werr != nil {
		s.log.Debug("writing error response", zap.Error(werr))
	}
}

func fromEchoError(he *echo.HTTPError, c echo.Context) *Error {
	msg := fmt.Sprint(he.Message)
	switch he.Code {
	case http.StatusNotFound:
		return &Error{Status: 404, Type: "invalid_request_error", Code: "unknown_url",
			Message: fmt.Sprintf("Unknown request URL: %s %s.", c.Request().Method, c.Request().URL.Path)}
	case http.StatusMethodNotAllowed:
		return &Error{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: fmt.Sprintf("Method %s is not allowed for %s.", c.Request().Method, c.Request().URL.Path)}
	case http.StatusRequestEntityTooLarge:
		return &Error{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
			Message: "The request body is larger than this server accepts."}
	case http.StatusUnauthorized:
		return &Error{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key", Message: msg}
	}
	typ := "invalid_request_error"
	if he.Code >= 500 {
		typ = "server_error"
	}
	return &Error{Status: he.Code, Type: typ, Message: msg}
}
