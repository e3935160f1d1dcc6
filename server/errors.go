package server

import (
	"errors"
	"fmt"
	"net/http"
)

// apiError is an error answered to the client as OpenAI's error object,
// {"error": {"message", "type", "param", "code"}}, with an HTTP status.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
	// RetryAfter, when > 0, is sent as the Retry-After header (seconds):
	// on 429 and 503, when a retry (here or at another replica) may work.
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string { return e.Message }

// errorBody is the JSON body that carries an apiError.
type errorBody struct {
	Error *apiError `json:"error"`
}

// badRequest is a 400 invalid_request_error about param ("" for none).
func badRequest(param, code, format string, args ...any) *apiError {
	e := &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Message: fmt.Sprintf(format, args...)}
	if param != "" {
		e.Param = &param
	}
	return e
}

func unauthorized(msg string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Message: msg}
}

func modelNotFound(name, have string) *apiError {
	p := "model"
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: &p,
		Message: fmt.Sprintf("the model %q does not exist: this server runs %q", name, have)}
}

func tooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: fmt.Sprintf("the request body is larger than %d bytes", limit)}
}

// requestTimeout answers a request whose body did not arrive within the
// server's --read-timeout.
func requestTimeout() *apiError {
	return &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "request_timeout",
		Message: "the request body did not arrive within the server's --read-timeout"}
}

func queueFull(limit int) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "queue_full", RetryAfter: 1,
		Message: fmt.Sprintf("the server is busy: %d requests are already waiting; retry later", limit)}
}

// busy answers a request that arrives while the server already holds as
// many as it admits; the code is the queue's, since to a client it is the
// same condition.
func busy(held int) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "queue_full", RetryAfter: 1,
		Message: fmt.Sprintf("the server is busy: it already holds %d requests (running, waiting or being read); retry later", held)}
}

func loading() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "model_loading", RetryAfter: retryLoading,
		Message: "the model is still loading; retry when GET /health answers 200"}
}

func shuttingDown() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "shutting_down", RetryAfter: 1,
		Message: "the server is shutting down"}
}

// deviceFailed answers the request during which the device failed.
func deviceFailed(err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "device_failed",
		Message: "the device failed during this request: " + err.Error()}
}

// unavailable answers requests after the device failed.
func unavailable(f *failure) *apiError {
	msg := "the model is unavailable: its device failed (" + f.err.Error() + ")"
	if f.reloading {
		msg += "; it is being reloaded, retry when GET /health answers 200"
	}
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "model_unavailable", Message: msg, RetryAfter: f.retryAfter()}
}

func timedOut() *apiError {
	return &apiError{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "timeout",
		Message: "the request took longer than the server's --timeout"}
}

func internalError(err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: err.Error()}
}

func notFound(r *http.Request) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)}
}

func methodNotAllowed(r *http.Request) *apiError {
	return &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)}
}

// Why a request's context ended; see contextError.
var (
	errTimeout      = errors.New("request timed out")
	errShuttingDown = errors.New("server shutting down")
	errClientGone   = errors.New("client disconnected")
)

// statusClientClosed is logged and counted for requests whose client went
// away before the answer (nginx's convention); it is never sent.
const statusClientClosed = 499

// contextError maps the cause of a request context's end to the answer.
// A nil *apiError means the client left and nothing can be sent.
func contextError(cause error) *apiError {
	switch {
	case errors.Is(cause, errTimeout):
		return timedOut()
	case errors.Is(cause, errShuttingDown):
		return shuttingDown()
	}
	return nil
}
