package auth

import (
	"errors"
	"net"
	"net/http"
	"os"
)

// Indirections for New, so that tests of resolve can use their own.
var (
	lookupEnv = os.LookupEnv
	readFile  = os.ReadFile
)

// Realm is the realm of the WWW-Authenticate challenges.
const Realm = "spangraph"

// HTTPMiddleware authenticates each request (Authorization and
// X-Scope-OrgID headers), puts its tenant in the request context for
// TenantFrom, and calls next; a refused request gets its status code
// (401 with WWW-Authenticate, 403 or 400) and a plain-text message, and
// onReject, when not nil, is called with the reason (for a self-metric).
//
// A nil Authenticator still sets the tenant from X-Scope-OrgID, so that
// handlers read it one way whatever the configuration.
func (a *Authenticator) HTTPMiddleware(next http.Handler, onReject func(reason string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, err := a.Tenant(r.Header.Get("Authorization"), r.Header.Get("X-Scope-OrgID"))
		if err != nil {
			if onReject != nil {
				onReject(ReasonOf(err))
			}
			a.WriteHTTPError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), tenant)))
	})
}

// OperatorMiddleware serves next only to requests that pass Operator;
// others get their status and a plain-text message.
func (a *Authenticator) OperatorMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.Operator(r.Header.Get("Authorization")); err != nil {
			a.WriteHTTPError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteHTTPError answers a refusal from Tenant in plain text. Handlers with
// their own error body format (OTLP/HTTP answers a google.rpc.Status) use
// HTTPStatus and SetChallenge instead.
func (a *Authenticator) WriteHTTPError(w http.ResponseWriter, err error) {
	code := HTTPStatus(err)
	if code == http.StatusUnauthorized {
		a.SetChallenge(w.Header())
	}
	http.Error(w, err.Error(), code)
}

// HTTPStatus is the status code for an error from Tenant: 401, 403 or 400;
// 500 for an error that did not come from this package.
func HTTPStatus(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.HTTPStatus()
	}
	return http.StatusInternalServerError
}

// SetChallenge adds the WWW-Authenticate challenges a 401 must carry (RFC
// 9110 §11.6.1): Bearer always, Basic when a tenant uses basic auth.
func (a *Authenticator) SetChallenge(h http.Header) {
	h.Add("WWW-Authenticate", `Bearer realm="`+Realm+`"`)
	if a != nil && a.tables.Load().basic {
		h.Add("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
	}
}

// Exposed reports whether a listen address is reachable from other
// machines: any address but loopback (127.0.0.0/8, ::1, localhost).
// Listeners there without authentication deserve a warning.
func Exposed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// DialAddr turns a listen address into one a client can use: a wildcard
// host (":4317", "0.0.0.0:4317", "[::]:4317") becomes host, which the
// caller picks ("localhost" on this machine, a placeholder in advice for
// other machines).
func DialAddr(listen, host string) string {
	h, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = host
	}
	return net.JoinHostPort(h, port)
}
