// Package plugin adapts the Spangraph engine to the Grafana plugin SDK:
// QueryData (PromQL, service graph, RED table), CheckHealth, CallResource
// (the Prometheus-compatible read API and an authenticated OTLP intake) and
// streaming. It is the only package that knows Grafana.
//
// The engine belongs to the plugin process, not to a datasource instance:
// Grafana creates instances lazily and disposes of them whenever their
// settings change, while the OTLP receiver and the stores must run from the
// process start to its end. Instances therefore hold only their parsed
// settings and share one Service.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/gtime"
	"github.com/grafana/grafana-plugin-sdk-go/backend/instancemgmt"
	"github.com/grafana/grafana-plugin-sdk-go/backend/resource/httpadapter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/tenant"
)

// PluginID is the id in plugin.json.
const PluginID = "seed-spangraph-datasource"

// LoadConfig builds the process settings from the environment Grafana
// gives the plugin; see config.LoadPlugin.
func LoadConfig(environ []string) (config.Config, error) {
	return config.LoadPlugin(environ)
}

// Options of a Service.
type Options struct {
	// Query bounds the queries; zero means the engine's query: section.
	Query query.Config
	// Registerer receives the PromQL engine's metrics; nil for none.
	Registerer prometheus.Registerer
	// Logger logs the PromQL engine; nil discards.
	Logger *slog.Logger
}

// Service is what every datasource instance of the process shares: the
// engine, one PromQL querier and the span-rate tracker behind health.
type Service struct {
	eng     *engine.Engine
	querier *query.Querier
	// backend is query_backend, which every read goes to; nil: the
	// embedded store.
	backend *query.Backend
	// exemplars reads exemplars; the querier's, replaced in tests that
	// need it to fail.
	exemplars func(ctx context.Context, tenant, expr string, start, end time.Time) ([]query.ExemplarSeries, error)
	logger    *slog.Logger
	spans     *rateTracker
	startErr  error
}

// New returns the Service over a started engine.
func New(eng *engine.Engine, opts Options) *Service {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Query == (query.Config{}) {
		opts.Query = eng.Config().Query
	}
	q := query.NewQuerier(eng, opts.Query, logger, opts.Registerer)
	var backend *query.Backend
	if bc := eng.Config().QueryBackend; bc.Enabled() {
		b, err := query.NewBackend(bc, opts.Registerer)
		if err != nil {
			return Failed(err)
		}
		q.UseBackend(b)
		backend = b
	}
	return &Service{
		eng:       eng,
		querier:   q,
		backend:   backend,
		exemplars: q.Exemplars,
		logger:    logger,
		spans:     newRateTracker(eng.Receiver().Received, time.Minute, 12),
	}
}

// Querier returns the Service's PromQL querier, whose query limits and
// concurrency slots the standalone read API shares.
func (s *Service) Querier() *query.Querier { return s.querier }

// Failed returns a Service whose every answer is err: the plugin process
// keeps serving when its engine cannot start (a port in use, a bad
// setting), so that the datasource's health check shows why instead of
// Grafana reporting a plugin that died.
func Failed(err error) *Service {
	return &Service{startErr: err}
}

// Close stops the Service's background work. It does not stop the engine,
// which the process owns.
func (s *Service) Close() {
	if s.spans != nil {
		s.spans.stop()
	}
	if s.backend != nil {
		s.backend.Close()
	}
}

// Settings are a datasource instance's jsonData.
type Settings struct {
	// Tenant is the tenant the instance reads and writes.
	Tenant string `json:"tenant"`
	// TracesDatasourceUID, when set, gets "View traces" links.
	TracesDatasourceUID string `json:"tracesDatasourceUid"`
	// DefaultQueryType applies to queries with neither queryType nor expr.
	DefaultQueryType string `json:"defaultQueryType"`
	// TimeInterval is the datasource's "Min interval" (Grafana's
	// jsonData.timeInterval, as for Prometheus): the least step of a
	// PromQL query without a min step of its own.
	TimeInterval string `json:"timeInterval"`

	timeInterval time.Duration
}

// Query types.
const (
	QueryTypePromQL       = "promql"
	QueryTypeServiceGraph = "serviceGraph"
	QueryTypeREDTable     = "redTable"
)

// ParseSettings reads jsonData with its defaults and validates it.
func ParseSettings(jsonData []byte) (Settings, error) {
	var st Settings
	if len(jsonData) > 0 {
		if err := json.Unmarshal(jsonData, &st); err != nil {
			return st, fmt.Errorf("datasource settings: %w", err)
		}
	}
	if st.Tenant == "" {
		st.Tenant = tenant.Default
	}
	if err := tenant.Validate(st.Tenant); err != nil {
		return st, fmt.Errorf("datasource settings: tenant %q: %w", st.Tenant, err)
	}
	if st.TimeInterval != "" {
		d, err := gtime.ParseIntervalStringToTimeDuration(st.TimeInterval)
		if err != nil || d <= 0 {
			return st, fmt.Errorf("datasource settings: timeInterval %q is not a duration such as 15s", st.TimeInterval)
		}
		st.timeInterval = d
	}
	switch st.DefaultQueryType {
	case "":
		st.DefaultQueryType = QueryTypePromQL
	case QueryTypePromQL, QueryTypeServiceGraph, QueryTypeREDTable:
	default:
		return st, fmt.Errorf("datasource settings: defaultQueryType %q is not promql, serviceGraph or redTable", st.DefaultQueryType)
	}
	return st, nil
}

// Instance is one datasource: its settings over the shared Service.
type Instance struct {
	svc       *Service
	settings  Settings
	uid, name string
	resources backend.CallResourceHandler
}

// Interfaces the SDK's instance manager looks for on an instance.
var (
	_ backend.QueryDataHandler      = (*Instance)(nil)
	_ backend.CheckHealthHandler    = (*Instance)(nil)
	_ backend.CallResourceHandler   = (*Instance)(nil)
	_ backend.StreamHandler         = (*Instance)(nil)
	_ instancemgmt.InstanceDisposer = (*Instance)(nil)
)

// NewInstance is the datasource.InstanceFactoryFunc.
func (s *Service) NewInstance(_ context.Context, ds backend.DataSourceInstanceSettings) (instancemgmt.Instance, error) {
	st, err := ParseSettings(ds.JSONData)
	if err != nil {
		return nil, err
	}
	inst := &Instance{svc: s, settings: st, uid: ds.UID, name: ds.Name}
	inst.resources = httpadapter.New(inst.resourceMux())
	return inst, nil
}

// Dispose is called when Grafana replaces the instance. It holds nothing
// of its own: ingestion and the stores belong to the process.
func (*Instance) Dispose() {}

// failure is every answer of a Service that could not start.
func (s *Service) failure() error {
	if s.startErr == nil {
		return nil
	}
	return fmt.Errorf("Spangraph could not start: %w. Fix the [plugin.%s] settings in grafana.ini (GF_PLUGIN_* variables) and restart Grafana", s.startErr, PluginID)
}

// errorStatus maps a query error to the HTTP-like status of a data response.
func errorStatus(err error) backend.Status {
	var qe *query.Error
	if errors.As(err, &qe) {
		switch qe.Type {
		case query.ErrorBadData, query.ErrorExec:
			return backend.StatusBadRequest
		case query.ErrorTimeout:
			return backend.StatusTimeout
		case query.ErrorUnavailable:
			return backend.StatusTooManyRequests
		case query.ErrorCanceled:
			return backend.Status(499)
		}
	}
	return backend.StatusInternal
}
