// Package auth authenticates OTLP senders and API readers and decides
// their tenant: bearer tokens and basic auth mapped to tenants, the
// X-Scope-OrgID header where that is allowed, HTTP middleware and a gRPC
// interceptor that put the tenant in the request context, and server TLS
// (optionally mutual) with certificates reloaded from disk.
//
// With no tenants configured, authentication is off and the tenant comes
// from X-Scope-OrgID as it always has, so that a single-user setup needs
// no configuration.
package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/grafana/dskit/user"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// Sentinels for errors.Is on the *Error that Tenant returns.
var (
	// ErrUnauthenticated: no credentials where they are required, or
	// wrong ones. HTTP 401 with WWW-Authenticate, gRPC Unauthenticated.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: valid credentials naming, in X-Scope-OrgID, a tenant
	// they may not use. HTTP 403, gRPC PermissionDenied.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalidTenant: X-Scope-OrgID is not a valid tenant id. HTTP 400,
	// gRPC InvalidArgument, as the receiver answered before.
	ErrInvalidTenant = errors.New("invalid tenant")
)

// Reasons given to onReject callbacks, for self-metric label values.
// ReasonBadTenant is the receiver's label for the same refusal.
const (
	ReasonMissingCredentials = "missing_credentials"
	ReasonInvalidCredentials = "invalid_credentials"
	ReasonForbiddenTenant    = "forbidden_tenant"
	ReasonBadTenant          = "bad_tenant"
)

// Error is a refused request. Its message is safe to send back and to log:
// it never contains a credential, and does not tell a wrong token from an
// unknown one.
type Error struct {
	kind error
	// Reason is one of the Reason constants.
	Reason string
	msg    string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns ErrUnauthenticated, ErrForbidden or ErrInvalidTenant.
func (e *Error) Unwrap() error { return e.kind }

// HTTPStatus is the status code to answer.
func (e *Error) HTTPStatus() int {
	switch e.kind {
	case ErrUnauthenticated:
		return http.StatusUnauthorized
	case ErrForbidden:
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

// GRPCStatus makes a gRPC handler or interceptor that returns the error
// answer the right code (grpc-go asks through status.FromError).
func (e *Error) GRPCStatus() *status.Status {
	code := codes.InvalidArgument
	switch e.kind {
	case ErrUnauthenticated:
		code = codes.Unauthenticated
	case ErrForbidden:
		code = codes.PermissionDenied
	}
	return status.New(code, e.msg)
}

func refuse(kind error, reason, format string, args ...any) *Error {
	return &Error{kind: kind, Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the Reason of an *Error, or "" for any other error.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

type tenantEntry struct {
	id          string
	allowHeader bool
}

type credential struct {
	digest [32]byte
	tenant *tenantEntry
}

// Authenticator maps credentials to tenants. It is safe for concurrent
// use; Update replaces its credentials at once (a config reload). A nil
// *Authenticator means authentication is off.
type Authenticator struct {
	tables atomic.Pointer[tables]
}

// tables are an Authenticator's credentials, immutable once built.
type tables struct {
	// creds is keyed by the SHA-256 of the credential: lookup is O(1)
	// whatever the number of tenants, and the map's own key comparison
	// only ever sees digests, so its timing says nothing usable about a
	// secret (learning a prefix of a digest does not help find a token).
	creds     map[[32]byte]credential
	protected map[string]*tenantEntry // tenants that need credentials
	required  bool
	basic     bool // some tenant uses basic auth: offer the Basic challenge
}

// New reads the secrets of cfg (files, ${ENV}) and returns an
// authenticator; with no tenants it returns nil, which serves every
// request by X-Scope-OrgID, unauthenticated. Errors name the key under `auth`.
func New(cfg Config) (*Authenticator, error) {
	tenants, err := cfg.resolve("auth", lookupEnv, readFile)
	if err != nil {
		return nil, err
	}
	if len(tenants) == 0 {
		return nil, nil
	}
	a := &Authenticator{}
	a.tables.Store(build(cfg, tenants))
	return a, nil
}

// Update replaces the credentials with those of cfg, for requests that
// start afterwards. Authentication cannot be turned on or off this way:
// the listeners' exposure warnings and every front door's choice of
// middleware were made with it, so that takes a restart.
func (a *Authenticator) Update(cfg Config) error {
	tenants, err := cfg.resolve("auth", lookupEnv, readFile)
	if err != nil {
		return err
	}
	if (a == nil) != (len(tenants) == 0) {
		return fmt.Errorf("auth.tenants: turning authentication on or off needs a restart")
	}
	if a != nil {
		a.tables.Store(build(cfg, tenants))
	}
	return nil
}

func build(cfg Config, tenants []resolvedTenant) *tables {
	a := &tables{
		creds:     map[[32]byte]credential{},
		protected: map[string]*tenantEntry{},
		required:  cfg.IsRequired(),
	}
	for _, rt := range tenants {
		te := &tenantEntry{id: rt.id, allowHeader: rt.allowHeader}
		a.protected[rt.id] = te
		for _, cr := range rt.creds {
			d := digest(cr.kind, cr.secret)
			a.creds[d] = credential{digest: d, tenant: te}
			if cr.kind == kindBasic {
				a.basic = true
			}
		}
	}
	return a
}

// Enabled reports whether credentials are checked at all.
func (a *Authenticator) Enabled() bool { return a != nil }

// digest hashes a credential with its kind, so that a bearer token and a
// basic-auth pair can never collide.
func digest(kind credentialKind, secret string) [32]byte {
	// A stack buffer keeps hashing allocation-free for credentials of
	// usual length (sha256.New would escape to the heap).
	var buf [256]byte
	b := append(buf[:0], byte(kind), 0)
	b = append(b, secret...)
	return sha256.Sum256(b)
}

// Tenant authenticates a request from its Authorization and X-Scope-OrgID
// values and returns its tenant, or an *Error (see the sentinels).
//
//   - authentication off: the header's tenant, validated, or
//     single-tenant when it is empty;
//   - credentials given: they must match (else ErrUnauthenticated); the
//     tenant is theirs, and X-Scope-OrgID may only repeat it, unless the
//     tenant has allow_org_id_header (else ErrForbidden);
//   - no credentials: ErrUnauthenticated when required (the default);
//     with required: false, served by X-Scope-OrgID as without tenants,
//     but only for tenants not listed in auth.tenants.
func (a *Authenticator) Tenant(authorization, orgIDHeader string) (string, error) {
	if a == nil {
		return headerTenant(orgIDHeader)
	}
	t := a.tables.Load()
	if authorization == "" {
		if t.required {
			return "", refuse(ErrUnauthenticated, ReasonMissingCredentials,
				"authentication required: send an Authorization header with a bearer token or basic credentials")
		}
		tenant, err := headerTenant(orgIDHeader)
		if err != nil {
			return "", err
		}
		if _, ok := t.protected[tenant]; ok {
			return "", refuse(ErrUnauthenticated, ReasonMissingCredentials,
				"authentication required for tenant %q", tenant)
		}
		return tenant, nil
	}
	cred, ok := t.lookup(authorization)
	if !ok {
		return "", refuse(ErrUnauthenticated, ReasonInvalidCredentials, "invalid credentials")
	}
	own := cred.tenant.id
	if orgIDHeader == "" || orgIDHeader == own {
		return own, nil
	}
	if !cred.tenant.allowHeader {
		return "", refuse(ErrForbidden, ReasonForbiddenTenant,
			"the credentials of tenant %q may not send X-Scope-OrgID %q (auth.tenants[].allow_org_id_header is off)", own, orgIDHeader)
	}
	return headerTenant(orgIDHeader)
}

// Operator checks that a request may read what concerns every tenant:
// self-metrics (tenant ids and volumes), profiles, the tenants' states.
// With authentication off anyone may (the listeners are loopback by
// default); with it on, only the credentials of a tenant that may read
// any tenant (allow_org_id_header) may.
func (a *Authenticator) Operator(authorization string) error {
	if a == nil {
		return nil
	}
	if authorization == "" {
		return refuse(ErrUnauthenticated, ReasonMissingCredentials,
			"authentication required: send the credentials of a tenant with allow_org_id_header")
	}
	cred, ok := a.tables.Load().lookup(authorization)
	if !ok {
		return refuse(ErrUnauthenticated, ReasonInvalidCredentials, "invalid credentials")
	}
	if !cred.tenant.allowHeader {
		return refuse(ErrForbidden, ReasonForbiddenTenant,
			"tenant %q may read only its own data: self-metrics, profiles and tenants need the credentials of a tenant with allow_org_id_header", cred.tenant.id)
	}
	return nil
}

// lookup parses an Authorization value ("Bearer <token>" or "Basic
// <base64 user:password>", scheme case-insensitive per RFC 9110) and finds
// its credential. Malformed values are simply not found: the answer is the
// same 401 as for a wrong token, so it tells an attacker nothing.
func (a *tables) lookup(authorization string) (credential, bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return credential{}, false
	}
	var d [32]byte
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		d = digest(kindBearer, rest)
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || bytes.IndexByte(raw, ':') < 0 {
			return credential{}, false
		}
		d = digest(kindBasic, string(raw))
	default:
		return credential{}, false
	}
	c, ok := a.creds[d]
	// The map found the entry by digest; compare again in constant time
	// so that the decision itself never depends on where bytes differ.
	if !ok || subtle.ConstantTimeCompare(c.digest[:], d[:]) != 1 {
		return credential{}, false
	}
	return c, true
}

// headerTenant is the tenant of X-Scope-OrgID without authentication.
func headerTenant(header string) (string, error) {
	if header == "" {
		return tenant.Default, nil
	}
	if err := tenant.Validate(header); err != nil {
		return "", refuse(ErrInvalidTenant, ReasonBadTenant, "invalid X-Scope-OrgID: %v", err)
	}
	return header, nil
}

// NewContext returns ctx carrying tenant. It uses dskit's org id, so that
// dskit-based code (tenant.TenantID, user.ExtractOrgID) sees it too.
func NewContext(ctx context.Context, tenant string) context.Context {
	return user.InjectOrgID(ctx, tenant)
}

// TenantFrom returns the tenant the middleware or interceptor put in ctx.
func TenantFrom(ctx context.Context) (string, bool) {
	t, err := user.ExtractOrgID(ctx)
	return t, err == nil && t != ""
}
