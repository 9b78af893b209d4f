package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spangraph/spangraph/pkg/budget"
	"github.com/spangraph/spangraph/pkg/remotewrite"
)

// setting is one top-level scalar key of Config under every name it goes
// by. The settings table is the only list of them: RegisterFlags,
// Flags.Load and LoadEnv are made from it, and so are the first rows of
// README.md's configuration table (TestREADMEConfigTable keeps them in
// step; `go test ./pkg/config -run TestREADMEConfigTable -update` rewrites
// them).
type setting struct {
	// yaml is the key in the file, and the name errors give.
	yaml string
	// flag is the command-line flag, without its dashes.
	flag string
	// env is the environment key, lower case: LoadEnv reads it as
	// prefix + upper case (GF_PLUGIN_DATA_DIR), as in grafana.ini.
	env string
	// usage is the flag's help; " (<yaml>)" is appended.
	usage string
	// doc is the README's "meaning" cell, in Markdown.
	doc string
	// shownDefault is the README's "default" cell where Default's value
	// does not say it (a default computed at start, an empty list);
	// otherwise the cell is Default's value.
	shownDefault string
	// emptyMeansOff: an empty environment value is a setting (no
	// listener, no endpoint) rather than a key left blank in grafana.ini,
	// which keeps the default.
	emptyMeansOff bool
	// field points at the key's field of c: a *string, *time.Duration,
	// *int, *int64, *budget.Bytes, or *remotewrite.Config, which flags
	// and the environment set from bare URLs.
	field func(c *Config) any
}

// settings are the top-level scalar keys, in the README's order. The
// environment is read in this order too, so that of two bad variables the
// same one is always reported.
var settings = []setting{
	{yaml: "data_dir", flag: "data-dir", env: "data_dir",
		usage: "directory of the embedded store",
		doc:   "one TSDB per tenant under `tenants/<id>/`",
		field: func(c *Config) any { return &c.DataDir }},
	{yaml: "otlp_grpc", flag: "otlp-grpc", env: "otlp_grpc", emptyMeansOff: true,
		usage: "OTLP/gRPC listen address, empty to disable",
		doc:   "OTLP/gRPC listen address, empty disables; `:4317` listens on every interface (configure `auth` first)",
		field: func(c *Config) any { return &c.OTLPGRPC }},
	{yaml: "otlp_http", flag: "otlp-http", env: "otlp_http", emptyMeansOff: true,
		usage: "OTLP/HTTP listen address, empty to disable",
		doc:   "OTLP/HTTP listen address (`POST /v1/traces`), empty disables",
		field: func(c *Config) any { return &c.OTLPHTTP }},
	{yaml: "http", flag: "http", env: "http", emptyMeansOff: true,
		usage: "Prometheus-compatible query API, /metrics and health, empty to disable",
		doc:   "query API, `/metrics`, probes; empty disables",
		field: func(c *Config) any { return &c.HTTP }},
	{yaml: "collection_interval", flag: "collection-interval", env: "collection_interval",
		usage: "how often series are written to the store",
		doc:   "how often series are written to the store (≥ 1s)",
		field: func(c *Config) any { return &c.CollectionInterval }},
	{yaml: "checkpoint_interval", flag: "checkpoint-interval", env: "checkpoint_interval",
		usage: "how often series counted since the last collection are saved, which bounds what a crash loses; 0 disables",
		doc:   "how often the series counted since the last collection are saved to `<data_dir>/tenants/<id>/registry-checkpoint`: a crash (kill -9, out of memory) loses at most this much of span metrics and settled edges instead of a `collection_interval` (see *What a 200 means*); 0 disables, as does a value not below `collection_interval`; ≥ 100ms",
		field: func(c *Config) any { return &c.CheckpointInterval }},
	{yaml: "retention", flag: "retention", env: "retention",
		usage: "how long the store keeps samples",
		doc:   "how long the store keeps samples",
		field: func(c *Config) any { return &c.Retention }},
	{yaml: "rolling_window", flag: "rolling-window", env: "rolling_window",
		usage: "how far back node graphs and RED tables are answered from memory; 0 disables",
		doc:   "how far back the samples the node graph and RED table read are also kept in memory (every sample of every collection, packed: for 1h at 15s ~13 KB charged per edge of 13 series, ~24 KB per RED row by span name of 32 series, see BENCHMARKS.md; *budget*: rolling share), so that their windows inside it, live panels included, are answered without the TSDB; filled from the store in the background when a tenant opens (reads go to the store until then); 0 disables; ≥ `collection_interval`, ≤ `retention`",
		field: func(c *Config) any { return &c.RollingWindow }},
	{yaml: "max_exemplars", flag: "max-exemplars", env: "max_exemplars",
		usage: "exemplars kept per tenant; 0 disables",
		doc:   "exemplar ring per tenant; 0 disables",
		field: func(c *Config) any { return &c.MaxExemplars }},
	{yaml: "max_tenants", flag: "max-tenants", env: "max_tenants",
		usage: "tenants open at once",
		doc:   "tenants open at once (tenants on disk may be more: each opens on its first span or query); more are refused with 429 + `Retry-After` / ResourceExhausted with RetryInfo",
		field: func(c *Config) any { return &c.MaxTenants }},
	{yaml: "tenant_idle_timeout", flag: "tenant-idle-timeout", env: "tenant_idle_timeout",
		usage: "close a tenant without spans or queries for this long; 0 never closes",
		doc:   "a tenant with no spans and no queries for this long is closed (last collection, half edges saved, memory and its place under `max_tenants` freed) and reopens on demand; 0 never closes; ≥ 1s",
		field: func(c *Config) any { return &c.TenantIdleTimeout }},
	{yaml: "memory_limit", flag: "memory-limit", env: "memory_limit",
		usage:        "memory budget of the process, such as 2GiB; default a quarter of the machine's or container's memory",
		doc:          "the process's memory budget, such as `2GiB`; sets `GOMEMLIMIT` (unless set) and sizes what is marked *budget* below; see [Limits and memory](#limits-and-memory)",
		shownDefault: "a quarter of the machine's (or container's) memory, at least 256MiB",
		field:        func(c *Config) any { return &c.MemoryLimit }},
	{yaml: "log_level", flag: "log-level", env: "log_level",
		usage: "debug, info, warn or error",
		doc:   "debug, info, warn, error",
		field: func(c *Config) any { return &c.LogLevel }},
	{yaml: "remote_write", flag: "remote-write-url", env: "remote_write_url", emptyMeansOff: true,
		usage:        "remote-write endpoint URL; repeatable; replaces the file's list",
		doc:          "Prometheus' `remote_write` list, see [Remote write](#remote-write)",
		shownDefault: "none",
		field:        func(c *Config) any { return &c.RemoteWrite }},
	{yaml: "cluster.join", flag: "cluster-join", env: "cluster_join",
		usage:        "ring members to join (host:port, or dns+name:port), comma-separated; empty runs alone",
		doc:          "members of the ring to join, comma-separated `host:port` of their `cluster.listen`, or `dns+name:port` / `dnssrv+name` (the instance's own address may be listed); empty: one process, no gossip port; see [Scaling out and high availability](#scaling-out-and-high-availability)",
		shownDefault: "none",
		field:        func(c *Config) any { return &c.Cluster.Join }},
	{yaml: "cluster.listen", flag: "cluster-listen", env: "cluster_listen",
		usage: "gossip listen address (memberlist), ip:port",
		doc:   "gossip listen address (memberlist, TCP and UDP), `ip:port`",
		field: func(c *Config) any { return &c.Cluster.Listen }},
	{yaml: "cluster.advertise", flag: "cluster-advertise", env: "cluster_advertise",
		usage:        "host[:port] the other members reach this instance at",
		doc:          "host (or `host:port`) the other members reach this instance at, for gossip and for the spans they forward to its `otlp_grpc` port",
		shownDefault: "the `cluster.listen` IP, else the first private IP",
		field:        func(c *Config) any { return &c.Cluster.Advertise }},
	{yaml: "cluster.instance_id", flag: "cluster-instance-id", env: "cluster_instance_id",
		usage:        "this instance's name in the ring, unique and stable across restarts",
		doc:          "this instance's name in the ring, unique and stable across restarts; also the `__metrics_gen_instance` label of its series",
		shownDefault: "the hostname",
		field:        func(c *Config) any { return &c.Cluster.InstanceID }},
	{yaml: "cluster.tokens", flag: "cluster-tokens", env: "cluster_tokens",
		usage: "ring tokens this instance takes",
		doc:   "ring tokens this instance takes: its share of the traces is its share of all tokens",
		field: func(c *Config) any { return &c.Cluster.Tokens }},
	{yaml: "cluster.heartbeat_timeout", flag: "cluster-heartbeat-timeout", env: "cluster_heartbeat_timeout",
		usage: "a member silent this long loses its traces to the next member",
		doc:   "a member whose ring heartbeat (every `cluster.heartbeat_period`, 1s) is older than this is skipped, and the next member takes its traces; the window in which spans for a killed member are refused",
		field: func(c *Config) any { return &c.Cluster.HeartbeatTimeout }},
	{yaml: "query_backend.url", flag: "query-backend-url", env: "query_backend_url", emptyMeansOff: true,
		usage:        "Prometheus-compatible API to read from instead of the embedded store (http://prometheus:9090)",
		doc:          "a Prometheus-compatible query API (Prometheus, Mimir's `/prometheus`, Thanos, VictoriaMetrics) that answers every read instead of the embedded store; see [Scaling out and high availability](#scaling-out-and-high-availability)",
		shownDefault: "none: the embedded store",
		field:        func(c *Config) any { return &c.QueryBackend.URL }},
	{yaml: "query_backend.bearer_token_file", flag: "query-backend-bearer-token-file", env: "query_backend_bearer_token_file",
		usage:        "file holding the bearer token sent to query_backend.url",
		doc:          "file holding the token sent as `Authorization: Bearer` to the query backend, read at every request",
		shownDefault: "none",
		field:        func(c *Config) any { return &c.QueryBackend.BearerTokenFile }},
	{yaml: "query_backend.tenant_header", flag: "query-backend-tenant-header", env: "query_backend_tenant_header",
		usage: "header that carries the tenant to the query backend",
		doc:   "header that carries each read's tenant to the backend (Mimir, Cortex); `\"\"` in the config file sends none",
		field: func(c *Config) any { return &c.QueryBackend.TenantHeader }},
	{yaml: "query_backend.timeout", flag: "query-backend-timeout", env: "query_backend_timeout",
		usage: "bound of one request to the query backend",
		doc:   "bound of one request to the query backend",
		field: func(c *Config) any { return &c.QueryBackend.Timeout }},
}

// EnvKeys are the keys the plugin reads from GF_PLUGIN_<KEY> (lower
// case, config_file first): the keys its [plugin.<id>] section of
// grafana.ini must list, since Grafana passes only those to the plugin.
func EnvKeys() []string {
	out := []string{"config_file"}
	for _, s := range settings {
		out = append(out, s.env)
	}
	return out
}

// settingByFlag finds the setting of a flag; false for flags of no key
// (--config, a command's own).
func settingByFlag(name string) (setting, bool) {
	for _, s := range settings {
		if s.flag == name {
			return s, true
		}
	}
	return setting{}, false
}

// set parses value into the key's field of c, as the environment gives it.
func (s setting) set(c *Config, value string) error {
	var err error
	switch p := s.field(c).(type) {
	case *string:
		*p = value
	case *time.Duration:
		*p, err = parseDuration(value)
	case *int:
		*p, err = strconv.Atoi(value)
	case *int64:
		*p, err = strconv.ParseInt(value, 10, 64)
	case *budget.Bytes:
		*p, err = budget.ParseBytes(value)
	case *[]string:
		*p = splitList(value)
	case *remotewrite.Config:
		// remotewrite's errors name the entry and say what is wrong.
		*p, err = remotewrite.FromURLs(splitList(value))
		return err
	default:
		panic(fmt.Sprintf("config: setting %s: unsupported field type %T", s.yaml, p))
	}
	if err != nil {
		return fmt.Errorf("invalid value %q: %w", value, unwrapNum(err))
	}
	return nil
}

// splitList splits a comma-separated value; empty (an unset grafana.ini
// key) is the empty list.
func splitList(value string) []string {
	var out []string
	for _, v := range strings.Split(value, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration such as 15s or 24h")
	}
	return d, nil
}

// unwrapNum drops strconv's repetition of the input from its errors.
func unwrapNum(err error) error {
	if ne, ok := err.(*strconv.NumError); ok {
		return ne.Err
	}
	return err
}
