package plugin

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/grafana/grafana-plugin-sdk-go/backend"

	"github.com/spangraph/spangraph/pkg/api"
)

// CallResource serves, under /api/datasources/uid/<uid>/resources/:
//   - api/v1/… — the Prometheus-compatible read API of the standalone
//     server (query, query_range, labels, label/<name>/values, series,
//     query_exemplars, service-graph, red), for the instance's tenant only;
//   - otlp/v1/traces — OTLP/HTTP intake into the instance's tenant, so that
//     traces can be sent with a Grafana service-account token instead of
//     to an open receiver port.
func (i *Instance) CallResource(ctx context.Context, req *backend.CallResourceRequest, sender backend.CallResourceResponseSender) error {
	if err := i.svc.failure(); err != nil {
		return sender.Send(&backend.CallResourceResponse{
			Status:  http.StatusServiceUnavailable,
			Headers: map[string][]string{"Content-Type": {"application/json"}},
			Body:    []byte(`{"status":"error","errorType":"unavailable","error":` + quoteJSON(err.Error()) + `}`),
		})
	}
	return i.resources.CallResource(ctx, req, sender)
}

func (i *Instance) resourceMux() http.Handler {
	// The tenant is the instance's setting, never a header: a browser
	// could otherwise read any tenant through a datasource it may query.
	tenant := func(*http.Request) (string, error) { return i.settings.Tenant, nil }
	mux := http.NewServeMux()
	if i.svc.startErr == nil {
		mux.Handle("/api/v1/", api.New(i.svc.querier, tenant))
		mux.HandleFunc("/otlp/v1/traces", i.ingest)
	}
	return mux
}

// ingest hands an OTLP/HTTP export to the receiver as if it had arrived on
// its own port, with the tenant forced to the instance's.
func (i *Instance) ingest(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("X-Scope-OrgID", i.settings.Tenant)
	i.svc.eng.Receiver().HTTPHandler().ServeHTTP(w, r)
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}
