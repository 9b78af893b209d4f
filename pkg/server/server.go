// Package server is Spangraph's one HTTP front door for readers: the
// Prometheus-compatible API with the service-graph and RED endpoints,
// self-metrics, profiles, the tenants' states, health and readiness.
//
// `spangraph serve`, `spangraph demo` and the Grafana plugin (when its http
// setting is on) all serve it through New, so that authentication, TLS,
// connection timeouts and query limits are the same wherever it runs.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spangraph/spangraph/pkg/api"
	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// Server is the read API listening on the http address.
type Server struct {
	srv *http.Server
	lis net.Listener
}

// Start listens on the engine's http address with its http_tls and
// http_server settings and serves Handler. It warns when the address is
// reachable from other machines while authentication is off.
func Start(eng *engine.Engine, q *query.Querier, logger *slog.Logger) (*Server, error) {
	cfg := eng.Config()
	tlsCfg, err := cfg.HTTPTLS.ServerConfig("http_tls", logger)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("query API cannot listen on %s (http): %w", cfg.HTTP, err)
	}
	srv := cfg.HTTPServer.Server(Handler(eng, q), tlsCfg)
	if tlsCfg != nil {
		go func() { _ = srv.ServeTLS(lis, "", "") }()
	} else {
		go func() { _ = srv.Serve(lis) }()
	}
	if auth.Exposed(lis.Addr().String()) && !eng.Authenticator().Enabled() {
		logger.Warn("the query API listens beyond this machine with authentication off: anyone who reaches it reads every tenant; configure auth.tenants or listen on 127.0.0.1",
			"http", lis.Addr().String())
	}
	logger.Info("query API listening", "addr", lis.Addr().String(), "tls", tlsCfg != nil, "auth", eng.Authenticator().Enabled())
	return &Server{srv: srv, lis: lis}, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server and its connections.
func (s *Server) Close() error { return s.srv.Close() }

// health is the engine's health of a tenant and, with query_backend set,
// whether the backend answers.
type health struct {
	engine.Health
	QueryBackend *queryBackendHealth `json:"query_backend,omitempty"`
}

type queryBackendHealth struct {
	URL       string `json:"url"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
}

func backendHealth(ctx context.Context, b *query.Backend) *queryBackendHealth {
	if b == nil {
		return nil
	}
	h := &queryBackendHealth{URL: b.String(), Reachable: true}
	if err := b.Check(ctx); err != nil {
		h.Reachable, h.Error = false, err.Error()
	}
	return h
}

// Handler is the read API's routes:
//   - /api/v1/…: the Prometheus-compatible API; a request reads the tenant
//     its credentials (or, with auth off, X-Scope-OrgID) name, and a
//     refusal is answered in Prometheus' JSON error format;
//   - /metrics, /debug/pprof/, /-/tenants, /-/health?tenant=: what concerns
//     every tenant (the last: one tenant's engine health, as JSON), for
//     operators only (auth.Operator);
//   - POST /-/reload: re-reads the config (with http_server.enable_reload),
//     for operators only;
//   - /-/healthy, /-/ready: probes, open;
//   - /: a page of links for a person with a browser.
func Handler(eng *engine.Engine, q *query.Querier) http.Handler {
	a := eng.Authenticator()
	promAPI := api.New(q, func(r *http.Request) (string, error) {
		if t, ok := auth.TenantFrom(r.Context()); ok {
			return t, nil
		}
		return "", errors.New("no tenant in the request context")
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", readerAuth(a, promAPI))
	mux.Handle("/metrics", a.OperatorMiddleware(promhttp.Handler()))
	// Profiles, as Prometheus serves them, for performance work in place.
	mux.Handle("/debug/pprof/", a.OperatorMiddleware(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", a.OperatorMiddleware(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/-/tenants", a.OperatorMiddleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"tenants": eng.TenantStatuses()})
	})))
	mux.Handle("/-/health", a.OperatorMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		if t == "" {
			t = tenant.Default
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(health{Health: eng.Health(t), QueryBackend: backendHealth(r.Context(), q.Backend())})
	})))
	mux.Handle("/-/reload", a.OperatorMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Prometheus' lifecycle endpoint, with its answers.
		if !eng.Config().HTTPServer.EnableReload {
			http.Error(w, "Lifecycle API is not enabled: set http_server.enable_reload.", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "reload with POST", http.StatusMethodNotAllowed)
			return
		}
		if err := eng.ReloadConfig(); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
			return
		}
	})))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "Spangraph is Healthy.\n")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := eng.Ready(); err != nil {
			http.Error(w, "Spangraph is not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "Spangraph is Ready.\n")
	})
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, indexPage)
	})
	return mux
}

// readerAuth authenticates API readers as the receiver authenticates
// senders, puts the tenant in the context, and answers refusals in
// Prometheus' JSON error format, which API clients parse.
func readerAuth(a *auth.Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, err := a.Tenant(r.Header.Get("Authorization"), r.Header.Get("X-Scope-OrgID"))
		if err != nil {
			typ := query.ErrorBadData
			switch auth.HTTPStatus(err) {
			case http.StatusUnauthorized:
				a.SetChallenge(w.Header())
				typ = query.ErrorUnauthorized
			case http.StatusForbidden:
				typ = query.ErrorForbidden
			}
			api.WriteError(w, &query.Error{Type: typ, Err: err})
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), tenant)))
	})
}

// indexPage is what a person who opens the query port in a browser sees.
const indexPage = `<!doctype html>
<title>Spangraph</title>
<h1>Spangraph</h1>
<p>RED metrics and a service graph from OpenTelemetry traces. The Prometheus HTTP API is under /api/v1/.</p>
<ul>
<li><a href="api/v1/query?query=sum+by+(service)+(rate(traces_spanmetrics_calls_total%5B1m%5D))">Calls per second by service</a> (PromQL)</li>
<li><a href="api/v1/service-graph">Service graph</a>: nodes and edges</li>
<li><a href="api/v1/red?group_by=service">RED table</a>: rate, errors and latency by service</li>
<li><a href="api/v1/label/__name__/values">Metric names</a></li>
<li><a href="metrics">Self-metrics</a></li>
<li><a href="-/tenants">Tenants</a>, <a href="-/ready">readiness</a></li>
</ul>
`
