// Package config is Spangraph's one configuration: a YAML file, then
// environment variables, then command-line flags, each overriding the one
// before, validated at start with errors that name the key.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"gopkg.in/yaml.v3"

	"github.com/spangraph/spangraph/pkg/auth"
	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/cluster"
	"github.com/spangraph/spangraph/pkg/limits"
	"github.com/spangraph/spangraph/pkg/query"
	"github.com/spangraph/spangraph/pkg/receiver"
	"github.com/spangraph/spangraph/pkg/registry"
	"github.com/spangraph/spangraph/pkg/remotewrite"
	"github.com/spangraph/spangraph/pkg/servicegraph"
	"github.com/spangraph/spangraph/pkg/spanmetrics"
)

// Config is everything a Spangraph process is told.
type Config struct {
	// DataDir holds one TSDB per tenant.
	DataDir string `yaml:"data_dir"`
	// OTLPGRPC, OTLPHTTP and HTTP are listen addresses; empty disables.
	OTLPGRPC string `yaml:"otlp_grpc"`
	OTLPHTTP string `yaml:"otlp_http"`
	HTTP     string `yaml:"http"`
	// CollectionInterval is how often series are written to the store.
	CollectionInterval time.Duration `yaml:"collection_interval"`
	// CheckpointInterval is how often the series counted since the last
	// collection are saved to disk, which bounds what a crash loses; 0
	// saves none, and a crash loses up to a collection interval; so does
	// one not shorter than the collection interval, which bounds the loss
	// as well on its own.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// Retention is how long the store keeps samples.
	Retention time.Duration `yaml:"retention"`
	// RollingWindow is how far back each tenant keeps, in memory, the
	// samples the node graph and the RED table read, so that windows
	// inside it are answered without the TSDB (package rolling); 0 keeps
	// none.
	RollingWindow time.Duration `yaml:"rolling_window"`
	// MaxExemplars sizes the exemplar store of each tenant; 0 disables.
	MaxExemplars int64 `yaml:"max_exemplars"`
	// MaxTenants caps the tenants one process has open at once.
	MaxTenants int `yaml:"max_tenants"`
	// TenantIdleTimeout closes a tenant that received no spans and was
	// not queried for this long, freeing its memory and its place under
	// max_tenants; it reopens on its next span or query. 0 keeps tenants
	// open for good.
	TenantIdleTimeout time.Duration `yaml:"tenant_idle_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	Receiver     receiver.Config     `yaml:"receiver"`
	Registry     registry.Config     `yaml:"registry"`
	SpanMetrics  spanmetrics.Config  `yaml:"spanmetrics"`
	ServiceGraph servicegraph.Config `yaml:"servicegraph"`
	// RemoteWrite lists endpoints in Prometheus' remote_write format.
	RemoteWrite remotewrite.Config `yaml:"remote_write"`

	// Auth maps credentials to tenants; no tenants means X-Scope-OrgID
	// decides, without authentication.
	Auth auth.Config `yaml:"auth"`
	// Limits are per-tenant ingestion limits; 0 = unlimited.
	Limits limits.Config `yaml:"limits"`
	// Overrides are per-tenant settings over the processors' (Tempo's
	// per-tenant overrides).
	Overrides Overrides `yaml:"overrides"`
	// Query bounds every query: PromQL, node graph, RED table, metadata.
	Query query.Config `yaml:"query"`
	// HTTPTLS is the TLS of the query API (http); OTLP's is receiver.tls.
	HTTPTLS auth.TLSConfig `yaml:"http_tls"`
	// Cluster makes the process one instance of a ring that shards spans
	// by trace id (pkg/cluster); off without cluster.join.
	Cluster cluster.Config `yaml:"cluster"`
	// QueryBackend, when its url is set, answers every read (PromQL, the
	// node graph, the RED table, completion) from a Prometheus-compatible
	// API instead of the embedded store: what every instance of a ring,
	// and every Grafana replica, points at to show one view.
	QueryBackend query.BackendConfig `yaml:"query_backend"`
	// HTTPServer bounds the query API's connections (timeouts, headers).
	HTTPServer query.ServerConfig `yaml:"http_server"`
	// MemoryLimit is the process's memory budget (0: a quarter of the
	// machine's or the container's memory). It sets the Go runtime's soft
	// limit and sizes, where they are not set, the queue of decoded
	// requests, the waiting half edges, the active series and the
	// queries' samples (see package budget).
	MemoryLimit budget.Bytes `yaml:"memory_limit"`
}

// Default returns the defaults of every key.
func Default() Config {
	c := Config{
		DataDir: "./data",
		// Loopback by default, as the OpenTelemetry Collector does: an open
		// receiver is an open door. Listen on all interfaces on purpose,
		// with auth configured.
		OTLPGRPC:           "127.0.0.1:4317",
		OTLPHTTP:           "127.0.0.1:4318",
		HTTP:               "127.0.0.1:9097",
		CollectionInterval: 15 * time.Second,
		CheckpointInterval: time.Second,
		Retention:          24 * time.Hour,
		RollingWindow:      time.Hour,
		MaxExemplars:       100_000,
		MaxTenants:         100,
		TenantIdleTimeout:  time.Hour,
		LogLevel:           "info",
		Receiver:           receiver.DefaultConfig(),
		Registry:           registry.DefaultConfig(),
		SpanMetrics:        spanmetrics.DefaultConfig(),
		ServiceGraph:       servicegraph.DefaultConfig(),
		Limits:             limits.DefaultConfig(),
		Query:              query.DefaultConfig(),
		HTTPServer:         query.DefaultServerConfig(),
		Cluster:            cluster.DefaultConfig(),
		QueryBackend:       query.DefaultBackendConfig(),
	}
	// Sized from memory_limit by Resolve unless set.
	c.Receiver.MaxQueueBytes = 0
	c.Query.MaxSamples = 0
	return c
}

// Resolve fills the settings left to the memory budget (0 in Default):
// memory_limit itself, then what it sizes. Keys set explicitly are kept.
func (c *Config) Resolve() {
	if c.MemoryLimit == 0 {
		c.MemoryLimit = budget.Default()
	}
	shares := budget.Split(c.MemoryLimit)
	if c.Receiver.MaxQueueBytes == 0 {
		c.Receiver.MaxQueueBytes = int(shares.Requests)
	}
	if c.Query.MaxSamples == 0 && c.Query.MaxConcurrency > 0 {
		c.Query.MaxSamples = int(int64(shares.Queries) / query.BytesPerSample / int64(c.Query.MaxConcurrency))
	}
	// In a ring every series carries its instance, as Tempo's generators'
	// do, so that instances writing to one store never collide.
	c.Registry.ConstLabels = labels.EmptyLabels()
	if c.Cluster.Enabled() {
		if c.Cluster.InstanceID == "" {
			c.Cluster.InstanceID, _ = os.Hostname()
		}
		c.Registry.ConstLabels = labels.FromStrings(InstanceLabel, c.Cluster.InstanceID)
	}
}

// InstanceLabel names the ring instance that wrote a series: Tempo's
// label, so that dashboards and recording rules written for Tempo's
// generators sum over it the same way.
const InstanceLabel = "__metrics_gen_instance"

// Validate resolves the budget's settings (see Resolve), then checks every
// key; the error names the first bad one.
func (c *Config) Validate() error {
	c.Resolve()
	if c.MemoryLimit < budget.Minimum {
		return fmt.Errorf("memory_limit: must be at least %s, got %s", budget.Minimum, c.MemoryLimit)
	}
	if int64(c.Receiver.MaxRequestBytes) > int64(c.Receiver.MaxQueueBytes) {
		return fmt.Errorf("receiver.max_queue_bytes: must be at least receiver.max_request_bytes (%d), got %d (an eighth of memory_limit %s unless set)",
			c.Receiver.MaxRequestBytes, c.Receiver.MaxQueueBytes, c.MemoryLimit)
	}
	switch {
	case c.DataDir == "":
		return errors.New("data_dir: required")
	case c.CollectionInterval < time.Second:
		return fmt.Errorf("collection_interval: must be at least 1s, got %s", c.CollectionInterval)
	case c.CheckpointInterval < 0 || (c.CheckpointInterval > 0 && c.CheckpointInterval < 100*time.Millisecond):
		return fmt.Errorf("checkpoint_interval: must be 0 (none) or at least 100ms, got %s", c.CheckpointInterval)
	case c.Retention < c.CollectionInterval:
		return fmt.Errorf("retention: must be at least collection_interval (%s), got %s", c.CollectionInterval, c.Retention)
	case c.RollingWindow < 0 || (c.RollingWindow > 0 && c.RollingWindow < c.CollectionInterval):
		return fmt.Errorf("rolling_window: must be 0 (none) or at least collection_interval (%s), got %s", c.CollectionInterval, c.RollingWindow)
	case c.RollingWindow > c.Retention:
		return fmt.Errorf("rolling_window: must not exceed retention (%s), got %s", c.Retention, c.RollingWindow)
	case c.MaxExemplars < 0:
		return fmt.Errorf("max_exemplars: must not be negative, got %d", c.MaxExemplars)
	case c.MaxTenants < 1:
		return fmt.Errorf("max_tenants: must be at least 1, got %d", c.MaxTenants)
	case c.TenantIdleTimeout < 0 || (c.TenantIdleTimeout > 0 && c.TenantIdleTimeout < time.Second):
		return fmt.Errorf("tenant_idle_timeout: must be 0 (never close) or at least 1s, got %s", c.TenantIdleTimeout)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if c.Cluster.Enabled() && c.Receiver.TLS.CertFile != "" {
		return errors.New("cluster.join: ring members forward spans to each other's OTLP/gRPC listener in plain text, which receiver.tls would refuse; TLS between members is not supported yet: keep the ring on a private network without receiver.tls, or run one instance")
	}
	if err := c.Receiver.Validate("receiver"); err != nil {
		return err
	}
	if err := c.Registry.Validate("registry"); err != nil {
		return err
	}
	if err := c.RemoteWrite.Validate("remote_write"); err != nil {
		return err
	}
	if err := c.SpanMetrics.Validate("spanmetrics"); err != nil {
		return err
	}
	if err := c.ServiceGraph.Validate("servicegraph"); err != nil {
		return err
	}
	if err := c.validateOverrides(); err != nil {
		return err
	}
	if err := c.Auth.Validate("auth"); err != nil {
		return err
	}
	if err := c.Limits.Validate("limits"); err != nil {
		return err
	}
	if err := c.Query.Validate("query"); err != nil {
		return err
	}
	if err := c.HTTPServer.Validate("http_server"); err != nil {
		return err
	}
	if err := c.Cluster.Validate("cluster"); err != nil {
		return err
	}
	if c.Cluster.Enabled() && c.OTLPGRPC == "" {
		return errors.New("otlp_grpc: a ring member forwards spans to the others' OTLP/gRPC listeners, so it needs one: set otlp_grpc, or remove cluster.join")
	}
	if err := c.QueryBackend.Validate("query_backend"); err != nil {
		return err
	}
	return c.HTTPTLS.Validate("http_tls")
}

// LoadFile reads a YAML file over c. Unknown keys are errors: a misspelt
// key silently ignored is a setting silently not applied.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := c.LoadYAML(data); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// LoadYAML decodes YAML over c.
func (c *Config) LoadYAML(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.ReplaceAll(err.Error(), " in type config.Config", "")
		// yaml.v3 leaves the line out of syntax errors on the first line
		// (it omits line 0); every other syntax error carries one.
		var te *yaml.TypeError
		if !errors.As(err, &te) && !strings.Contains(msg, "line ") {
			msg = strings.Replace(msg, "yaml: ", "yaml: line 1: ", 1)
		}
		return errors.New(msg)
	}
	return nil
}

// configFlag is the flag naming a YAML file, read before the other flags
// apply.
const configFlag = "config"

// Flags are the command-line settings that override the file, one per
// setting plus --config; Load applies the ones given on the command line.
type Flags struct {
	set *flag.FlagSet
	// ConfigFile is --config.
	ConfigFile string
	// given holds what the flags parse into; Load copies only the fields
	// of the flags that were set, so that a flag left alone does not
	// reset the file's value with its default.
	given Config
	// urls collects the repeated flags of URL-list keys, by flag name;
	// Load turns them into the key's list.
	urls map[string]*remotewrite.URLFlag
}

// RegisterFlags defines on fs a flag for every setting, plus --config.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{set: fs, given: Default(), urls: map[string]*remotewrite.URLFlag{}}
	fs.StringVar(&f.ConfigFile, configFlag, "", "YAML config file; flags override it")
	for _, s := range settings {
		usage := s.usage + " (" + s.yaml + ")"
		// The flag package's own kinds, so that -h names the type
		// (duration, int, string) and shows the default.
		switch p := s.field(&f.given).(type) {
		case *string:
			fs.StringVar(p, s.flag, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, s.flag, *p, usage)
		case *int:
			fs.IntVar(p, s.flag, *p, usage)
		case *int64:
			fs.Int64Var(p, s.flag, *p, usage)
		case *budget.Bytes:
			fs.Var(p, s.flag, usage)
		case *[]string:
			fs.Var((*listFlag)(p), s.flag, usage)
		case *remotewrite.Config:
			u := &remotewrite.URLFlag{}
			f.urls[s.flag] = u
			fs.Var(u, s.flag, usage)
		default:
			panic(fmt.Sprintf("config: setting %s: unsupported field type %T", s.yaml, p))
		}
	}
	return f
}

// listFlag is a comma-separated list flag; given again, it adds to the
// list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, splitList(v)...)
	return nil
}

// Load builds the config: defaults, then the file, then the flags that
// were set, then validation.
func (f *Flags) Load() (Config, error) {
	c := Default()
	if f.ConfigFile != "" {
		if err := c.LoadFile(f.ConfigFile); err != nil {
			return c, fmt.Errorf("--%s: %w", configFlag, err)
		}
	}
	var err error
	f.set.Visit(func(fl *flag.Flag) {
		s, ok := settingByFlag(fl.Name)
		if !ok || err != nil {
			return
		}
		if urls, ok := f.urls[s.flag]; ok {
			if *s.field(&c).(*remotewrite.Config), err = remotewrite.FromURLs(*urls); err != nil {
				err = fmt.Errorf("--%s: %w", s.flag, err)
			}
			return
		}
		reflect.ValueOf(s.field(&c)).Elem().Set(reflect.ValueOf(s.field(&f.given)).Elem())
	})
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}
