package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func testConfig(t testing.TB) Config {
	t.Helper()
	tokenB := writeFileTB(t, "token-b", "token-b\n")
	return Config{Tenants: []TenantConfig{
		{
			ID:           "team-a",
			BearerTokens: []Secret{"token-a", "carol:pw-c"},
			BasicAuth:    []BasicAuthConfig{{Username: "alice", Password: "pw-a"}},
		},
		{ID: "team-b", BearerTokenFiles: []string{tokenB}, AllowOrgIDHeader: true},
	}}
}

func writeFileTB(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAuth(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type tenantCase struct {
	name          string
	authorization string
	orgID         string
	want          string // tenant, when accepted
	kind          error  // sentinel, when refused
	reason        string
}

func runTenantCases(t *testing.T, a *Authenticator, cases []tenantCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Tenant(tc.authorization, tc.orgID)
			if tc.kind == nil {
				if err != nil || got != tc.want {
					t.Fatalf("Tenant = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.kind) || got != "" {
				t.Fatalf("Tenant = %q, %v; want %v", got, err, tc.kind)
			}
			if r := ReasonOf(err); r != tc.reason {
				t.Errorf("reason %q, want %q", r, tc.reason)
			}
			wantHTTP := map[error]int{ErrUnauthenticated: 401, ErrForbidden: 403, ErrInvalidTenant: 400}[tc.kind]
			wantGRPC := map[error]codes.Code{ErrUnauthenticated: codes.Unauthenticated, ErrForbidden: codes.PermissionDenied, ErrInvalidTenant: codes.InvalidArgument}[tc.kind]
			if HTTPStatus(err) != wantHTTP || status.Code(err) != wantGRPC {
				t.Errorf("HTTP %d gRPC %v; want %d %v", HTTPStatus(err), status.Code(err), wantHTTP, wantGRPC)
			}
			for _, secret := range []string{"token-a", "token-b", "pw-a", "pw-c"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a credential", err)
				}
			}
		})
	}
}

func TestTenantRequired(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	runTenantCases(t, a, []tenantCase{
		{"no credentials", "", "", "", ErrUnauthenticated, ReasonMissingCredentials},
		{"no credentials, header", "", "team-a", "", ErrUnauthenticated, ReasonMissingCredentials},
		{"bearer", "Bearer token-a", "", "team-a", nil, ""},
		{"scheme is case-insensitive", "bearer token-a", "", "team-a", nil, ""},
		{"extra spaces", "  Bearer   token-a  ", "", "team-a", nil, ""},
		{"token from a file, trimmed", "Bearer token-b", "", "team-b", nil, ""},
		{"wrong token", "Bearer token-x", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"prefix of a token", "Bearer token-", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"empty token", "Bearer ", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"unknown scheme", "Token token-a", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"no scheme", "token-a", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"basic", basic("alice", "pw-a"), "", "team-a", nil, ""},
		{"basic wrong password", basic("alice", "pw-b"), "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"basic unknown user", basic("mallory", "pw-a"), "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"basic not base64", "Basic !!!", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"basic without colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("token-a")), "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		// A bearer token that looks like user:password is not a basic
		// credential, nor the other way round.
		{"bearer is not basic", basic("carol", "pw-c"), "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"basic is not bearer", "Bearer alice:pw-a", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"own tenant in header", "Bearer token-a", "team-a", "team-a", nil, ""},
		{"other tenant in header", "Bearer token-a", "team-b", "", ErrForbidden, ReasonForbiddenTenant},
		{"other tenant, basic", basic("alice", "pw-a"), "team-z", "", ErrForbidden, ReasonForbiddenTenant},
		{"allow_org_id_header", "Bearer token-b", "team-c", "team-c", nil, ""},
		{"allow_org_id_header, own", "Bearer token-b", "", "team-b", nil, ""},
		{"allow_org_id_header, invalid", "Bearer token-b", "../etc", "", ErrInvalidTenant, ReasonBadTenant},
		{"credentials are checked first", "Bearer token-x", "team-a", "", ErrUnauthenticated, ReasonInvalidCredentials},
	})
}

func TestTenantNotRequired(t *testing.T) {
	cfg := testConfig(t)
	no := false
	cfg.Required = &no
	a := mustAuth(t, cfg)
	runTenantCases(t, a, []tenantCase{
		{"anonymous default", "", "", "single-tenant", nil, ""},
		{"anonymous other", "", "team-x", "team-x", nil, ""},
		{"anonymous may not use a listed tenant", "", "team-a", "", ErrUnauthenticated, ReasonMissingCredentials},
		{"anonymous invalid", "", "a/b", "", ErrInvalidTenant, ReasonBadTenant},
		{"wrong credentials still refused", "Bearer nope", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"right credentials", "Bearer token-a", "", "team-a", nil, ""},
	})
}

func TestTenantOff(t *testing.T) {
	a, err := New(Config{})
	if err != nil || a != nil || a.Enabled() {
		t.Fatalf("New(empty) = %v, %v; want nil (off)", a, err)
	}
	runTenantCases(t, a, []tenantCase{
		{"default", "", "", "single-tenant", nil, ""},
		{"header", "", "team-x", "team-x", nil, ""},
		{"credentials ignored", "Bearer whatever", "team-x", "team-x", nil, ""},
		{"invalid header", "", "a/b", "", ErrInvalidTenant, ReasonBadTenant},
		{"dot", "", "..", "", ErrInvalidTenant, ReasonBadTenant},
	})
}

func TestHTTPMiddleware(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	var mu sync.Mutex
	var reasons []string
	h := a.HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := TenantFrom(r.Context())
		if !ok {
			t.Error("no tenant in the context")
		}
		_, _ = io.WriteString(w, tenant)
	}), func(reason string) { mu.Lock(); reasons = append(reasons, reason); mu.Unlock() })

	for _, tc := range []struct {
		authorization, orgID string
		code                 int
		body                 string
	}{
		{"Bearer token-a", "", 200, "team-a"},
		{basic("alice", "pw-a"), "team-a", 200, "team-a"},
		{"Bearer token-b", "team-c", 200, "team-c"},
		{"", "", 401, "authentication required"},
		{"Bearer wrong", "", 401, "invalid credentials"},
		{"Bearer token-a", "team-b", 403, "may not send X-Scope-OrgID"},
		{"Bearer token-b", "a/b", 400, "invalid X-Scope-OrgID"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v1/traces", nil)
		if tc.authorization != "" {
			req.Header.Set("Authorization", tc.authorization)
		}
		if tc.orgID != "" {
			req.Header.Set("X-Scope-OrgID", tc.orgID)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%q %q: %d %q; want %d %q", tc.authorization, tc.orgID, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
		challenges := rec.Header().Values("WWW-Authenticate")
		if tc.code == 401 {
			want := []string{`Bearer realm="spangraph"`, `Basic realm="spangraph", charset="UTF-8"`}
			if !slices.Equal(challenges, want) {
				t.Errorf("401 challenges %q, want %q", challenges, want)
			}
		} else if len(challenges) != 0 {
			t.Errorf("%d with WWW-Authenticate %q", tc.code, challenges)
		}
	}
	want := []string{ReasonMissingCredentials, ReasonInvalidCredentials, ReasonForbiddenTenant, ReasonBadTenant}
	if !slices.Equal(reasons, want) {
		t.Errorf("onReject reasons %q, want %q", reasons, want)
	}
}

func TestHTTPMiddlewareOff(t *testing.T) {
	var a *Authenticator
	h := a.HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, _ := TenantFrom(r.Context())
		_, _ = io.WriteString(w, tenant)
	}), nil)
	for orgID, want := range map[string]string{"": "single-tenant", "team-x": "team-x"} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("X-Scope-OrgID", orgID)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("X-Scope-OrgID %q: %d %q", orgID, rec.Code, rec.Body.String())
		}
	}
	// Only-Bearer challenge when no tenant uses basic auth.
	b := mustAuth(t, Config{Tenants: []TenantConfig{{ID: "a", BearerTokens: []Secret{"t"}}}})
	rec := httptest.NewRecorder()
	b.HTTPMiddleware(http.NotFoundHandler(), nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if got := rec.Header().Values("WWW-Authenticate"); rec.Code != 401 || !slices.Equal(got, []string{`Bearer realm="spangraph"`}) {
		t.Errorf("bearer-only: %d %q", rec.Code, got)
	}
}

func TestTenantFromEmptyContext(t *testing.T) {
	if tenant, ok := TenantFrom(context.Background()); ok || tenant != "" {
		t.Fatalf("TenantFrom(background) = %q, %v", tenant, ok)
	}
	if tenant, ok := TenantFrom(NewContext(context.Background(), "x")); !ok || tenant != "x" {
		t.Fatalf("TenantFrom = %q, %v", tenant, ok)
	}
}

// echoDesc is a hand-written service like the receiver's OTLP one: its
// handler must pass calls through the interceptor argument, or they are
// never authenticated.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "spangraph.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Tenant",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			handler := func(ctx context.Context, _ any) (any, error) {
				if err := dec(new(emptypb.Empty)); err != nil {
					return nil, err
				}
				tenant, _ := TenantFrom(ctx)
				return wrapperspb.String(tenant), nil
			}
			if interceptor == nil {
				return handler(ctx, nil)
			}
			return interceptor(ctx, nil, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/spangraph.test.Echo/Tenant"}, handler)
		},
	}},
}

func startEcho(t *testing.T, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(opts...)
	s.RegisterService(&echoDesc, struct{}{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func callEcho(conn *grpc.ClientConn, md ...string) (string, error) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/spangraph.test.Echo/Tenant", &emptypb.Empty{}, out)
	return out.GetValue(), err
}

func TestUnaryServerInterceptor(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	var mu sync.Mutex
	var reasons []string
	conn := startEcho(t, grpc.UnaryInterceptor(a.UnaryServerInterceptor(func(r string) {
		mu.Lock()
		reasons = append(reasons, r)
		mu.Unlock()
	})))
	for _, tc := range []struct {
		md   []string
		want string
		code codes.Code
	}{
		{[]string{"authorization", "Bearer token-a"}, "team-a", codes.OK},
		{[]string{"authorization", basic("alice", "pw-a"), "x-scope-orgid", "team-a"}, "team-a", codes.OK},
		{[]string{"authorization", "Bearer token-b", "X-Scope-OrgID", "team-c"}, "team-c", codes.OK},
		{nil, "", codes.Unauthenticated},
		{[]string{"authorization", "Bearer nope"}, "", codes.Unauthenticated},
		{[]string{"authorization", "Bearer token-a", "x-scope-orgid", "team-b"}, "", codes.PermissionDenied},
		{[]string{"authorization", "Bearer token-b", "x-scope-orgid", "bad/id"}, "", codes.InvalidArgument},
	} {
		got, err := callEcho(conn, tc.md...)
		if status.Code(err) != tc.code || got != tc.want {
			t.Errorf("%q: %q, %v; want %q, %v", tc.md, got, err, tc.want, tc.code)
		}
	}
	if len(reasons) != 4 {
		t.Errorf("onReject called %d times (%q), want 4", len(reasons), reasons)
	}

	// Off: the tenant still comes from the metadata.
	var off *Authenticator
	conn = startEcho(t, grpc.UnaryInterceptor(off.UnaryServerInterceptor(nil)))
	if got, err := callEcho(conn, "x-scope-orgid", "team-x"); err != nil || got != "team-x" {
		t.Errorf("off: %q, %v", got, err)
	}
	if got, err := callEcho(conn); err != nil || got != "single-tenant" {
		t.Errorf("off, no header: %q, %v", got, err)
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

func TestStreamServerInterceptor(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	icpt := a.StreamServerInterceptor(nil)
	var seen string
	handler := func(_ any, ss grpc.ServerStream) error {
		seen, _ = TenantFrom(ss.Context())
		return nil
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer token-b", "x-scope-orgid", "team-q"))
	if err := icpt(nil, fakeStream{ctx: ctx}, nil, handler); err != nil || seen != "team-q" {
		t.Fatalf("stream: %q, %v", seen, err)
	}
	err := icpt(nil, fakeStream{ctx: context.Background()}, nil, handler)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without credentials: %v", err)
	}
}

// TestOperator: what concerns every tenant (self-metrics, profiles, the
// tenants' states) is for the credentials of a tenant that may read any
// tenant; with authentication off it is open, like everything else.
func TestOperator(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	for _, tc := range []struct {
		name, authorization string
		want                error
	}{
		{"no credentials", "", ErrUnauthenticated},
		{"wrong token", "Bearer nope", ErrUnauthenticated},
		{"a tenant limited to itself", "Bearer token-a", ErrForbidden},
		{"a tenant that may read any tenant", "Bearer token-b", nil},
	} {
		err := a.Operator(tc.authorization)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Operator = %v, want %v", tc.name, err, tc.want)
		}
	}
	var off *Authenticator
	if err := off.Operator(""); err != nil {
		t.Errorf("auth off: %v", err)
	}
	srv := httptest.NewServer(a.OperatorMiddleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "metrics")
	})))
	defer srv.Close()
	for auth, want := range map[string]int{"": 401, "Bearer token-a": 403, "Bearer token-b": 200} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%q: status %d, want %d", auth, resp.StatusCode, want)
		}
	}
}

func TestExposed(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9097": false, "127.1.2.3:1": false, "[::1]:4317": false, "localhost:4318": false,
		":9097": true, "0.0.0.0:4317": true, "[::]:4317": true, "10.0.0.5:4318": true, "spangraph.example:9097": true,
	} {
		if got := Exposed(addr); got != want {
			t.Errorf("Exposed(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestDialAddr(t *testing.T) {
	for listen, want := range map[string]string{
		":4317": "localhost:4317", "0.0.0.0:4318": "localhost:4318", "[::]:9097": "localhost:9097",
		"127.0.0.1:4317": "127.0.0.1:4317", "10.1.2.3:4318": "10.1.2.3:4318", "nonsense": "nonsense",
	} {
		if got := DialAddr(listen, "localhost"); got != want {
			t.Errorf("DialAddr(%q) = %q, want %q", listen, got, want)
		}
	}
}

// TestUpdate: a reload replaces every credential at once; turning
// authentication on or off is refused and changes nothing.
func TestUpdate(t *testing.T) {
	a := mustAuth(t, testConfig(t))
	next := Config{Tenants: []TenantConfig{
		{ID: "team-a", BearerTokens: []Secret{"token-a2"}},
		{ID: "ops", BearerTokens: []Secret{"token-ops"}, AllowOrgIDHeader: true},
	}}
	if err := a.Update(next); err != nil {
		t.Fatal(err)
	}
	runTenantCases(t, a, []tenantCase{
		{"old token", "Bearer token-a", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"new token", "Bearer token-a2", "", "team-a", nil, ""},
		{"removed tenant", "Bearer token-b", "", "", ErrUnauthenticated, ReasonInvalidCredentials},
		{"new tenant", "Bearer token-ops", "team-a", "team-a", nil, ""},
		{"basic gone", basic("alice", "pw-a"), "", "", ErrUnauthenticated, ReasonInvalidCredentials},
	})
	if err := a.Operator("Bearer token-ops"); err != nil {
		t.Errorf("the new operator is refused: %v", err)
	}
	if err := a.Update(Config{}); err == nil || !strings.Contains(err.Error(), "auth.tenants") {
		t.Errorf("turning auth off: %v, want a refusal naming auth.tenants", err)
	}
	if _, err := a.Tenant("Bearer token-a2", ""); err != nil {
		t.Errorf("a refused update changed the credentials: %v", err)
	}
	var off *Authenticator
	if err := off.Update(next); err == nil {
		t.Error("turning auth on by a reload was accepted")
	}
	if err := a.Update(Config{Tenants: []TenantConfig{{ID: "x", BearerTokenFiles: []string{"/nonexistent"}}}}); err == nil || !strings.Contains(err.Error(), "auth.tenants[0]") {
		t.Errorf("unreadable token file: %v, want an error naming the key", err)
	}
}
