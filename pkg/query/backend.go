package query

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	config_util "github.com/prometheus/common/config"

	"github.com/spangraph/spangraph/pkg/tenant"
)

// A query backend is a Prometheus-compatible HTTP API (Prometheus, Mimir,
// anything that answers /api/v1/query) that every read goes to instead of
// the embedded store. Several Spangraph instances (a ring, or the plugin
// in several Grafana replicas) each hold only their share of the series,
// and all remote-write them to one such store; reading from it, every
// replica shows the same figures. See backend_read.go for what each read
// becomes and backend_graph.go for the node graph.

// BackendConfig is the top-level query_backend: section. The keys of the
// HTTP client are Prometheus' own (basic_auth, bearer_token,
// bearer_token_file, tls_config), built into a transport by the same
// code Prometheus uses, so a block copied from a Prometheus remote_read
// or scrape config means the same here.
type BackendConfig struct {
	// URL is the API's base, without /api/v1: http://prometheus:9090, or
	// http://mimir/prometheus. Empty: the embedded store (the default).
	URL string `yaml:"url"`
	// Timeout bounds one backend request, as a Grafana Prometheus
	// datasource's does; a query's own query.timeout bounds it too.
	Timeout time.Duration `yaml:"timeout"`
	// Headers are sent on every request (not Authorization: use
	// basic_auth or bearer_token).
	Headers map[string]string `yaml:"headers,omitempty"`
	// TenantHeader carries the Spangraph tenant of each read, as the
	// remote write sends it (Mimir and Cortex multi-tenancy): not for the
	// default tenant, and not when Headers sets that header itself.
	// Empty sends none.
	TenantHeader string `yaml:"tenant_header"`
	// BasicAuth is username with password or password_file.
	BasicAuth *config_util.BasicAuth `yaml:"basic_auth,omitempty"`
	// BearerToken or BearerTokenFile (re-read on every request) is sent
	// as "Authorization: Bearer <token>".
	BearerToken     config_util.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string             `yaml:"bearer_token_file,omitempty"`
	// TLSConfig holds ca_file, cert_file, key_file, server_name and
	// insecure_skip_verify for an https:// URL.
	TLSConfig config_util.TLSConfig `yaml:"tls_config,omitempty"`
}

// DefaultBackendConfig returns the defaults: no backend, 30 s per
// request and the tenant in X-Scope-OrgID.
func DefaultBackendConfig() BackendConfig {
	return BackendConfig{Timeout: 30 * time.Second, TenantHeader: "X-Scope-OrgID"}
}

// Enabled says whether reads go to a backend.
func (c *BackendConfig) Enabled() bool { return c.URL != "" }

// Validate checks the config; errors name the key under prefix. Files
// are checked for being readable now, so that a typo fails at start
// rather than at the first query.
func (c *BackendConfig) Validate(prefix string) error {
	if c.URL == "" {
		if c.BasicAuth != nil || c.BearerToken != "" || c.BearerTokenFile != "" || len(c.Headers) > 0 {
			return fmt.Errorf("%s.url: required when %s sets credentials or headers; without it every read goes to the embedded store", prefix, prefix)
		}
		return nil
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return fmt.Errorf("%s.url: %v", prefix, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%s.url: %q must be an http:// or https:// URL", prefix, shownURL(u))
	case u.Host == "":
		return fmt.Errorf("%s.url: %q has no host", prefix, shownURL(u))
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%s.url: %q must be the API's base URL, without a query or fragment", prefix, shownURL(u))
	case strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/api/v1"):
		return fmt.Errorf("%s.url: %q ends in /api/v1; give the base URL (the client adds /api/v1/query)", prefix, shownURL(u))
	case u.User != nil:
		return fmt.Errorf("%s.url: put credentials in %s.basic_auth, not in the URL", prefix, prefix)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("%s.timeout: must be positive, got %s", prefix, c.Timeout)
	}
	for name := range c.Headers {
		if !validHeaderName(name) {
			return fmt.Errorf("%s.headers: %q is not a valid HTTP header name", prefix, name)
		}
		if strings.EqualFold(name, "Authorization") {
			return fmt.Errorf("%s.headers: set Authorization with %s.basic_auth or %s.bearer_token, not as a header", prefix, prefix, prefix)
		}
	}
	if c.TenantHeader != "" && !validHeaderName(c.TenantHeader) {
		return fmt.Errorf("%s.tenant_header: %q is not a valid HTTP header name", prefix, c.TenantHeader)
	}
	if a := c.BasicAuth; a != nil {
		switch {
		case a.UsernameRef != "" || a.PasswordRef != "":
			return fmt.Errorf("%s.basic_auth: username_ref and password_ref need a secret manager, which Spangraph has not; use password_file", prefix)
		case a.Username == "" && a.UsernameFile == "":
			return fmt.Errorf("%s.basic_auth.username: required", prefix)
		case a.Username != "" && a.UsernameFile != "":
			return fmt.Errorf("%s.basic_auth: set username or username_file, not both", prefix)
		case a.Password != "" && a.PasswordFile != "":
			return fmt.Errorf("%s.basic_auth: set password or password_file, not both", prefix)
		case c.BearerToken != "" || c.BearerTokenFile != "":
			return fmt.Errorf("%s: set basic_auth or bearer_token(_file), not both", prefix)
		}
		if err := readable(a.UsernameFile); err != nil {
			return fmt.Errorf("%s.basic_auth.username_file: %w", prefix, err)
		}
		if err := readable(a.PasswordFile); err != nil {
			return fmt.Errorf("%s.basic_auth.password_file: %w", prefix, err)
		}
	}
	if c.BearerToken != "" && c.BearerTokenFile != "" {
		return fmt.Errorf("%s: set bearer_token or bearer_token_file, not both", prefix)
	}
	if err := readable(c.BearerTokenFile); err != nil {
		return fmt.Errorf("%s.bearer_token_file: %w", prefix, err)
	}
	tc := &c.TLSConfig
	if tc.CARef != "" || tc.CertRef != "" || tc.KeyRef != "" {
		return fmt.Errorf("%s.tls_config: ca_ref, cert_ref and key_ref need a secret manager, which Spangraph has not; use ca_file, cert_file, key_file", prefix)
	}
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("%s.tls_config: %w", prefix, err)
	}
	for _, f := range []struct{ key, path string }{{"ca_file", tc.CAFile}, {"cert_file", tc.CertFile}, {"key_file", tc.KeyFile}} {
		if err := readable(f.path); err != nil {
			return fmt.Errorf("%s.tls_config.%s: %w", prefix, f.key, err)
		}
	}
	if u.Scheme == "https" || tc.CAFile != "" || tc.CertFile != "" || tc.CA != "" || tc.Cert != "" {
		// Parses the CA and the key pair, with Prometheus' messages.
		if _, err := config_util.NewTLSConfig(tc); err != nil {
			return fmt.Errorf("%s.tls_config: %w", prefix, err)
		}
	}
	return nil
}

func readable(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// validHeaderName reports whether name is an HTTP token (RFC 9110).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if r > 0x7e || r <= 0x20 || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// shownURL is a URL as its user wrote it, password hidden.
func shownURL(u *url.URL) string {
	r := u.Redacted()
	if unescaped, err := url.PathUnescape(r); err == nil {
		return unescaped
	}
	return r
}

// Backend reads a Prometheus-compatible HTTP API through client_golang's
// API client. It is safe for concurrent use.
type Backend struct {
	api     v1.API
	client  api.Client
	url     string
	timeout time.Duration
}

// NewBackend returns a client of cfg's API; cfg must be enabled, and is
// validated as query_backend. reg receives the request metrics and may
// be nil; a backend that replaces another (a reload) shares its metrics.
func NewBackend(cfg BackendConfig, reg prometheus.Registerer) (*Backend, error) {
	if !cfg.Enabled() {
		return nil, errors.New("query_backend.url: not set")
	}
	if err := cfg.Validate("query_backend"); err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("query_backend.url: %w", err)
	}
	hc := config_util.DefaultHTTPClientConfig
	hc.BasicAuth = cfg.BasicAuth
	hc.BearerToken = cfg.BearerToken
	hc.BearerTokenFile = cfg.BearerTokenFile
	hc.TLSConfig = cfg.TLSConfig
	if err := hc.Validate(); err != nil {
		return nil, fmt.Errorf("query_backend: %w", err)
	}
	rt, err := config_util.NewRoundTripperFromConfig(hc, "spangraph_query_backend", config_util.WithUserAgent("Spangraph"))
	if err != nil {
		return nil, fmt.Errorf("query_backend: %w", err)
	}
	t := &backendTransport{next: rt, headers: maps.Clone(cfg.Headers), tenantHeader: cfg.TenantHeader}
	for name := range cfg.Headers {
		if strings.EqualFold(name, cfg.TenantHeader) {
			// A fixed tenant for every read, as for the remote write.
			t.tenantHeader = ""
		}
	}
	inner, err := api.NewClient(api.Config{Address: strings.TrimRight(cfg.URL, "/"), RoundTripper: t})
	if err != nil {
		return nil, fmt.Errorf("query_backend.url: %w", err)
	}
	c := &backendClient{Client: inner, base: strings.TrimRight(u.Path, "/"), duration: requestDuration(reg)}
	return &Backend{api: v1.NewAPI(c), client: inner, url: shownURL(u), timeout: cfg.Timeout}, nil
}

// String is the backend's URL, password hidden, for messages.
func (b *Backend) String() string { return b.url }

// Check asks the backend for vector(1), as the default tenant, through
// the same transport, credentials and headers the reads use: nil means
// it is reachable and answers PromQL ("query backend <url>: reachable").
func (b *Backend) Check(ctx context.Context) error {
	rctx, cancel := b.request(ctx, tenant.Default, 0)
	defer cancel()
	_, _, _, err := b.api.Query(rctx, "vector(1)", time.Now())
	return b.fail(ctx, rctx, err)
}

// Close drops the idle connections, for a backend that a reload
// replaced.
func (b *Backend) Close() {
	if c, ok := b.client.(api.CloseIdler); ok {
		c.CloseIdleConnections()
	}
}

// requestInfo travels with one request's context to the transport.
type requestInfo struct {
	tenant string
	// maxBytes bounds the answer's body, decompressed; 0: unbounded.
	maxBytes int64
}

type requestKey struct{}

// request bounds one backend request by query_backend.timeout and tags it
// with its tenant and body limit.
func (b *Backend) request(ctx context.Context, tenantID string, maxBytes int64) (context.Context, context.CancelFunc) {
	ctx = context.WithValue(ctx, requestKey{}, &requestInfo{tenant: tenantID, maxBytes: maxBytes})
	return context.WithTimeout(ctx, b.timeout)
}

// evalTimeout is what is left of the request's time, sent as the API's
// timeout parameter so that the backend stops evaluating when nobody
// waits for the answer any longer.
func evalTimeout(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(d), time.Millisecond)
}

// errTooLarge stops reading an answer over its request's maxBytes.
var errTooLarge = errors.New("answer too large")

// fail turns a backend error into a query error that says what happened
// and what to check. parent is the query's context, rctx the request's.
func (b *Backend) fail(parent, rctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if parent.Err() != nil {
		// query.timeout, or the caller left: finish words it.
		return parent.Err()
	}
	if errors.Is(err, errTooLarge) {
		info, _ := rctx.Value(requestKey{}).(*requestInfo)
		return refuse(ErrorExec, ReasonTooManySamples,
			"the answer of query backend %s is over %d bytes, what query.max_samples (%d) samples take in memory; narrow the query",
			b.url, info.maxBytes, info.maxBytes/BytesPerSample)
	}
	if rctx.Err() != nil {
		return &Error{Type: ErrorTimeout, Err: fmt.Errorf("query backend %s did not answer within query_backend.timeout (%s); make the query cheaper or raise the timeout", b.url, b.timeout)}
	}
	var se *statusError
	if errors.As(err, &se) {
		return b.statusFailure(se)
	}
	var ve *v1.Error
	if errors.As(err, &ve) {
		switch ve.Type {
		case v1.ErrBadResponse:
			return &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s answered with something that is not a Prometheus API response (%s); check that query_backend.url is the API's base (Prometheus: http://host:9090, Mimir: http://host/prometheus)", b.url, ve.Msg)}
		case v1.ErrClient:
			return &Error{Type: ErrorBadData, Err: fmt.Errorf("query backend %s: %s: %s", b.url, ve.Msg, strings.TrimSpace(ve.Detail))}
		}
		return &Error{Type: errorType(string(ve.Type)), Err: fmt.Errorf("query backend %s: %s", b.url, ve.Msg)}
	}
	return &Error{Type: ErrorUnavailable, Err: fmt.Errorf("query backend %s cannot be reached: %v; check query_backend.url and that the server is up and reachable from this host", b.url, unwrapURLError(err))}
}

// unwrapURLError drops net/http's "Post \"url\":" prefix, which repeats
// the URL with the API path.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorType is the query error type of a Prometheus errorType.
func errorType(t string) string {
	switch t {
	case ErrorBadData, ErrorExec, ErrorTimeout, ErrorCanceled, ErrorInternal, ErrorNotFound, ErrorUnavailable:
		return t
	case string(v1.ErrServer):
		return ErrorInternal
	}
	return ErrorExec
}

// statusError is an answer with an HTTP status that is not one of the
// API's (2xx, 400 bad_data, 422 execution): a proxy's, an
// authenticator's, or the API's own 503 (timeout, canceled, unavailable)
// or 500 (internal).
type statusError struct {
	code int
	body []byte
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
}

// statusFailure says what an HTTP status from the backend means to a
// reader: the API's own errorType when the body carries one, else what
// the status means for Spangraph's configuration.
func (b *Backend) statusFailure(e *statusError) error {
	var body struct {
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	if json.Unmarshal(e.body, &body) == nil && body.ErrorType != "" {
		return &Error{Type: errorType(body.ErrorType), Err: fmt.Errorf("query backend %s: %s", b.url, body.Error)}
	}
	detail := strings.TrimSpace(string(e.body))
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	if detail != "" {
		detail = ": " + detail
	}
	switch {
	case e.code == http.StatusUnauthorized || e.code == http.StatusForbidden:
		// Spangraph's credentials, not the reader's: the operator must act.
		return &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s refused Spangraph's request (%v%s); check query_backend.basic_auth, bearer_token, headers and tenant_header", b.url, e, detail)}
	case e.code == http.StatusNotFound:
		return &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s has no Prometheus API there (%v%s); check query_backend.url (Prometheus: http://host:9090, Mimir: http://host/prometheus)", b.url, e, detail)}
	case e.code == http.StatusTooManyRequests || e.code == http.StatusBadGateway || e.code == http.StatusServiceUnavailable || e.code == http.StatusGatewayTimeout:
		return &Error{Type: ErrorUnavailable, Err: fmt.Errorf("query backend %s is overloaded or down (%v%s); retry later", b.url, e, detail)}
	case e.code/100 == 4:
		return &Error{Type: ErrorBadData, Err: fmt.Errorf("query backend %s refused the query (%v%s)", b.url, e, detail)}
	}
	return &Error{Type: ErrorInternal, Err: fmt.Errorf("query backend %s failed (%v%s)", b.url, e, detail)}
}

// backendClient is the api.Client under the v1 API: it times each
// request and turns a status the API does not answer with into a
// statusError, which the v1 client would reduce to "server error: 503".
type backendClient struct {
	api.Client
	base     string
	duration *prometheus.HistogramVec
}

func (c *backendClient) Do(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	t0 := time.Now()
	resp, body, err := c.Client.Do(ctx, req)
	status := "error"
	if resp != nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	c.duration.WithLabelValues(endpointOf(strings.TrimPrefix(req.URL.Path, c.base)), status).Observe(time.Since(t0).Seconds())
	if err != nil || resp == nil {
		return resp, body, err
	}
	if code := resp.StatusCode; code/100 != 2 && code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
		return resp, body, &statusError{code: code, body: body}
	}
	return resp, body, nil
}

// endpointOf names an API path for the request metrics: query,
// query_range, labels, label_values, series, query_exemplars.
func endpointOf(path string) string {
	path = strings.TrimPrefix(path, "/api/v1/")
	if strings.HasPrefix(path, "label/") && strings.HasSuffix(path, "/values") {
		return "label_values"
	}
	return strings.ReplaceAll(path, "/", "_")
}

var (
	registerMu sync.Mutex
	// unregistered serves backends built without a registerer.
	unregistered = newRequestDuration()
)

func newRequestDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spangraph_query_backend_request_duration_seconds",
		Help:    "Requests to query_backend, by API endpoint and HTTP status code (\"error\": no answer).",
		Buckets: []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"endpoint", "status_code"})
}

// requestDuration registers the request histogram with reg, or finds the
// one a previous backend (before a reload) registered.
func requestDuration(reg prometheus.Registerer) *prometheus.HistogramVec {
	if reg == nil {
		return unregistered
	}
	registerMu.Lock()
	defer registerMu.Unlock()
	h := newRequestDuration()
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				return existing
			}
		}
		return unregistered
	}
	return h
}

// backendTransport adds the configured headers and the tenant to every
// request, asks for gzip (Prometheus' transport does not) and bounds the
// answer's size.
type backendTransport struct {
	next         http.RoundTripper
	headers      map[string]string
	tenantHeader string
}

func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for name, v := range t.headers {
		req.Header.Set(name, v)
	}
	info, _ := req.Context().Value(requestKey{}).(*requestInfo)
	if info != nil && t.tenantHeader != "" && info.tenant != tenant.Default {
		req.Header.Set(t.tenantHeader, info.tenant)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		resp.Body = &gunzip{body: resp.Body}
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Uncompressed = true
	}
	if info != nil && info.maxBytes > 0 {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: info.maxBytes}
	}
	return resp, nil
}

// gunzip decompresses a body from its first Read on.
type gunzip struct {
	body io.ReadCloser
	zr   *gzip.Reader
}

func (g *gunzip) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.body)
		if err != nil {
			return 0, err
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

func (g *gunzip) Close() error { return g.body.Close() }

// limitedBody fails with errTooLarge past left bytes.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errTooLarge
	}
	return n, err
}
