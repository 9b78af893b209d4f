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
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/engine"
	"github.com/spangraph/spangraph/pkg/loadgen"
	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/server"
)

const usage = `spangraph turns OpenTelemetry traces into RED metrics and a service graph.

Usage:
  spangraph serve   [flags]   receive OTLP, store series, serve the Prometheus HTTP API
  spangraph demo    [flags]   serve, with built-in shop traffic
  spangraph loadgen [flags]   send synthetic traces to an OTLP endpoint
  spangraph repair --tenant ID [--data-dir DIR]   move a quarantined tenant's damaged files aside

  spangraph version             print the version

Run "spangraph <command> -h" for the flags of a command.
`

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the VCS revision Go records in the binary stands in for it.
var version = ""

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
	case "version", "--version", "-version":
		fmt.Println(versionString())
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	var printed flagError
	if errors.As(err, &printed) {
		// The flag package has printed the error and the usage already.
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spangraph:", err)
		os.Exit(1)
	}
}

// versionString is the version, the VCS revision and the Go release the
// binary was built from.
func versionString() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" {
		v = "devel"
	}
	if rev != "" {
		v += " (" + rev + ")"
	}
	return "spangraph " + v + " " + runtime.Version()
}

// flagError is an error the flag package has already printed, with the
// usage.
type flagError struct{ error }

// parseFlags parses args into fs and refuses anything left over: a stray
// word ends flag parsing, so every flag after it would be silently
// ignored and the command would run on its defaults.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{err}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %s takes only flags, and none after it were read (see spangraph %s -h)",
			fs.Arg(0), fs.Name(), fs.Name())
	}
	return nil
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
		// What -h shows: the demo's own defaults, which demoDefaults applies.
		fs.Lookup("data-dir").DefValue = "a new temporary directory, removed at exit"
		fs.Lookup("collection-interval").DefValue = demoInterval.String()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := flags.Load()
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel)
	if demo {
		cleanup, err := demoDefaults(fs, &cfg)
		if err != nil {
			return err
		}
		// Deferred before the engine starts, so it runs after it stops.
		defer cleanup()
	}

	eng, err := engine.New(cfg, logger, prometheus.DefaultRegisterer)
	if err != nil {
		return err
	}
	if !demo {
		// SIGHUP and POST /-/reload read the file and the flags again;
		// the demo's settings are its own, made at start.
		eng.SetConfigSource(flags.Load)
		stopReload := reloadOnSIGHUP(eng)
		defer stopReload()
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

	q := query.NewQuerier(eng, cfg.Query, logger.With("component", "query"), prometheus.DefaultRegisterer)
	if cfg.QueryBackend.Enabled() {
		b, err := query.NewBackend(cfg.QueryBackend, prometheus.DefaultRegisterer)
		if err != nil {
			return err
		}
		defer b.Close()
		q.UseBackend(b)
		logger.Info("reads go to the query backend", "url", b.String())
	}
	srv, err := server.Start(eng, q, logger)
	if err != nil {
		return err
	}
	defer srv.Close()

	if demo {
		return runDemo(ctx, eng, srv.Addr(), demoRate, logger)
	}
	<-ctx.Done()
	return nil
}

// demoInterval is the demo's collection interval: short, so that a new
// user sees the first figures within seconds.
const demoInterval = 5 * time.Second

// demoDefaults gives the demo a fresh data directory and a short
// collection interval unless the flags or the config file say otherwise.
// cleanup removes the directory it made.
func demoDefaults(fs *flag.FlagSet, cfg *config.Config) (cleanup func(), err error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fromFile := config.Default()
	if path := fs.Lookup("config").Value.String(); path != "" {
		if err := fromFile.LoadFile(path); err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
	}
	def := config.Default()
	cleanup = func() {}
	if !set["data-dir"] && fromFile.DataDir == def.DataDir {
		dir, err := os.MkdirTemp("", "spangraph-demo-")
		if err != nil {
			return nil, err
		}
		cfg.DataDir = dir
		cleanup = func() { _ = os.RemoveAll(dir) }
	}
	if !set["collection-interval"] && fromFile.CollectionInterval == def.CollectionInterval {
		cfg.CollectionInterval = demoInterval
	}
	if err := cfg.Validate(); err != nil {
		cleanup()
		return nil, err
	}
	return cleanup, nil
}

func runDemo(ctx context.Context, eng *engine.Engine, apiAddr string, rate float64, logger *slog.Logger) error {
	otlpAddr := eng.Receiver().HTTPAddr()
	if otlpAddr == "" {
		return errors.New("the demo sends its traffic over OTLP/HTTP: set --otlp-http")
	}
	api := "http://" + auth.DialAddr(apiAddr, "localhost")
	grpcAddr := "off"
	if a := eng.Receiver().GRPCAddr(); a != "" {
		grpcAddr = auth.DialAddr(a, "localhost")
	}
	fmt.Fprintf(os.Stderr, `
Spangraph demo is running: a web shop sends %.0f spans/s to OTLP/HTTP %s.
Series are collected every %s into %s (removed at exit unless --data-dir is given).

  Start here:    %s/
  PromQL:        curl -s '%s/api/v1/query' --data-urlencode 'query=sum by (service) (rate(traces_spanmetrics_calls_total[1m]))'
  Service graph: curl -s '%s/api/v1/service-graph'
  RED table:     curl -s '%s/api/v1/red?group_by=service'
  Self-metrics:  %s/metrics
  Your own app:  point an OpenTelemetry SDK at http://%s (OTLP/HTTP) or %s (OTLP/gRPC).

Press Ctrl-C to stop.
`, rate, otlpAddr, eng.Config().CollectionInterval, eng.Config().DataDir, api, api, api, api, api, auth.DialAddr(otlpAddr, "localhost"), grpcAddr)
	opts := loadgen.DefaultOptions()
	opts.Endpoint = "http://" + auth.DialAddr(otlpAddr, "localhost")
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

func runLoadgen(ctx context.Context, args []string) error {
	o := loadgen.DefaultOptions()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	o.RegisterFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	endpointSet := false
	fs.Visit(func(f *flag.Flag) { endpointSet = endpointSet || f.Name == "endpoint" })
	if o.Protocol == "grpc" && !endpointSet {
		o.Endpoint = loadgen.DefaultGRPCEndpoint
	}
	// Before any traffic, so that a bad flag is not buried under a report
	// of nothing sent.
	if err := o.Validate(); err != nil {
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

// reloadOnSIGHUP reloads the engine's config on each SIGHUP, as Prometheus
// does, until the returned function is called. The engine logs and counts
// the outcome.
func reloadOnSIGHUP(eng *engine.Engine) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				_ = eng.ReloadConfig()
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }
}
