// Command spangraph runs the Spangraph engine without Grafana: `serve` takes
// OTLP and answers the Prometheus HTTP API, `demo` does the same with
// built-in traffic, `loadgen` sends traces to any OTLP endpoint, and
// `repair` moves the damaged parts of a quarantined tenant's store aside.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/query"
)

const usage = `spangraph turns OpenTelemetry traces into RED metrics and a service graph.

Usage:
  spangraph serve   [flags]   receive OTLP, store series, serve the Prometheus HTTP API
  spangraph demo    [flags]   serve, with built-in shop traffic
  spangraph loadgen [flags]   send synthetic traces to an OTLP endpoint
  spangraph repair --tenant ID [--data-dir DIR]   move a quarantined tenant's damaged files aside

Run "spangraph <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:], false)
	case "demo":
		err = serve(ctx, os.Args[2:], true)
	case "loadgen":
		err = runLoadgen(ctx, os.Args[2:])
	case "repair":
		err = runRepair(os.Args[2:], os.Stdout)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spangraph:", err)
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func serve(ctx context.Context, args []string, demo bool) error {
	name := "serve"
	if demo {
		name = "demo"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	flags := config.RegisterFlags(fs)
	demoRate := 0.0
	if demo {
		fs.Float64Var(&demoRate, "rate", 2000, "demo traffic in spans per second")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := flags.Load()
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel)
	if demo {
		if err := demoDefaults(fs, &cfg); err != nil {
			return err
		}
	}

	eng, err := engine.New(cfg, logger, prometheus.DefaultRegisterer)
	if err != nil {
		return err
	}
	eng.LimitProcessMemory()
	if err := eng.Start(); err != nil {
		return err
	}
	defer func() {
		logger.Info("stopping: draining the queue and writing a last collection")
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		eng.Stop(stopCtx)
		logger.Info("stopped")
	}()

	httpTLS, err := cfg.HTTPTLS.ServerConfig("http_tls", logger)
	if err != nil {
		return err
	}
	srv, lis, err := startHTTP(cfg.HTTP, cfg.HTTPServer.Server(newServerMux(eng, logger), httpTLS))
	if err != nil {
		return err
	}
	defer srv.Close()
	logger.Info("query API listening", "addr", lis.Addr().String(), "data_dir", cfg.DataDir)

	if demo {
		return runDemo(ctx, eng, lis.Addr().String(), demoRate, logger)
	}
	<-ctx.Done()
	return nil
}

// demoDefaults gives the demo a fresh data directory and a short
// collection interval unless the flags say otherwise.
func demoDefaults(fs *flag.FlagSet, cfg *config.Config) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["data-dir"] {
		dir, err := os.MkdirTemp("", "spangraph-demo-")
		if err != nil {
			return err
		}
		cfg.DataDir = dir
	}
	if !set["collection-interval"] {
		cfg.CollectionInterval = 5 * time.Second
	}
	return cfg.Validate()
}

func startHTTP(addr string, srv *http.Server) (*http.Server, net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("query API cannot listen on %s (http): %w", addr, err)
	}
	if srv.TLSConfig != nil {
		go func() { _ = srv.ServeTLS(lis, "", "") }()
	} else {
		go func() { _ = srv.Serve(lis) }()
	}
	return srv, lis, nil
}

// newServerMux is the standalone server's HTTP surface.
func newServerMux(eng *engine.Engine, logger *slog.Logger) *http.ServeMux {
	q := query.NewQuerier(eng, eng.Config().Query, logger.With("component", "query"), prometheus.DefaultRegisterer)
	// The middleware authenticates readers with the same credentials as
	// senders (a nil Authenticator reads X-Scope-OrgID as before) and puts
	// the tenant in the context. /metrics and the health endpoints stay
	// open for scrapers and probes.
	api := query.NewAPI(q, func(r *http.Request) (string, error) {
		if t, ok := auth.TenantFrom(r.Context()); ok {
			return t, nil
		}
		return "", errors.New("no tenant in the request context")
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", eng.Authenticator().HTTPMiddleware(api, nil))
	mux.Handle("/metrics", promhttp.Handler())
	// Profiles, as Prometheus serves them, for performance work in place.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/-/tenants", tenantsHandler(eng))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "Spangraph is Healthy.\n")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "Spangraph is Ready.\n")
	})
	return mux
}

func runDemo(ctx context.Context, eng *engine.Engine, apiAddr string, rate float64, logger *slog.Logger) error {
	otlpAddr := eng.Receiver().HTTPAddr()
	if otlpAddr == "" {
		return errors.New("the demo sends its traffic over OTLP/HTTP: set --otlp-http")
	}
	api := "http://" + localhost(apiAddr)
	fmt.Fprintf(os.Stderr, `
Spangraph demo is running: a web shop sends %.0f spans/s to OTLP/HTTP %s.
Series are collected every %s into %s.

  PromQL:        curl -s '%s/api/v1/query' --data-urlencode 'query=sum by (service) (rate(traces_spanmetrics_calls_total[1m]))'
  Edges:         curl -s '%s/api/v1/query' --data-urlencode 'query=sum by (client, server) (rate(traces_service_graph_request_total[1m]))'
  Self-metrics:  %s/metrics
  Your own app:  point an OpenTelemetry SDK at http://%s (OTLP/HTTP) or the OTLP/gRPC port.

Press Ctrl-C to stop.
`, rate, otlpAddr, eng.Config().CollectionInterval, eng.Config().DataDir, api, api, api, localhost(otlpAddr))
	opts := loadgen.DefaultOptions()
	opts.Endpoint = "http://" + localhost(otlpAddr)
	opts.Rate = rate
	opts.TracesPerRequest = 10
	opts.Concurrency = 2
	opts.Duration = 100 * 365 * 24 * time.Hour
	rep, err := loadgen.Run(ctx, opts, nil)
	if ctx.Err() != nil {
		logger.Info("demo traffic stopped", "report", rep.String())
		return nil
	}
	return err
}

// localhost turns a wildcard listen address into one a browser can open.
func localhost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func runLoadgen(ctx context.Context, args []string) error {
	o := loadgen.DefaultOptions()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "OTLP/HTTP base URL (http://host:4318) or OTLP/gRPC address (host:4317)")
	fs.StringVar(&o.Protocol, "protocol", o.Protocol, "http or grpc")
	fs.StringVar(&o.Encoding, "encoding", o.Encoding, "protobuf or json (http only)")
	fs.BoolVar(&o.Gzip, "gzip", o.Gzip, "gzip request bodies (http)")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "spans per second; 0 sends as fast as the target accepts")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to send; 0 for no limit (then --spans ends the run)")
	fs.Int64Var(&o.Spans, "spans", o.Spans, "stop after this many spans; 0 for no limit")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "requests in flight")
	fs.IntVar(&o.Services, "services", o.Services, "services in the topology (10 make the shop; more are added below it)")
	fs.IntVar(&o.TracesPerRequest, "traces-per-request", o.TracesPerRequest, "traces in one export request")
	fs.BoolVar(&o.SplitByService, "split-by-service", o.SplitByService, "send each service's spans in requests of their own, as per-service SDK exporters do (default: whole traces in one request, as from a Collector)")
	fs.IntVar(&o.SpanNames, "span-names", o.SpanNames, "random span-name variants per operation, to stress cardinality; 0 for none")
	fs.Float64Var(&o.ErrorScale, "error-scale", o.ErrorScale, "multiplies every service's error ratio")
	fs.IntVar(&o.Depth, "depth", o.Depth, "maximum call depth of a trace")
	fs.IntVar(&o.AttributeValues, "attribute-cardinality", o.AttributeValues, "distinct values of a span attribute app.customer; 0 for none")
	fs.Float64Var(&o.SilentFraction, "silent-fraction", o.SilentFraction, "share of spans that are client calls never answered: half to uninstrumented peers named by peer.service, half to hosts known only by server.address")
	fs.StringVar(&o.Tenant, "tenant", o.Tenant, "X-Scope-OrgID to send")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var progress io.Writer
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		progress = os.Stderr
	}
	rep, err := loadgen.Run(ctx, o, progress)
	fmt.Println(rep.String())
	return err
}
